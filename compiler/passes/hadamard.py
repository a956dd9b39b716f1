"""Orthogonal rotation matrices for compiler.passes.rotate: Hadamard matrices of every order we can build,
randomized by a sign per row (QuaRot's randomized Hadamard), else a seeded random orthogonal matrix.

An order n is built as a Kronecker product H_m (x) H_{2^k} with n = m * 2^k: H_{2^k} by Sylvester's
doubling, H_m (m > 2) by Paley's constructions from a prime q (I: m = q + 1, q = 3 mod 4; II: m = 2 (q + 1),
q = 1 mod 4). That covers the widths of the common models (576 = 36 * 16, 896 = 28 * 32, 1536 = 12 * 128,
4864 = 76 * 64, every power of two). Orders no construction here reaches (not a multiple of 4, or needing a
prime power) fall back to the Q of a QR factorization of a seeded Gaussian matrix: orthogonal too, but it
spreads outliers less evenly than a Hadamard matrix (QuaRot, Table 9)."""

from __future__ import annotations

import numpy as np


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q**0.5) + 1))


def _jacobsthal(q: int) -> np.ndarray:
    """Q[i, j] = chi(j - i) for the quadratic character chi of GF(q), q prime."""
    squares = {(x * x) % q for x in range(1, q)}
    chi = np.array([0] + [1 if r in squares else -1 for r in range(1, q)], np.int64)
    i = np.arange(q)
    return chi[(i[None, :] - i[:, None]) % q]


def _paley(m: int) -> np.ndarray | None:
    """A Hadamard matrix of order m (entries +-1) from Paley's constructions, or None."""
    if _is_prime(m - 1) and (m - 1) % 4 == 3:  # Paley I: I + S, S = [[0, 1^T], [-1, Q]] skew
        q = m - 1
        s = np.zeros((m, m), np.int64)
        s[0, 1:] = 1
        s[1:, 0] = -1
        s[1:, 1:] = _jacobsthal(q)
        return s + np.eye(m, dtype=np.int64)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:  # Paley II: C (x) [[1,-1],[-1,-1]] + I (x) [[1,1],[1,-1]]
        q = m // 2 - 1
        c = np.zeros((q + 1, q + 1), np.int64)
        c[0, 1:] = 1
        c[1:, 0] = 1
        c[1:, 1:] = _jacobsthal(q)
        return np.kron(c, np.array([[1, -1], [-1, -1]])) + np.kron(np.eye(q + 1, dtype=np.int64), np.array([[1, 1], [1, -1]]))
    return None


def sylvester(n: int) -> np.ndarray:
    """H[i, j] = (-1)^popcount(i & j), n a power of two (the `hadamard` op's order, unnormalized)."""
    h = np.ones((1, 1), np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def hadamard_pm1(n: int) -> np.ndarray | None:
    """A Hadamard matrix of order n (+-1 entries, H H^T = n I) if one of the constructions reaches n, else None."""
    k = (n & -n).bit_length() - 1  # n = m * 2^k, m odd
    for j in range(k, -1, -1):  # the largest power-of-two factor first: the most of the matrix is Sylvester's
        m = n >> j
        base = np.ones((1, 1), np.int64) if m == 1 else (np.array([[1, 1], [1, -1]]) if m == 2 else _paley(m))
        if base is not None:
            return np.kron(base, sylvester(1 << j))
    return None


def rotation(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """(Q, kind): an n x n orthogonal float64 matrix and what it is ("hadamard" or "random orthogonal").
    A Hadamard matrix gets a random sign on each row (Q = D H / sqrt(n)), so no input direction is one
    that the transform concentrates instead of spreading."""
    rng = np.random.default_rng(seed)
    h = hadamard_pm1(n)
    if h is not None:
        signs = rng.choice(np.array([-1.0, 1.0]), size=n)
        return signs[:, None] * h / np.sqrt(n), "hadamard"
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :], "random orthogonal"


def online_block(n: int) -> int:
    """The `hadamard` op's block size for an online rotation of width n: its largest power-of-two divisor
    (the op's butterfly needs a power of two; 1 means no rotation is possible)."""
    return n & -n
