"""llama.cpp as a baseline: build its tools once from the llama-cpp-python sdist (which vendors llama.cpp) into a cache.

The cache is ~/.cache/lowbit/llama.cpp/<sdist version>-<host CPU flags hash>/bin: GGML_NATIVE builds for the host's
ISA, so a different CPU gets its own build. The build runs in a sibling ".partial-*" folder that is renamed into
place only once every tool is there, so a failed or killed build leaves no half cache.

`python -m benchmarks.llamacpp` builds (or finds) the tools and prints where they are.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from compiler.errors import LowbitError
from compiler.knobs import CACHE_DIR, LLAMACPP_PY_VERSION

VERSION = LLAMACPP_PY_VERSION.get()
TOOLS = ("llama-perplexity", "llama-quantize", "llama-bench", "llama-simple", "llama-imatrix")
# Static binaries: the cached bin/ folder must not point back into a build tree that is deleted.
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
]


def cache_root() -> Path:
    return CACHE_DIR.get() / "llama.cpp"


def cpu_key() -> str:
    """Short hash of the host's CPU model and flags (what GGML_NATIVE compiles for)."""
    model = flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return hashlib.sha256(f"{model}|{flags}".encode()).hexdigest()[:12]


def cache_dir(version: str = VERSION) -> Path:
    return cache_root() / f"{version}-{cpu_key()}"


def find_tools(version: str = VERSION) -> dict[str, Path] | None:
    """The cached tools' paths, or None when this host has no complete build."""
    bin_dir = cache_dir(version) / "bin"
    paths = {t: bin_dir / t for t in TOOLS}
    return paths if all(p.is_file() and os.access(p, os.X_OK) for p in paths.values()) else None


def _run(cmd: list[str], log, cwd: Path | None = None, nice: int = 15):
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    pre = ["nice", "-n", str(nice)] if nice and shutil.which("nice") else []
    r = subprocess.run(pre + [str(c) for c in cmd], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        raise LowbitError(f"llama.cpp build step failed (exit {r.returncode}): {' '.join(map(str, cmd[:3]))} ...",
                          f"see the log {log.name}; install cmake and a C++ compiler, or check network access to PyPI")


def _clean_stale(root: Path):
    """Remove partial builds whose builder process is gone (killed builds)."""
    for p in root.glob(".partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(p, ignore_errors=True)
        except PermissionError:
            pass


def build(version: str = VERSION, jobs: int = 2, quiet: bool = False) -> dict[str, Path]:
    """Download the sdist, build the tools and install them into the cache. Returns the tools' paths."""
    for exe in ("cmake", "c++"):
        if shutil.which(exe) is None:
            raise LowbitError(f"building llama.cpp needs `{exe}`, which is not on PATH", "install cmake and a C++ compiler (apt-get install cmake g++)")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale(root)
    final = cache_dir(version)
    partial = root / f".partial-{final.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    log_path = root / f"build-{final.name}.log"
    t0 = time.time()
    try:
        with open(log_path, "w") as log:
            src = partial / "src"
            src.mkdir()
            # --no-binary for this package only: ":all:" would also build pip's metadata build dependencies from source
            _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python", "-d", src, f"llama-cpp-python=={version}"], log, nice=0)
            sdists = list(src.glob("llama_cpp_python-*.tar.gz"))
            if not sdists:
                raise LowbitError(f"pip download of llama-cpp-python=={version} gave no sdist", f"see {log_path}")
            with tarfile.open(sdists[0]) as tf:
                tf.extractall(src, filter="data")
            vendor = next(src.glob("llama_cpp_python-*/vendor/llama.cpp"))
            build_dir = partial / "build"
            _run(["cmake", "-S", vendor, "-B", build_dir, *CMAKE_FLAGS] + (["-G", "Ninja"] if shutil.which("ninja") else []), log)
            _run(["cmake", "--build", build_dir, "--target", *TOOLS, "-j", str(jobs)], log)
            bin_dir = partial / "bin"
            bin_dir.mkdir()
            for t in TOOLS:
                built = next((p for p in build_dir.rglob(t) if p.is_file() and os.access(p, os.X_OK)), None)
                if built is None:
                    raise LowbitError(f"the llama.cpp build produced no `{t}`", f"see {log_path}")
                shutil.copy2(built, bin_dir / t)
            (partial / "BUILD-INFO").write_text(f"llama-cpp-python {version}\ncpu {cpu_key()}\nseconds {time.time() - t0:.0f}\n"
                                                f"flags {' '.join(CMAKE_FLAGS)}\n")
            shutil.rmtree(build_dir)
            shutil.rmtree(src)
        if final.exists():
            shutil.rmtree(partial)
        else:
            os.replace(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not quiet:
        print(f"built llama.cpp tools in {time.time() - t0:.0f} s", file=sys.stderr)
    tools = find_tools(version)
    assert tools is not None
    return tools


def ensure_tools(version: str = VERSION, build_if_missing: bool = True) -> dict[str, Path]:
    """The cached llama.cpp tools, building them first (about 25-40 min on two cores) when missing."""
    tools = find_tools(version)
    if tools is not None:
        return tools
    if not build_if_missing:
        raise LowbitError(f"llama.cpp tools are not built for this host (looked in {cache_dir(version)})",
                          "run `python -m benchmarks.llamacpp` once (about 30 minutes) to build them")
    return build(version)


def build_seconds(version: str = VERSION) -> float | None:
    info = cache_dir(version) / "BUILD-INFO"
    if info.is_file():
        for line in info.read_text().splitlines():
            if line.startswith("seconds "):
                return float(line.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--version", default=VERSION, help="llama-cpp-python sdist version (it vendors llama.cpp)")
    args = ap.parse_args(argv)
    try:
        tools = find_tools(args.version) or build(args.version, jobs=args.jobs)
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"llama.cpp tools (llama-cpp-python {args.version}) in {cache_dir(args.version) / 'bin'}")
    for t, p in tools.items():
        print(f"  {t}: {p}")
    secs = build_seconds(args.version)
    if secs is not None:
        print(f"  build took {secs:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
