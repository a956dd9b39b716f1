"""lut-tc's table variants in hwsim: the golden tables (symmetrized and full), the activations a streamed
table stands for, the design's exact group sums, and the event, area and traffic counts of each variant."""

import numpy as np
import pytest

from hwsim import golden as g
from hwsim.arrays import datapath_events
from hwsim.config import ArrayConfig
from hwsim.cost import area
from hwsim.memory import act_bits_per_row

VARIANTS = [dict(), dict(sym=False), dict(table="stream"), dict(table="stream", sym=False)]


@pytest.mark.parametrize("K", [2, 3, 4])
def test_full_table_holds_the_symmetric_one_and_its_negation(K):
    rng = np.random.default_rng(K)
    a = rng.integers(-128, 128, size=(3, 5 * K))
    t8, t16 = g.lut_tables(a, K), g.lut_tables(a, K, sym=False)
    assert t8.shape[-1] == 1 << (K - 1) and t16.shape[-1] == 1 << K
    np.testing.assert_array_equal(t16[..., 1::2], t8)  # T8[e] = T16[2e + 1]
    np.testing.assert_array_equal(t16[..., ::-1], -t16)  # T16[~i] = -T16[i]
    np.testing.assert_array_equal(t16[..., -1], a.reshape(3, 5, K).sum(axis=2))  # the all-ones entry is S


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("K", [2, 4])
def test_streamed_tables_give_back_their_activations(K, sym):
    rng = np.random.default_rng(1)
    a = rng.integers(-(1 << 11), 1 << 11, size=(2, 6 * K))
    t = g.lut_tables(a, K, sym)
    np.testing.assert_array_equal(g.lut_activations(t, K, sym), a)
    for entry, step in ((0, 1), (1, 1), (0, 2)):  # odd: every entry has S's parity; +2: over-determined for K = 4
        if step == 2 and K == 2 and sym:
            continue  # 2 entries, 2 activations: any tables of one parity are some activations' tables
        bad = t.copy()
        bad[1, 2, entry] += step
        with pytest.raises(ValueError, match="not lut_tables"):
            g.lut_activations(bad, K, sym)
    with pytest.raises(ValueError, match="table entries"):
        g.lut_activations(t, K, not sym)


@pytest.mark.parametrize("fmt", [dict(bits=1), dict(bits=3), dict(bits=4, weight_format="e2m1"), dict(ternary=True)])
@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_every_variant_sums_exactly(variant, fmt):
    cfg = ArrayConfig(design="lut-tc", M=2, N=6, K=4, group=16, lanes=2, **fmt, **variant)
    rng = np.random.default_rng(5)
    for kind in ("random", "max", "min", "codes"):
        t = g.random_tile(cfg, rng, n_groups=2, kind=kind)
        wp = g.weight_values(cfg, t.codes, t.zeros)
        np.testing.assert_array_equal(g.group_acc(cfg, t.a, t.codes, t.zeros), g.dot_group_acc(t.a, wp, cfg.group))


def test_events_drop_table_builds_when_streamed_and_negations_when_full():
    base = ArrayConfig(design="lut-tc", bits=2, group=128)
    ev = {tuple(v.items()): base.design_record.events(base.with_(**v), 64, 2) for v in VARIANTS}
    build, full, stream, stream16 = (ev[tuple(v.items())] for v in VARIANTS)
    TW = base.table_bits
    assert build["table_builds"] == 64 * base.M and stream["table_builds"] == stream16["table_builds"] == 0
    assert build["adds"][TW] - stream["adds"][TW] == 64 * base.M * 8 * 3  # the table-build adders
    assert full["adds"][TW] == 2 * build["adds"][TW]  # twice the entries, K-1 adds each
    assert full["negations"][TW] == 0 < build["negations"][TW]
    assert (TW, 16) in full["lookups"] and (TW, 8) in build["lookups"]
    assert datapath_events(base.with_(table="stream"), 64, 2)["table_builds"] == 0


def test_area_counts_of_the_variants():
    cfg = ArrayConfig(design="lut-tc", bits=2, group=128)
    build = area.component_counts(cfg)
    assert area.component_counts(cfg.with_(sym=False)) == area.component_counts(cfg, variant="unsymmetrized")
    stream = area.component_counts(cfg.with_(table="stream"))
    assert build["add_bits"] - stream["add_bits"] == cfg.M * 8 * (cfg.K - 1) * cfg.table_bits
    assert {k: v for k, v in build.items() if k != "add_bits"} == {k: v for k, v in stream.items() if k != "add_bits"}


def test_streamed_tables_are_what_the_array_reads():
    cfg = ArrayConfig(design="lut-tc", bits=2, group=128)
    K = 1024
    assert act_bits_per_row(cfg, K) == K * 8
    assert act_bits_per_row(cfg.with_(table="stream"), K) == K // 4 * 8 * cfg.table_bits
    assert act_bits_per_row(cfg.with_(table="stream", sym=False), K) == K // 4 * 16 * cfg.table_bits


def test_config_fields_and_names():
    cfg = ArrayConfig(design="lut-tc")
    assert (cfg.table, cfg.sym, cfg.table_entries) == ("build", True, 8)
    assert "table" not in cfg.to_dict() and "sym" not in cfg.to_dict()  # the plain array's dict is as before
    v = cfg.with_(table="stream", sym=False)
    assert v.to_dict()["table"] == "stream" and v.to_dict()["sym"] is False and ArrayConfig.from_dict(v.to_dict()) == v
    assert v.name.endswith("_tstream_nosym") and v.table_entries == 16
    with pytest.raises(ValueError, match="table must be one of"):
        cfg.with_(table="fused")
    with pytest.raises(ValueError, match="sym must be true or false"):
        cfg.with_(sym=1)
    with pytest.raises(ValueError, match="apply to lut-tc only"):
        ArrayConfig(design="mixpe", table="stream")
