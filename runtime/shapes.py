"""MODEL (or a compiled artifact) to the layer shapes the cost model reads (`hwsim.cost.roofline.ModelLinears`),
for `lowbit report` and `lowbit sweep`. No weights are loaded.

- an artifact folder (it has manifest.json): its qlinear nodes, each in its own weight format (the quant
  spec given on the command line is ignored), and its float linears;
- a Hugging Face folder with config.json, the packaged all-MiniLM-L6-v2, or a preset: the config's fields
  (compiler.frontend) in the weight format of the quant spec (compiler.quant.spec); a ternary preset
  keeps its ternary weights at the spec's group size and activation mode. A layer whose K the spec's group
  does not divide takes the group the quantizer gives it (compiler.groups: 128 -> 64 -> 32, else per-channel).
"""

from __future__ import annotations

import json
from pathlib import Path

from compiler.errors import LowbitError
from hwsim.cost.roofline import Linear, ModelLinears, model_linears_from_config


def model_linears(model: str, quant: str = "w4g128a8") -> ModelLinears:
    """The quantized linears of MODEL (a preset, a Hugging Face folder, all-minilm-l6-v2) in the format
    `quant`, or of a compiled artifact (its own quantization)."""
    p = Path(model)
    if (p / "manifest.json").is_file():
        return artifact_linears(p)
    name, family, config, source, ternary = model_config(model)
    spec = _spec(quant)
    if ternary:
        from compiler.quant.spec import QuantSpec

        spec = QuantSpec(bits=2, group_size=spec.group_size, act=spec.act, ternary=True)
    ml = model_linears_from_config(name, family, config, bits=spec.bits, group=0, act=spec.act,
                                   ternary=spec.ternary, quant=spec.name, source=source)
    for lin in ml.linears:  # per layer, as compile would quantize it
        lin.group = spec.group_for(lin.K)
        lin.codebook = spec.codebook
        lin.fp = spec.fp
        lin.sparse = spec.outlier_count(lin.K)
    return ml


def model_config(model: str) -> tuple[str, str, dict, str, bool]:
    """(name, family, config, source, ternary) of MODEL without loading weights; ternary: a preset whose
    linear weights are ternary."""
    from compiler.frontend import MINILM, minilm_dir
    from compiler.frontend.presets import PRESETS

    p = Path(model)
    ternary = False
    if p.is_dir() and (p / "config.json").exists():
        from compiler.frontend.hf import checked_config

        cfg = checked_config(p)
        name, source = p.resolve().name, f"Hugging Face config {p / 'config.json'}"
    elif model.lower() == MINILM:
        cfg = json.loads((minilm_dir() / "config.json").read_text())
        name, source = MINILM, "packaged all-MiniLM-L6-v2 config.json"
    elif model in PRESETS:
        cfg = dict(PRESETS[model].config)
        name, source, ternary = model, f"preset {model} (compiler.frontend.presets)", PRESETS[model].ternary
    else:
        raise LowbitError(
            f"model '{model}' is not a preset, a Hugging Face folder or a compiled artifact",
            "run `lowbit models` for the presets, or pass an artifact folder from `lowbit compile`",
        )
    mt = str(cfg.get("model_type", "")).lower()
    return name, mt, cfg, source, ternary


def _spec(quant: str):
    from compiler.quant.spec import parse_spec

    spec = parse_spec(quant)
    if spec is None:
        raise LowbitError(f"quant '{quant}' is the float model; the report needs quantized linears", "give e.g. --quant w4g128a8")
    return spec


def role(weight_name: str) -> str:
    """A weight's role: its name without the per-layer prefix ("model.layers.<i>.", "encoder.layer.<i>.")."""
    parts = weight_name.replace(".weight", "").replace(".qweight", "").split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i + 1 :])
    return ".".join(parts)


def artifact_linears(path: Path) -> ModelLinears:
    """The qlinear nodes of a compiled artifact grouped by (role, shape, format), and its float linears."""
    mf = json.loads((path / "manifest.json").read_text())
    g = mf.get("graph", {})
    shapes = {c["name"]: c["shape"] for c in g.get("consts", [])}
    agg: dict[tuple, Linear] = {}
    floats = []
    # dense-and-sparse layers: outliers per row of the side matrix read with the qlinear's input
    # (weight outliers `<layer>.sp_cols`, LLM.int8 features `<layer>.act_cols`: both count against the layer)
    sparse: dict[str, int] = {}
    for nd in g.get("nodes", []):
        if nd["op"] == "sparse_matmul":
            base = nd["inputs"][1].rsplit(".", 1)[0]
            sparse[base] = sparse.get(base, 0) + int(shapes.get(nd["inputs"][1], [0, 0])[1])
    for nd in g.get("nodes", []):
        if nd["op"] == "qlinear":
            a = nd["attrs"]
            r = role(nd["inputs"][1])
            sub = (a.get("two_level") or {}).get("sub_bits", 0)
            sp = int(sparse.get(nd["inputs"][1].removesuffix(".qweight"), 0))
            cb, fp = bool(a.get("codebook")), a.get("fp", "")
            key = (r, a["n"], a["k"], a["bits"], a["group_size"], a["act"], bool(a.get("ternary")), bool(a.get("mins")), sub, sp, cb, fp)
            if key in agg:
                agg[key].count += 1
            else:
                agg[key] = Linear(r, a["n"], a["k"], 1, a["bits"], a["group_size"], a["act"], bool(a.get("ternary")), bool(a.get("mins")), sub, sp, cb, fp)
        elif nd["op"] == "linear":
            s = shapes.get(nd["inputs"][1], [0, 0])
            floats.append((role(nd["inputs"][1]), int(s[0]), int(s[1])))
    if not agg:
        raise LowbitError(f"artifact {path} has no quantized linear layers", "compile it with a quant spec, e.g. --quant w4g128a8")
    q = mf.get("quant") or {}
    meta = g.get("meta", {})
    hp = meta.get("hparams") or {}
    kv = ({"layers": hp["layers"], "kv_heads": hp["kv_heads"], "head_dim": hp["head_dim"], "format": meta.get("kv_format", "f32")}
          if meta.get("causal") and {"layers", "kv_heads", "head_dim"} <= set(hp) else None)
    return ModelLinears(mf.get("model", {}).get("name", path.name), mf.get("model", {}).get("family", ""), q.get("name", "?"), list(agg.values()), floats,
                        f"artifact {path}", kv)
