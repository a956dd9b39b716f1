"""lowbit (tvm-cpu, mlir-cpu) against llama.cpp's llama-bench on the same weights at the same bits: decode (tg) at
a few KV-cache depths and prefill (pp), per thread count, with each decode's share of its bandwidth roofline.

Formats (llama.cpp type <-> lowbit spec); the GGUF file is lowbit's own export of the lowbit artifact
(compiler/export/gguf.py), so both read identical weights, except Q2_K, which llama.cpp's llama-quantize
makes from lowbit's F32 export of the float model (--allow-requantize --pure: every matrix Q2_K, not llama.cpp's
Q2_K mix with Q3_K layers; head and embedding kept F32, as lowbit keeps them), next to lowbit's w2g32-min of the
same float model (same bits, not the same codes):
    q4_0  Q4_0  w4g32        q8_0  Q8_0  w8g32        q4_1  Q4_1  w4g32-min
    tq2_0 TQ2_0 ternarypc    (TQ2_0 needs every K a multiple of 256: llama-1b yes; smollm2-135m, K = 576, is skipped)
    tq1_0 TQ1_0 ternarypca8  (five trits per byte on both sides: lowbit's vnni-trit-cpu at 1.6 bits, which takes int8
                              activations as llama.cpp's TQ kernels take Q8_K ones)
    q2_k  Q2_K  w2g32-min    (Q2_K's blocks are 256 too: llama-quantize stores smollm2-135m's rows in another type,
                              and the script prints how many)
Per (model, format, threads) the engines run one after another, so a change in the machine's load hits all of
them alike. lowbit's figures come from `lowbit bench` (runtime/bench.py: each thread count in a process of its
own, read bandwidth measured there); llama.cpp's from `llama-bench -o json` (its mean tok/s over -r runs).
Roofline of a decode = read bandwidth (the best lowbit measured at that thread count in the run) / bytes one token reads:
lowbit's from its graph (runtime.bench.step_bytes, as benchmarks/decode_cpu.py), llama.cpp's from the GGUF
tensor sizes (one token_embd row unless it is the tied head) plus its f16 KV cache.

Everything made is kept under --out and reused: one artifact per model and format (llama-1b with mlir-cpu:
minutes each) and its GGUF file (Q2_K also needs the F32 export, ~5 GB for llama-1b).
llama.cpp's tools come from benchmarks/llamacpp.py's cache (built once, ~30 min: `python -m benchmarks.llamacpp`);
without them the script prints one skip line and exits 0.

    python benchmarks/llamacpp_compare.py [--models smollm2-135m,llama-1b] [--formats q4_0,q8_0,q4_1,tq2_0,q2_k]
        [--backends tvm-cpu,mlir-cpu] [--threads 1,2] [--tg 128] [--depths 0,1024] [--pp 128,512] [--reps 3]
        [--quick] [--out build/llamacpp_compare] [--json FILE]
    --quick: smollm2-135m, q4_0 and q8_0, 2 threads, tg 32 at depth 0, pp 64, 2 repetitions (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = {  # name: (llama.cpp type, lowbit spec, GGUF written by lowbit's export)
    "q4_0": ("Q4_0", "w4g32", True),
    "q8_0": ("Q8_0", "w8g32", True),
    "q4_1": ("Q4_1", "w4g32-min", True),
    "tq2_0": ("TQ2_0", "ternarypc", True),
    "tq1_0": ("TQ1_0", "ternarypca8", True),
    "q2_k": ("Q2_K", "w2g32-min", False),
}
LLAMA = "llama.cpp"


# ---- arithmetic (unit-tested on fabricated measurements) -----------------------------------------------------


def roofline(gbs: float | None, nbytes: float | None) -> float | None:
    """tok/s if every byte one token reads came at the measured read bandwidth."""
    return gbs * 1e9 / nbytes if gbs and nbytes else None


def compare_rows(records: list[dict]) -> list[dict]:
    """One row per (model, format, threads, test, lowbit backend): both tok/s, their ratio (lowbit / llama.cpp)
    and, for decode tests, each side's roofline and share of it. A record: model, format, threads, test ('pp128',
    'tg128@d0'), engine (a lowbit backend or 'llama.cpp'), tok_s, and for tg tests step_bytes; lowbit's records
    also carry gbs, the read bandwidth its run measured. Both sides' rooflines use the highest gbs measured at
    the same thread count in the whole run (on a loaded machine single figures move by 2-4x)."""
    by: dict[tuple, dict[str, dict]] = {}
    for r in records:
        by.setdefault((r["model"], r["format"], r["threads"], r["test"]), {})[r["engine"]] = r
    gbs_at: dict[int, float] = {}  # the best read bandwidth seen at each thread count: one ceiling for every row
    for r in records:
        if r["engine"] != LLAMA and r.get("gbs"):
            gbs_at[r["threads"]] = max(gbs_at.get(r["threads"], 0.0), r["gbs"])
    rows = []
    for (model, fmt, threads, test), engines in by.items():
        base = engines.get(LLAMA)
        for engine, r in engines.items():
            if engine == LLAMA:
                continue
            gbs = gbs_at.get(threads)
            row = {"model": model, "format": fmt, "threads": threads, "test": test, "backend": engine, "lowbit_tok_s": r["tok_s"],
                   "llamacpp_tok_s": base["tok_s"] if base else None, "ratio": r["tok_s"] / base["tok_s"] if base and base["tok_s"] else None,
                   "gbs": gbs}
            if test.startswith("tg"):
                ours, theirs = roofline(gbs, r.get("step_bytes")), roofline(gbs, base.get("step_bytes") if base else None)
                row.update(lowbit_roofline=ours, lowbit_share=r["tok_s"] / ours if ours else None,
                           llamacpp_roofline=theirs, llamacpp_share=base["tok_s"] / theirs if theirs else None)
            rows.append(row)
    return rows


def table_rows(rows: list[dict]) -> list[list[str]]:
    def f(v, fmt=".2f"):
        return "-" if v is None else format(v, fmt)

    def pct(v):
        return "-" if v is None else f"{100 * v:.0f}%"

    return [[r["model"], r["format"], str(r["threads"]), r["test"], r["backend"], f(r["lowbit_tok_s"]), f(r["llamacpp_tok_s"]), f(r["ratio"]),
             pct(r.get("lowbit_share")), pct(r.get("llamacpp_share")), f(r.get("lowbit_roofline"), ".1f"), f(r["gbs"], ".1f")] for r in rows]


HEADER = ["model", "format", "thr", "test", "lowbit", "lowbit tok/s", "llama.cpp tok/s", "ratio", "lowbit % roofline", "llama.cpp % roofline",
          "lowbit roofline tok/s", "GB/s"]


def gguf_step_bytes(path: Path, context: int) -> int:
    """Bytes llama.cpp reads for one decode token: every tensor once (token_embd: one row, unless there is no
    output.weight and it is also the head), plus the f16 KV cache at `context` positions."""
    import gguf

    r = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in r.tensors}
    total = 0
    for name, t in tensors.items():
        n = int(t.n_bytes)
        if name == "token_embd.weight" and "output.weight" in tensors:
            n //= int(t.shape[-1])  # rows are the last GGUF dimension
        total += n

    def field(key):
        f = r.get_field(key)
        return int(f.parts[f.data[0]][0]) if f is not None else None

    arch = "llama"
    layers, heads = field(f"{arch}.block_count"), field(f"{arch}.attention.head_count")
    kv_heads = field(f"{arch}.attention.head_count_kv") or heads
    head_dim = field(f"{arch}.attention.key_length") or field(f"{arch}.embedding_length") // heads
    return total + 2 * layers * context * kv_heads * head_dim * 2


# ---- preparing the weights -----------------------------------------------------------------------------------


def prepare(model: str, fmt: str, backends: list[str], out: Path, tools: dict) -> tuple[Path, Path]:
    """(lowbit artifact, GGUF file) for one model and format, made once and kept under `out`."""
    from benchmarks.decode_cpu import artifact_name, compile_all
    from compiler.export.gguf import export_gguf

    gtype, spec, direct = FORMATS[fmt]
    ns = argparse.Namespace(model=model, specs=spec, backends=",".join(backends), out=str(out), quant_head="none")
    compile_all(ns)
    art = out / artifact_name(ns, spec)
    gg = out / f"{model}-{fmt}.gguf"
    if gg.is_file() and gg.stat().st_mtime >= (art / "manifest.json").stat().st_mtime:
        return art, gg
    if direct:
        export_gguf(art, gg, ternary_type=gtype if gtype.startswith("TQ") else "TQ2_0")
    else:
        f32 = out / f"{model}-f32.gguf"
        if not f32.is_file():
            ns_f = argparse.Namespace(model=model, specs="none", backends="ref", out=str(out), quant_head="none")
            compile_all(ns_f)
            export_gguf(out / artifact_name(ns_f, "none"), f32)
        subprocess.run([str(tools["llama-quantize"]), "--allow-requantize", "--pure", "--output-tensor-type", "f32", "--token-embedding-type", "f32",
                        str(f32), str(gg), gtype], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return art, gg


def gguf_type_counts(path: Path) -> dict[str, int]:
    """How many 2-D tensors of each GGML type the file holds (llama-quantize falls back to another type for
    rows its blocks do not divide)."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if len(t.shape) == 2:
            counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


# ---- measuring -----------------------------------------------------------------------------------------------


def llama_bench(tools: dict, gg: Path, threads: int, pps: list[int], tg: int, depths: list[int], reps: int) -> list[dict]:
    """llama-bench's JSON rows: one pp test per prompt length (depth 0), one tg test per depth."""
    rows = []
    for args in ([["-p", ",".join(map(str, pps)), "-n", "0", "-d", "0"]] if pps else []) + ([["-p", "0", "-n", str(tg), "-d", ",".join(map(str, depths))]] if tg else []):
        cmd = [str(tools["llama-bench"]), "-m", str(gg), "-t", str(threads), "-r", str(reps), "-o", "json", *args]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"llama-bench failed on {gg.name}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        rows += json.loads(r.stdout)
    return rows


def measure(model: str, fmt: str, art: Path, gg: Path, tools: dict, backends: list[str], threads: int, args) -> list[dict]:
    from runtime.bench import bench

    recs = []
    key = {"model": model, "format": fmt, "threads": threads}
    for row in llama_bench(tools, gg, threads, args.pp, args.tg, args.depths, args.reps):
        if row.get("n_gen"):
            d = int(row.get("n_depth", 0))
            recs.append({**key, "engine": LLAMA, "test": f"tg{row['n_gen']}@d{d}", "tok_s": float(row["avg_ts"]),
                         "step_bytes": gguf_step_bytes(gg, d + args.tg // 2)})
        else:
            recs.append({**key, "engine": LLAMA, "test": f"pp{row['n_prompt']}", "tok_s": float(row["avg_ts"])})
    for backend in backends:
        runs = max(len(args.depths), len(args.pp))
        for i in range(runs):  # one `lowbit bench` per (depth, prompt) pair: it measures one of each
            pp = args.pp[min(i, len(args.pp) - 1)] if args.pp else 1
            depth = args.depths[min(i, len(args.depths) - 1)]
            r = bench(art, backend, [threads], prompt=pp, ctx=depth, tokens=args.tg)["runs"][0]
            if args.pp and i < len(args.pp):
                recs.append({**key, "engine": backend, "test": f"pp{pp}", "tok_s": r["prefill_tok_s"], "gbs": r["bandwidth_gbs"]})
            if args.tg and i < len(args.depths):
                recs.append({**key, "engine": backend, "test": f"tg{args.tg}@d{depth}", "tok_s": r["decode_tok_s"], "step_bytes": r["step_bytes"],
                             "gbs": r["bandwidth_gbs"]})
    return recs


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,llama-1b")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--backends", default="tvm-cpu,mlir-cpu")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tg", type=int, default=128, help="decode tokens per test (0: none)")
    ap.add_argument("--depths", default="0,1024", help="KV-cache depths the decode tests start at")
    ap.add_argument("--pp", default="128,512", help="prefill prompt lengths ('' : none)")
    ap.add_argument("--reps", type=int, default=3, help="llama-bench repetitions")
    ap.add_argument("--quick", action="store_true", help="smollm2-135m, q4_0,q8_0, 2 threads, tg 32 at depth 0, pp 64, 2 repetitions")
    ap.add_argument("--out", default="build/llamacpp_compare", help="artifacts and GGUF files, kept between runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.formats, args.threads, args.tg, args.depths, args.pp, args.reps = "smollm2-135m", "q4_0,q8_0", "2", 32, "0", "64", 2
    args.depths, args.pp, threads = _ints(args.depths) or [0], _ints(args.pp), _ints(args.threads)
    bad = [f for f in args.formats.split(",") if f not in FORMATS]
    if bad:
        print(f"error: unknown format {bad[0]}; use some of {','.join(FORMATS)}", file=sys.stderr)
        return 2

    from benchmarks.common import machine, print_table
    from benchmarks.llamacpp import ensure_tools
    from compiler.errors import LowbitError

    try:
        tools = ensure_tools(build_if_missing=False)
    except LowbitError as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 0
    try:
        import iree.runtime  # noqa: F401
    except ImportError:
        args.backends = ",".join(b for b in args.backends.split(",") if not b.startswith("mlir"))
    backends = args.backends.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records, notes = [], []
    for model in args.models.split(","):
        for fmt in args.formats.split(","):
            try:
                art, gg = prepare(model, fmt, backends, out, tools)
            except LowbitError as e:  # e.g. TQ2_0 on a model whose K is not a multiple of 256
                notes.append(f"skipped {model} {fmt}: {e}")
                continue
            except subprocess.CalledProcessError as e:
                last = ((e.stdout or b"").decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                notes.append(f"skipped {model} {fmt}: llama-quantize failed: {last}")
                continue
            types = gguf_type_counts(gg)
            other = {k: v for k, v in types.items() if k not in (FORMATS[fmt][0], "F32")}
            if other:
                notes.append(f"{model} {fmt}: the GGUF also holds {', '.join(f'{v} {k}' for k, v in other.items())} matrices (llama-quantize's fallback)")
            for t in threads:
                records += measure(model, fmt, art, gg, tools, backends, t, args)
                print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    rows = compare_rows(records)
    print_table(f"lowbit vs llama.cpp (llama-bench), same weights and bits; ratio = lowbit / llama.cpp; roofline = best read GB/s at that thread count / bytes per token; {machine()}",
                HEADER, table_rows(rows))
    for n in notes:
        print(n)
    if args.json:
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.tmp")
        tmp.write_text(json.dumps({"machine": machine(), "rows": rows, "records": records, "notes": notes}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
