"""Distances between two runs of the same model: what `lowbit run --compare` prints."""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def logits_metrics(test: np.ndarray, ref: np.ndarray) -> dict:
    """For causal LMs: logits over the prompt positions [S, V]."""
    return {
        "max_abs_err": max_abs(test, ref),
        "cosine": cosine(test, ref),
        "top1_agreement": float(np.mean(np.argmax(test, -1) == np.argmax(ref, -1))),
        "positions": int(test.shape[0]),
    }


def embedding_metrics(test: list[np.ndarray], ref: list[np.ndarray]) -> dict:
    """For encoders: one embedding per sentence."""
    cos = [cosine(a, b) for a, b in zip(test, ref)]
    return {
        "max_abs_err": max(max_abs(a, b) for a, b in zip(test, ref)),
        "cosine_min": min(cos),
        "cosine_mean": float(np.mean(cos)),
        "sentences": len(cos),
    }
