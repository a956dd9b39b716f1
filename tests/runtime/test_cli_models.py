"""`lowbit models` lists every preset and every packaged real model, each loadable by that name."""

from compiler.frontend import PACKAGED, list_models
from compiler.frontend.presets import PRESETS
from tests.helpers import run_cli


def test_models_lists_presets_and_packaged_models(capsys):
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    for name in [*PRESETS, *PACKAGED]:
        assert name in out
    assert set(list_models()) == {*PRESETS, *PACKAGED} and "smollm2-135m" in PACKAGED
