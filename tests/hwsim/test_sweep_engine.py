"""hwsim.report.engine and `lowbit sweep --engine`: jobs on local processes and on a two-worker Ray cluster started
here, the same results either way, a cache that makes a second run free and resumes an interrupted one, a failed
job reported while the rest finish, and the RTL jobs (yosys, `lowbit sim` runs) on the same engine."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compiler.errors import LowbitError
from hwsim.report.engine import Job, JobCache, LocalEngine, RayEngine
from hwsim.report.sweep import evaluate, point_jobs
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
LIN = [{"name": "x", "N": 256, "K": 256, "count": 2}]
GRID = {"design": ["mac", "mixpe"], "shape": ["2x64", "4x64"], "bits": [2, 4], "act": ["a8"], "group": [64]}
SWEEP = ["sweep", "llama-tiny", "--shapes", "1x8,2x64", "--bits", "2,4", "--acts", "a8", "--groups", "64,128"]  # 24 points
needs_rtl = pytest.mark.skipif(not (shutil.which("yosys") and shutil.which("iverilog")), reason="yosys or Icarus is not installed")


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-worker Ray on this machine, for this module; yields its address for other processes to join."""
    ray = pytest.importorskip("ray")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False, logging_level="ERROR")
    for s, h in saved.items():
        signal.signal(s, h)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(d))
    monkeypatch.setenv("LOWBIT_RTL_BUILD", str(tmp_path / "rtl-build"))
    return d


def test_job_key_is_the_hash_of_every_input():
    a = Job("hwsim", "a", evaluate, {"p": 1, "q": [1, 2]}, {"source": "s1"})
    assert a.key == Job("hwsim", "other label", evaluate, {"q": [1, 2], "p": 1}, {"source": "s1"}).key  # order, label: no part of it
    assert len({a.key, Job("hwsim", "a", evaluate, {"p": 2, "q": [1, 2]}, {"source": "s1"}).key,
                Job("hwsim", "a", evaluate, {"p": 1, "q": [1, 2]}, {"source": "s2"}).key,
                Job("synth", "a", evaluate, {"p": 1, "q": [1, 2]}, {"source": "s1"}).key}) == 4


def test_cache_keeps_whole_entries_only(tmp_path):
    cache = JobCache(tmp_path / "c")
    job = Job("hwsim", "a", evaluate, {"p": 1})
    assert cache.get(job) is None
    cache.put(job, {"x": 1.5, "y": [1, 2]})
    assert cache.get(job) == {"x": 1.5, "y": [1, 2]}
    assert [p.name for p in cache.entries()] == [f"{job.key}.json"]  # no temporary file beside it
    path = cache.path(job)
    path.write_text(path.read_text()[:20])  # a torn entry (never written by put) reads as a miss
    assert cache.get(job) is None
    (tmp_path / "file").write_text("")
    with pytest.raises(LowbitError, match="cannot use the job cache .*file/c.*LOWBIT_CACHE_DIR"):
        JobCache(tmp_path / "file" / "c").check()


def test_ray_engine_equals_local_and_reports_a_failed_job(ray_cluster):
    """Hwsim points and a synthesis whose array is invalid (it fails before yosys starts) as Ray tasks: the points'
    numbers equal the local ones, the failed job carries its error, the rest finish."""
    from rtl.jobs import synth_job

    jobs = point_jobs(LIN, GRID, prefill=8) + [synth_job("mac", {"M": 0, "N": 8})]
    seen = []
    with RayEngine() as eng:
        assert eng.workers == 2 and not eng.owned  # the test's cluster, left running
        got = eng.run(jobs, on_status=lambda st: seen.append((st.done, st.failed)))
    want = LocalEngine(1).run(jobs[:-1])
    assert [o.result for o in got[:-1]] == [o.result for o in want]
    assert all(o.result["prefill_s"] > 0 and o.result["area_mm2"] > 0 for o in want)
    bad = got[-1]
    assert bad.result is None and "invalid parameters for design 'mac'" in bad.error
    assert seen[-1] == (len(jobs), 1)


def test_failed_point_is_reported_and_the_sweep_finishes(tmp_path, cache_dir, monkeypatch, capsys):
    import hwsim.report.sweep as sweep

    def broken_for_mac_w4(p, *args):
        if p["design"] == "mac" and p["bits"] == 4:
            raise RuntimeError("no memory for the mac")
        return evaluate(p, *args)

    monkeypatch.setattr(sweep, "evaluate", broken_for_mac_w4)
    code, so, se = run_cli([*SWEEP, "-o", tmp_path / "s", "-j", "1"], capsys)
    assert code == 1
    assert se.count("failed: hwsim mac") == 4 and "failed: hwsim mac 1x8 w4a8 g64: RuntimeError: no memory for the mac" in se
    assert "jobs: 24 hwsim points (0 cached, 4 failed); 0 of 24 from the cache" in so
    rows = list(csv.DictReader(open(tmp_path / "s" / "sweep.csv")))
    failed = [r for r in rows if r["failed"] == "True"]
    assert len(rows) == 24 and len(failed) == 4 and all(r["error"] == "RuntimeError: no memory for the mac" for r in failed)
    assert all(float(r["prefill_s"]) > 0 for r in rows if r not in failed)
    assert len(JobCache(cache_dir / "jobs").entries("hwsim")) == 20  # failures are not cached: a rerun tries them again


@needs_rtl
def test_sweep_on_ray_writes_the_local_files_and_reruns_from_the_cache(ray_cluster, tmp_path, cache_dir, monkeypatch, capsys):
    """24 hwsim points, a yosys synthesis and an RTL regression of the smallest Pareto point: local processes and
    Ray write the same CSVs; the second Ray run takes every job from the cache."""
    extra = ["--synth-pareto", "1", "--sim-pareto", "1", "--vectors", "20"]
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(tmp_path / "local-cache"))
    code, so, se = run_cli([*SWEEP, *extra, "-o", tmp_path / "local", "-j", "2"], capsys)
    assert code == 0, se
    assert "(local, 2 workers)" in so and "jobs: 24 hwsim points (0 cached), 1 syntheses (0 cached), 1 RTL regressions (0 cached)" in so
    monkeypatch.setenv("LOWBIT_CACHE_DIR", str(cache_dir))
    for run, cached in ((1, 0), (2, 26)):
        code, so, se = run_cli([*SWEEP, *extra, "-o", tmp_path / "ray", "--engine", "ray"], capsys)
        assert code == 0, se
        assert "(ray, 2 workers)" in so and f"; {cached} of 26 from the cache" in so
        for f in ("sweep.csv", "synth.csv", "sim.csv"):
            assert (tmp_path / "ray" / f).read_bytes() == (tmp_path / "local" / f).read_bytes(), f
    synth = (tmp_path / "ray" / "synth.csv").read_text().splitlines()
    assert len(synth) == 2 and ",1,8,4,2,int,a8," in synth[1]  # the smallest Pareto point: a 1x8 array at 2 bits
    cells = int(synth[1].split(",")[9])
    rep = json.loads(next((tmp_path / "ray" / "synth").glob("*_m1n8k4.json")).read_text())
    assert rep["cell_count"] == cells > 1000 and rep["yosys"].startswith("Yosys")
    sim = (tmp_path / "ray" / "sim.csv").read_text().splitlines()
    assert len(sim) == 2 and ",icarus,20,True," in sim[1]
    assert len(JobCache(cache_dir / "jobs").entries()) == 26


def test_interrupted_sweep_on_ray_resumes(ray_cluster, tmp_path, cache_dir, capsys):
    """Ctrl-C in a `lowbit sweep --engine ray --address` process: exit 130, no output folder, only whole cache entries;
    the next run takes those from the cache, runs the rest, and writes what an uninterrupted run writes."""
    shapes = ",".join(f"{m}x{n}" for m in (1, 2, 4, 8, 16) for n in (8, 16, 32, 64, 128, 256, 512, 1024))
    args = ["sweep", "llama-1b", "--shapes", shapes, "--groups", "64,128", "-o", str(tmp_path / "s")]  # 960 points
    lowbit = "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); from runtime.cli import main; main(sys.argv[1:])"
    cache = JobCache(cache_dir / "jobs")
    for attempt in range(3):  # a fast machine may finish before the signal: then start again with an empty cache
        shutil.rmtree(cache_dir, ignore_errors=True)
        p = subprocess.Popen([sys.executable, "-c", lowbit, *args, "--engine", "ray", "--address", ray_cluster], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while not cache.entries() and p.poll() is None:  # the first results are in
            assert time.monotonic() - t0 < 120
            time.sleep(0.005)
        if p.poll() is None:
            break
        p.communicate()
    else:
        pytest.fail("the sweep always ended before the signal could be sent")
    p.send_signal(signal.SIGINT)
    _, se = p.communicate(timeout=60)
    assert p.returncode == 130 and se.strip().splitlines()[-1] == "interrupted", se
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.*"))
    entries = cache.entries()
    assert 0 < len(entries) < 960
    assert all(json.loads(e.read_text())["result"]["design"] for e in entries)  # every entry whole
    assert not [f for f in cache_dir.rglob(".*") if f.is_file()]  # no temporary files left
    code, so, se = run_cli([*args, "--engine", "ray"], capsys)
    assert code == 0, se
    assert f"jobs: 960 hwsim points ({len(entries)} cached); {len(entries)} of 960 from the cache" in so
    code, so, se = run_cli([*args[:-1], str(tmp_path / "fresh"), "--no-cache", "-j", "1"], capsys)
    assert code == 0 and "; no cache" in so
    assert (tmp_path / "s" / "sweep.csv").read_bytes() == (tmp_path / "fresh" / "sweep.csv").read_bytes()


@needs_rtl
def test_compiled_layer_runs_on_ray(ray_cluster, tmp_path):
    """`lowbit sim ART --layer L` as Ray tasks: a real layer equals hwsim, a layer the artifact lacks fails alone."""
    from compiler.backends import BuildOptions
    from compiler.compile import compile_model
    from runtime.regress import layer_job

    art = tmp_path / "w4"
    compile_model("bert-tiny", art, "w4g128a8", targets="lut-tc", progress=False, options=BuildOptions(array="M=2,N=16,K=4,lanes=8"))
    with RayEngine() as eng:
        good, bad = eng.run([layer_job(art, "l0.q", rows=2), layer_job(art, "l9.q", rows=2)], batch=1)
    r = good.result
    assert r["layer"] == "l0.q" and r["rows"] == 2 and r["bit_exact"] and r["mismatches"] == 0
    assert r["cycles_equal"] and r["rtl_cycles"] == r["hwsim_cycles"] > 0
    assert bad.result is None and "'l9.q' is not a compiled accelerator layer" in bad.error


@pytest.mark.parametrize("args, words", [
    (["--engine", "ray"], '--engine ray needs Ray, which is not installed; install it with `pip install "lowbit[ray]"`'),
    (["--address", "127.0.0.1:6379"], "--address names a Ray cluster, but the engine is local; add --engine ray, or drop --address"),
    (["--sim-layers", "no-such-artifact"], "--sim-layers: no-such-artifact is not a lowbit artifact (no manifest.json); give the -o folder"),
])
def test_engine_user_errors_are_one_line(tmp_path, cache_dir, monkeypatch, capsys, args, words):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, so, se = run_cli([*SWEEP, "-o", tmp_path / "s", *args], capsys)
    assert code == 2 and len(se.strip().splitlines()) == 1 and se.startswith(f"error: {words}"), se
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("address, words", [
    ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused); start it with `ray start --head --port 1` on 127.0.0.1"),
    ("head-without-port", "--address 'head-without-port' is not HOST:PORT; give the head's address"),
])
def test_a_ray_cluster_that_is_not_there_is_one_line(tmp_path, cache_dir, capsys, address, words):
    pytest.importorskip("ray")
    code, so, se = run_cli([*SWEEP, "-o", tmp_path / "s", "--engine", "ray", "--address", address], capsys)
    assert code == 2 and len(se.strip().splitlines()) == 1 and se.startswith(f"error: {words}"), se
    assert not (tmp_path / "s").exists()
