import pytest

from compiler.errors import LowbitError
from compiler.quant.spec import QuantSpec, parse_spec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("w8", QuantSpec(bits=8, group_size=0)),
        ("w4g128", QuantSpec(bits=4, group_size=128)),
        ("w3g64", QuantSpec(bits=3, group_size=64)),
        ("w2g32", QuantSpec(bits=2, group_size=32)),
        ("w8pc", QuantSpec(bits=8, group_size=0)),
        ("w2g64a8", QuantSpec(bits=2, group_size=64, act="a8")),
        ("w4g128a16", QuantSpec(bits=4, group_size=128, act="a16")),
        ("w4g32a32", QuantSpec(bits=4, group_size=32, act="a32")),
        ("w4g32a32-min", QuantSpec(bits=4, group_size=32, act="a32", symmetric=False, minimum=True)),
        ("ternarya32", QuantSpec(bits=2, group_size=0, act="a32", ternary=True)),
        ("w4g128-asym", QuantSpec(bits=4, group_size=128, symmetric=False)),
        ("w4g128-sym", QuantSpec(bits=4, group_size=128, symmetric=True)),
        ("w3pca8-asym", QuantSpec(bits=3, group_size=0, act="a8", symmetric=False)),
        ("ternary", QuantSpec(bits=2, group_size=0, ternary=True)),
        ("ternarya8", QuantSpec(bits=2, group_size=0, act="a8", ternary=True)),
        ("ternaryg64", QuantSpec(bits=2, group_size=64, ternary=True)),
        ("ternary-sym", QuantSpec(bits=2, group_size=0, ternary=True)),
        ("  W4G128A8  ", QuantSpec(bits=4, group_size=128, act="a8")),
    ],
)
def test_parse_valid(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize("text", ["none", "float", "NONE", "fp32"])
def test_parse_float_is_none(text):
    assert parse_spec(text) is None


ALL_FORMS = [
    w + g + a + sym
    for w in ("w8", "w4", "w3", "w2", "ternary")
    for g in ("", "g32", "g64", "g128", "pc")
    for a in ("", "a8", "a16", "a32")
    for sym in ("", "-sym", "-asym", "-min")
    if not (w == "ternary" and sym in ("-asym", "-min"))  # an error, see test_parse_errors
]


@pytest.mark.parametrize("text", ALL_FORMS)
def test_name_round_trip(text):
    spec = parse_spec(text)
    assert parse_spec(spec.name) == spec
    assert QuantSpec.from_dict(spec.to_dict()) == spec


def test_name_is_canonical():
    assert parse_spec("w4g128a16-sym").name == "w4g128"
    assert parse_spec("w8").name == "w8pc"
    assert parse_spec("w2g64a8-asym").name == "w2g64a8-asym"
    assert parse_spec("ternarya8").name == "ternarya8"
    assert parse_spec("w4g32a32-min").name == "w4g32a32-min"  # a16 is the one mode a name leaves out


def test_names_act():
    from compiler.quant.spec import ACT_MODES, names_act

    assert ACT_MODES == ("a16", "a8", "afp8", "amx8", "amxfp4", "a32")
    assert all(names_act(f"w4g32{a}-min") for a in ACT_MODES)
    assert not any(names_act(t) for t in ("w4g32-min", "w8pc", "ternary", "w4g32-asym", "keep", "none"))


def test_group_for_and_qmax():
    assert parse_spec("w4g128").group_for(4096) == 128
    assert parse_spec("w4pc").group_for(4096) == 4096
    assert parse_spec("w3g64").qmax == 7
    assert parse_spec("w8").qmax == 255
    assert parse_spec("ternary").qmax == 2


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("w5g128", "bit width 5"),
        ("w4g100", "group size 100"),
        ("w4g128a4", "'a4'"),
        ("w4g128a64", "'a64'"),
        ("ternary-asym", "symmetric"),
        ("garbage", "cannot parse"),
        ("w4g128-foo", "cannot parse"),
        ("", "cannot parse"),
    ],
)
def test_parse_errors(text, fragment):
    with pytest.raises(LowbitError) as exc:
        parse_spec(text)
    msg = str(exc.value)
    assert f"'{text}'" in msg
    assert fragment in msg
    assert exc.value.fix  # every user error says what to do
    if "activation" in msg:
        assert "a32" in exc.value.fix
