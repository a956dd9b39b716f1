import numpy as np
import pytest

from compiler.errors import LowbitError
from compiler.quant.gptq import HessianAccumulator, hessian_from_inputs, quantize_gptq
from compiler.quant.rtn import group_params, quantize_rtn
from compiler.quant.spec import parse_spec

T, K, N = 2048, 256, 128


def correlated_layer(seed=0, k=K, n=N, t=T):
    """Inputs x = z @ A with 32 dominant latent directions (strongly correlated features), weights w."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((t, k))
    a = rng.standard_normal((k, k)) / np.sqrt(k)
    a[32:] *= 0.05
    x = (z @ a).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    return x, w


def output_error(x, w, q):
    return float(np.linalg.norm(x @ w.T - x @ q.dequantize().T))


def check_valid(q, spec, shape):
    n, k = shape
    g = spec.group_for(k)
    assert q.codes.shape == (n, k) and q.codes.dtype == np.uint8
    assert q.scales.shape == (n, k // g) and q.scales.dtype == np.float32
    assert q.zeros.shape == (n, k // g) and q.zeros.dtype == np.uint8
    assert int(q.codes.max()) <= spec.qmax and int(q.zeros.max()) <= spec.qmax
    assert np.all(q.scales > 0) and np.all(np.isfinite(q.scales))
    assert q.bits == spec.bits and q.group_size == g and q.ternary == spec.ternary


@pytest.mark.parametrize("spec_text", ["w4g128", "w3g128", "w2g64", "w4g128-asym", "ternaryg64"])
def test_gptq_beats_rtn_on_correlated_inputs(spec_text):
    spec = parse_spec(spec_text)
    x, w = correlated_layer()
    h = hessian_from_inputs(x)
    qg = quantize_gptq(w, h, spec)
    qr = quantize_rtn(w, spec)
    check_valid(qg, spec, w.shape)
    eg, er = output_error(x, w, qg), output_error(x, w, qr)
    print(f"\n{spec_text}: layer output error ||xW^T - xWq^T||_F  rtn={er:.2f}  gptq={eg:.2f}  ratio={eg / er:.3f}")
    assert eg < 0.9 * er


def reference_gptq(w, h, spec, damp=0.01):
    """Textbook OBS-form GPTQ in float64: quantize column k, spread its error with the current inverse
    Hessian, then remove column k from the inverse (Gaussian elimination) - no Cholesky, no blocks."""
    w = w.astype(np.float64).copy()
    h = h.copy()
    n, k = w.shape
    g = spec.group_for(k)
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    hinv = np.linalg.inv(h)
    codes = np.zeros((n, k), np.uint8)
    for c in range(k):
        if c % g == 0:
            s, z = group_params(w[:, c : c + g].astype(np.float32), spec, g)
            s, z = s[:, 0].astype(np.float64), z[:, 0].astype(np.float64)
        q = np.clip(np.rint(w[:, c] / s) + z, 0, spec.qmax)
        codes[:, c] = q
        err = (w[:, c] - s * (q - z)) / hinv[c, c]
        w[:, c:] -= np.outer(err, hinv[c, c:])
        hinv -= np.outer(hinv[:, c], hinv[c, :]) / hinv[c, c]
    return codes


@pytest.mark.parametrize("spec_text", ["w4pc", "w3g32", "w2g64-asym"])
def test_matches_textbook_reference(spec_text):
    spec = parse_spec(spec_text)
    x, w = correlated_layer(seed=3, k=64, n=32, t=512)
    h = hessian_from_inputs(x)
    # block_size 24 is not aligned with the groups: groups straddle blocks (pc: one group spans all)
    q = quantize_gptq(w, h, spec, block_size=24)
    ref = reference_gptq(w, h, spec)
    agree = np.mean(q.codes == ref)
    assert agree > 0.995, agree


def test_block_size_does_not_change_the_result():
    # Lazy block updates are an exact reordering of the same arithmetic, up to float32 rounding; a rounding
    # difference can flip a near-tie code, which then changes the rest of that row, so compare per row.
    spec = parse_spec("w3g32")
    x, w = correlated_layer(seed=1)
    h = hessian_from_inputs(x)
    a = quantize_gptq(w, h, spec, block_size=128)
    ea = output_error(x, w, a)
    for bs in (48, 7, 256):  # 48 and 7: blocks not aligned with groups
        b = quantize_gptq(w, h, spec, block_size=bs)
        rows_differ = np.mean((a.codes != b.codes).any(axis=1))
        assert rows_differ <= 0.05, (bs, rows_differ)
        assert abs(output_error(x, w, b) - ea) <= 2e-3 * ea


@pytest.mark.parametrize("spec_text", ["w4g32", "w8pc", "w2g64-asym"])
def test_diagonal_hessian_equals_rtn(spec_text):
    # With uncorrelated inputs there is nothing to compensate: GPTQ must reduce to RTN exactly.
    spec = parse_spec(spec_text)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    h = np.diag(rng.uniform(0.5, 2.0, 128))
    q = quantize_gptq(w, h, spec, block_size=32)
    r = quantize_rtn(w, spec)
    np.testing.assert_array_equal(q.codes, r.codes)
    np.testing.assert_array_equal(q.scales, r.scales)
    np.testing.assert_array_equal(q.zeros, r.zeros)


def test_dead_input_column():
    spec = parse_spec("w4g128")
    x, w = correlated_layer(seed=4)
    x[:, 5] = 0.0  # feature never active: H[5, :] = H[:, 5] = 0, H is singular
    h = hessian_from_inputs(x)
    assert h[5, 5] == 0.0
    q = quantize_gptq(w, h, spec)
    check_valid(q, spec, w.shape)
    np.testing.assert_array_equal(q.dequantize()[:, 5], 0.0)
    assert output_error(x, w, q) < 0.9 * output_error(x, w, quantize_rtn(w, spec))


def test_rank_deficient_hessian_is_handled_by_damping():
    spec = parse_spec("w4g64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 128)).astype(np.float32)  # T < K: H has rank 32
    w = rng.standard_normal((8, 128)).astype(np.float32)
    q = quantize_gptq(w, hessian_from_inputs(x), spec)
    check_valid(q, spec, w.shape)
    assert output_error(x, w, q) < output_error(x, w, quantize_rtn(w, spec))


def test_indefinite_hessian_retries_with_more_damping():
    # One eigenvalue at -2% of the mean diagonal: damping 0.01 fails, 0.1 succeeds.
    rng = np.random.default_rng(6)
    k = 64
    qmat, _ = np.linalg.qr(rng.standard_normal((k, k)))
    lam = np.ones(k)
    lam[0] = -0.02 * k / (k - 1.02)  # mean(diag H) = mean(lam); lam[0] = -0.02 * mean(lam)
    h = (qmat * lam) @ qmat.T
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(h + 0.01 * np.mean(np.diag(h)) * np.eye(k))
    w = rng.standard_normal((4, k)).astype(np.float32)
    q = quantize_gptq(w, h, parse_spec("w4pc"))
    check_valid(q, parse_spec("w4pc"), w.shape)


def test_hopeless_hessian_raises_lowbit_error():
    h = -np.eye(32)
    w = np.ones((2, 32), np.float32)
    with pytest.raises(LowbitError) as exc:
        quantize_gptq(w, h, parse_spec("w4g32"), name="blocks.3.attn.q")
    assert "blocks.3.attn.q" in str(exc.value) and "calibration" in exc.value.fix


def test_k_not_multiple_of_group_takes_the_group_rule():
    w = np.random.default_rng(1).standard_normal((2, 40)).astype(np.float32)
    q = quantize_gptq(w, np.eye(40), parse_spec("w4g32"))  # 40 = no multiple of 32: one group per row
    assert q.group_size == 40 and q.scales.shape == (2, 1)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_min_with_a_diagonal_hessian_is_rtn_min(act_order):
    """A diagonal Hessian couples no columns (its inverse factor is diagonal), so GPTQ feeds no error forward
    and must give RTN's scale-and-minimum weights bit for bit: the minimums, scales and codes."""
    from compiler.quant.rtn import quantize_rtn_min

    rng = np.random.default_rng(2)
    w = (rng.standard_normal((6, 96)) * 0.1 + 0.05).astype(np.float32)
    h = np.diag(rng.uniform(0.5, 2.0, 96))
    q = quantize_gptq(w, h, parse_spec("w4g32-min"), act_order=act_order)
    r = quantize_rtn_min(w, 4, 32)
    assert q.has_mins
    np.testing.assert_array_equal(q.mins, r.mins)
    np.testing.assert_array_equal(q.scales, r.scales)
    np.testing.assert_array_equal(q.codes, r.codes)


def test_gptq_min_lowers_the_output_error_of_rtn_min():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 64)) @ rng.standard_normal((64, 64)) * 0.3  # correlated inputs
    w = (rng.standard_normal((16, 64)) * 0.1).astype(np.float32)
    from compiler.quant.rtn import quantize_rtn_min

    q = quantize_gptq(w, hessian_from_inputs(x), parse_spec("w3g32-min"))
    r = quantize_rtn_min(w, 3, 32)
    err = lambda qw: float(np.linalg.norm(x @ (qw.dequantize() - w).T))  # noqa: E731
    assert err(q) < 0.9 * err(r), (err(q), err(r))


def test_hessian_from_inputs_and_accumulator():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((100, 12))
    h = hessian_from_inputs(x)
    np.testing.assert_allclose(h, 2.0 / 100 * x.T @ x, rtol=1e-12)
    acc = HessianAccumulator()
    for part in (x[:10], x[10:73], x[73:].reshape(3, 9, 12)):  # batches of rows, any leading shape
        acc.add(part)
    assert acc.n_rows == 100
    # Per-batch products run in float32 (inputs are float32 activations); the float64 accumulation keeps
    # the result within float32 rounding of the float64 Hessian.
    np.testing.assert_allclose(acc.hessian(), h, rtol=1e-5, atol=1e-5 * np.abs(h).max())
    with pytest.raises(ValueError, match="12"):
        acc.add(np.ones((2, 5)))
    with pytest.raises(LowbitError):
        HessianAccumulator(12).hessian()


def reference_gptq_act_order(w, h, spec, damp=0.01):
    """Textbook GPTQ with act-order and static groups: RTN group parameters from the original weights,
    columns visited in descending H[k, k] order, codes stored at their original columns."""
    w = w.astype(np.float64).copy()
    n, k = w.shape
    g = spec.group_for(k)
    s, z = (a.astype(np.float64) for a in group_params(w.astype(np.float32), spec, g))
    perm = np.argsort(-np.diag(h), kind="stable")
    h = h.copy()
    h[np.diag_indices(k)] += damp * np.mean(np.diag(h))
    hinv = np.linalg.inv(h[perm][:, perm])
    wp = w[:, perm]
    codes = np.zeros((n, k), np.uint8)
    for c in range(k):
        j = perm[c] // g
        q = np.clip(np.rint(wp[:, c] / s[:, j]) + z[:, j], 0, spec.qmax)
        codes[:, perm[c]] = q
        err = (wp[:, c] - s[:, j] * (q - z[:, j])) / hinv[c, c]
        wp[:, c:] -= np.outer(err, hinv[c, c:])
        hinv -= np.outer(hinv[:, c], hinv[c, :]) / hinv[c, c]
    return codes


@pytest.mark.parametrize("spec_text", ["w4g32", "w3g32-asym", "w4pc"])
def test_act_order_matches_textbook_reference(spec_text):
    spec = parse_spec(spec_text)
    x, w = correlated_layer(seed=5, k=64, n=32, t=512)
    x *= np.random.default_rng(6).uniform(0.2, 3.0, 64).astype(np.float32)  # unequal feature energies
    h = hessian_from_inputs(x)
    q = quantize_gptq(w, h, spec, block_size=24, act_order=True)
    np.testing.assert_array_equal(q.scales, quantize_rtn(w, spec).scales)  # static groups: RTN's parameters
    np.testing.assert_array_equal(q.zeros, quantize_rtn(w, spec).zeros)
    agree = np.mean(q.codes == reference_gptq_act_order(w, h, spec))
    assert agree > 0.995, agree


def test_act_order_diagonal_hessian_equals_rtn():
    spec = parse_spec("w4g32-asym")
    rng = np.random.default_rng(7)
    w = rng.standard_normal((16, 128)).astype(np.float32)
    q = quantize_gptq(w, np.diag(rng.uniform(0.5, 2.0, 128)), spec, block_size=32, act_order=True)
    np.testing.assert_array_equal(q.codes, quantize_rtn(w, spec).codes)


def test_act_order_beats_rtn_with_outlier_features():
    spec = parse_spec("w4g32")
    x, w = correlated_layer(seed=8)
    x[:, [7, 100]] *= 20.0  # two features carry most of the energy (BERT's outlier channels)
    h = hessian_from_inputs(x)
    ea = output_error(x, w, quantize_gptq(w, h, spec, act_order=True))
    er = output_error(x, w, quantize_rtn(w, spec))
    print(f"\nlayer output error: rtn {er:.2f}, gptq act-order {ea:.2f}, gptq {output_error(x, w, quantize_gptq(w, h, spec)):.2f}")
    assert ea < 0.9 * er


def test_blocked_triangular_inverse_and_the_inverse_factor():
    # K above the 128 leaf, odd, so the 2x2 block recursion runs on uneven halves.
    from compiler.quant.gptq import _inverse_lower, _inverse_upper_cholesky

    rng = np.random.default_rng(3)
    x = rng.standard_normal((900, 301))
    h = x.T @ x / 900
    lower = np.linalg.cholesky(h)
    inv = _inverse_lower(lower, leaf=64)
    np.testing.assert_allclose(inv @ lower, np.eye(301), atol=1e-10)
    assert not np.triu(inv, 1).any()
    u = _inverse_upper_cholesky(h, 0.0, "w")
    np.testing.assert_allclose(u.T @ u, np.linalg.inv(h), rtol=1e-8, atol=1e-10)
    assert not np.tril(u, -1).any() and np.all(np.diag(u) > 0)
