"""`tvm-cpu` and `tvm-cuda`: run the library that `lowbit compile --target tvm-*` exported into the artifact.

Nothing is recompiled: the Relax VM executable is loaded from <artifact>/<target>/model.so, the weights come
from the artifact's weights.safetensors (plus <target>/params.safetensors when a kernel asked for a
re-laid-out copy) and are copied to the device once, when the backend is made. tvm.json gives the order of
inputs and parameters and the outputs.
"""

from __future__ import annotations

import numpy as np

from compiler.errors import LowbitError
from runtime.backends.base import CompiledTargetBackend


class _TVMBackend(CompiledTargetBackend):
    name = "?"
    cache_in_place = False  # kv_write updates the given cache tensors (tvm-cpu); on CUDA it returns a copy
    info_file = "tvm.json"
    library = "model.so"

    def __init__(self, model):
        super().__init__(model)
        folder, info, lib, hint = self.target_folder()
        from compiler.hostinfo import default_tvm_threads

        default_tvm_threads()  # before the first kernel starts TVM's pool (runtime-only TVM skips compiler.backends.tvm)
        try:
            import tvm
            from tvm.runtime.vm import VirtualMachine  # (also in TVM's runtime-only mode, TVM_USE_RUNTIME_LIB=1)
        except ImportError:
            raise LowbitError(f"backend {self.name} needs Apache TVM, which is not installed", "install it with `pip install apache-tvm==0.27.0.post1`") from None
        self.tvm = tvm
        self.info = info
        self.dev = self._device(info)
        self._before_load(folder, info)
        self.vm = VirtualMachine(tvm.runtime.load_module(str(lib)), self.dev)
        self.main = self.vm["main"]
        # main with the LM head on the last row only (libraries built before it have main alone)
        self.main_last = self.vm["main_last"] if "main_last" in info.get("functions", ()) else None
        self.params = self.device_arrays(self.param_arrays(folder, info, hint))
        self.input_dtypes = {k: t.dtype for k, t in model.graph.inputs.items()}
        self._logits_index = info["outputs"].index("logits") if "logits" in info["outputs"] else None

    def _device(self, info):
        raise NotImplementedError

    def device_arrays(self, arrays: list[np.ndarray]) -> list:
        """Device copies of `arrays`."""
        return [self.tvm.runtime.tensor(a, self.dev) for a in arrays]

    def _before_load(self, folder, info):
        pass

    def run(self, feeds):
        from compiler.ir import DTYPES

        tvm = self.tvm
        missing = [k for k in self.info["inputs"] if k not in feeds]
        if missing:
            raise ValueError(f"missing graph inputs: {missing}")
        self.check_feeds(feeds)
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[k], DTYPES[self.input_dtypes[k]]), self.dev) for k in self.info["inputs"]]
        out = self.main(*args, *self.params)
        return {name: out[i].numpy() for i, name in enumerate(self.info["outputs"])}

    def new_cache(self, arrays):
        # device tensors, allocated once; the library's kv_write updates them in place (tvm-cpu) every step
        return dict(zip(arrays, self.device_arrays([np.ascontiguousarray(v) for v in arrays.values()])))

    def step(self, feeds, cache, last: bool = False):
        if not self.model.kv_inplace:
            return super().step(feeds, cache, last)
        from compiler.ir import DTYPES
        from runtime.backends.base import check_capacity

        check_capacity(feeds, cache)
        tvm = self.tvm
        args = [cache[k] if k in cache else tvm.runtime.tensor(np.ascontiguousarray(feeds[k], DTYPES[self.input_dtypes[k]]), self.dev) for k in self.info["inputs"]]
        main = self.main_last if last and self.main_last is not None else self.main
        out = main(*args, *self.params)
        logits = out[self._logits_index].numpy()
        logits = logits[-1:] if last else logits
        if self.cache_in_place:
            # the library wrote the step's rows into the cache tensors it was given (its present_* outputs are
            # those tensors): the same dict is the cache after the step, with no per-step re-wrapping of outputs
            return logits, cache
        names = self.info["outputs"]
        return logits, {k.replace("present_", "past_"): out[i] for i, k in enumerate(names) if k.startswith("present_")}


class TVMCPUBackend(_TVMBackend):
    name = "tvm-cpu"
    cache_in_place = True

    def device_arrays(self, arrays: list[np.ndarray]) -> list:
        """The arrays copied into one huge-page arena (runtime.backends.arena), shared with TVM without a copy."""
        from runtime.backends.arena import Arena

        return [self.tvm.runtime.from_dlpack(v) for v in Arena(arrays).views]

    def _device(self, info):
        from compiler.backends.tvm.target import host_cpu

        built = info.get("host", {})
        try:
            cpu, feats = host_cpu()
        except Exception:  # noqa: BLE001 - runtime-only TVM cannot query LLVM; the library is used unchecked
            return self.tvm.cpu(0)
        lacking = sorted(set(built.get("features", [])) - set(feats))
        if lacking:
            raise LowbitError(
                f"the tvm-cpu library was built for CPU '{built.get('mcpu')}', and this CPU ('{cpu}') lacks features it uses ({', '.join(lacking[:6])})",
                "recompile the artifact on this machine with --target tvm-cpu",
            )
        return self.tvm.cpu(0)


class TVMCUDABackend(_TVMBackend):
    name = "tvm-cuda"

    def _device(self, info):
        dev = self.tvm.cuda(0)
        try:
            _load_cuda_runtime()  # fails without libcuda.so.1, the driver library
            ok = dev.exist
        except Exception:  # noqa: BLE001 - the CUDA driver library itself is missing
            ok = False
        if not ok:
            raise LowbitError(
                "backend tvm-cuda needs an NVIDIA GPU with its driver (libcuda), and none was found on this machine",
                "run on a machine with a CUDA GPU, or use --backend tvm-cpu",
            )
        return dev

    def _before_load(self, folder, info):
        """model.so carries the kernels as CUDA source, which TVM's CUDA runtime compiles on load by calling
        the global hook tvm_callback_cuda_compile. Answer it with the fatbin compiled at `lowbit compile`
        time when the source is the one it was made from; otherwise compile with TVM's own NVRTC/nvcc hook."""
        import hashlib

        import tvm_ffi

        fatbin = folder / "kernels.fatbin"
        stored = None
        if fatbin.is_file() and info.get("cuda_binary"):
            self.model.artifact.check_file(f"{self.name}/kernels.fatbin", hashed=True, hint=f"recompile with --target {self.name}")  # GPU code
            stored = fatbin.read_bytes()
        try:
            from tvm.support import nvcc as tvm_nvcc  # registers TVM's hook (needs the full TVM, not runtime-only)

            fallback = tvm_nvcc.tvm_callback_cuda_compile
        except Exception:  # noqa: BLE001
            fallback = None

        def compile_hook(code, *rest):
            if stored is not None and hashlib.sha256(code.encode()).hexdigest() == info.get("cuda_source_sha256"):
                return bytearray(stored)
            if fallback is None:
                raise LowbitError(
                    f"the tvm-cuda kernels of {folder.parent} have no precompiled binary for this source, and this TVM cannot compile CUDA",
                    "recompile the artifact on a machine with nvcc, or install the full apache-tvm",
                )
            return fallback(code)

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_hook, override=True)


def _load_cuda_runtime():
    """TVM's CUDA runtime (libtvm_runtime_cuda) is loaded by the full `import tvm` when libcuda is present;
    in runtime-only mode load it here."""
    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True) is not None:
        return
    from pathlib import Path

    import tvm
    from tvm_ffi.libinfo import load_lib_ctypes

    try:
        load_lib_ctypes(package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[Path(tvm.__file__).parent / "lib"], mode="RTLD_LOCAL")
    except (OSError, FileNotFoundError, RuntimeError) as e:
        raise LowbitError(f"TVM's CUDA runtime (libtvm_runtime_cuda) could not be loaded: {e}", "install apache-tvm built with CUDA") from None
