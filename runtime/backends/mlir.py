"""`mlir-cpu` and `mlir-cuda`: run the IREE module that `lowbit compile --target mlir-*` wrote into the
artifact.

Nothing is recompiled: <artifact>/<target>/model.vmfb is loaded into an iree.runtime context, the weights
come from the artifact's weights.safetensors (and <target>/params.safetensors for the qlinear weights the
compiler re-laid out) and are copied to the device once, when the backend is made (mlir.json gives the
order of inputs and parameters and the outputs). Threads: IREE's local-task driver
uses every core; LOWBIT_MLIR_THREADS=N caps it (a process-wide flag, read once), and N=1 selects the
`local-sync` driver (runs in the calling thread, no task system).
"""

from __future__ import annotations

import os

import numpy as np

from compiler.errors import LowbitError
from compiler.knobs import MLIR_THREADS
from runtime.backends.base import CompiledTargetBackend

_FLAGS_SET = False
MAX_THREADS = 1024  # IREE's task system caps its workers far below this; more is a typo


def _runtime():
    try:
        import iree.runtime as rt
    except ImportError:
        raise LowbitError(
            "backends mlir-cpu/mlir-cuda need IREE's runtime (iree-base-runtime), which is not installed",
            "install it with `pip install 'iree-base-runtime==3.13.*'` (or `pip install -e .[mlir]`)",
        ) from None
    global _FLAGS_SET
    threads = MLIR_THREADS.get()
    if threads is not None and threads > MAX_THREADS:
        raise LowbitError(f"LOWBIT_MLIR_THREADS={threads} is more than the limit of {MAX_THREADS} threads", f"give at most {MAX_THREADS} (this machine has {os.cpu_count()} cores)")
    if threads is not None and threads != 1 and not _FLAGS_SET:
        rt.flags.parse_flags(f"--task_topology_max_group_count={threads}")
    _FLAGS_SET = True
    return rt


class _MLIRBackend(CompiledTargetBackend):
    name = "?"
    driver = "?"
    info_file = "mlir.json"
    library = "model.vmfb"

    def __init__(self, model):
        super().__init__(model)
        folder, info, vmfb, hint = self.target_folder()
        g = model.graph
        rt = _runtime()
        self.rt = rt
        self.info = info
        self.config = self._config(rt)
        self.ctx = rt.SystemContext(config=self.config)
        self.ctx.add_vm_module(rt.VmModule.copy_buffer(self.ctx.instance, vmfb.read_bytes()))
        self.main = self.ctx.modules[info.get("module", "lowbit")][info.get("function", "main")]
        # logits of the last row only (a generation's prefill skips the head for the others)
        self.main_last = self.ctx.modules[info.get("module", "lowbit")]["main_last"] if "main_last" in info.get("functions", ()) else None
        self.params = [rt.asdevicearray(self.config.device, a) for a in self.param_arrays(folder, info, hint)]
        from compiler.ir import DTYPES

        self.input_dtypes = {k: DTYPES[t.dtype] for k, t in g.inputs.items()}

    def _config(self, rt):
        if self.driver == "local-task" and MLIR_THREADS.get() == 1:
            return rt.Config("local-sync")
        return rt.Config(self.driver)

    def run(self, feeds):
        missing = [k for k in self.info["inputs"] if k not in feeds]
        if missing:
            raise ValueError(f"missing graph inputs: {missing}")
        self.check_feeds(feeds)
        args = [np.ascontiguousarray(feeds[k], self.input_dtypes[k]) for k in self.info["inputs"]]
        out = self.main(*args, *self.params)
        if not isinstance(out, (tuple, list)):
            out = [out]
        return {name: np.asarray(v.to_host()) for name, v in zip(self.info["outputs"], out)}

    def new_cache(self, arrays):
        # device arrays, allocated once; the module's kv_write (an insert_slice into the argument) writes them in place
        return {k: self.rt.asdevicearray(self.config.device, np.ascontiguousarray(v)) for k, v in arrays.items()}

    def step(self, feeds, cache, last: bool = False):
        if not self.model.kv_inplace:
            return super().step(feeds, cache, last)
        from runtime.backends.base import check_capacity

        check_capacity(feeds, cache)
        args = [cache[k] if k in cache else np.ascontiguousarray(feeds[k], self.input_dtypes[k]) for k in self.info["inputs"]]
        main = self.main_last if last and self.main_last is not None else self.main
        out = main(*args, *self.params)
        if not isinstance(out, (tuple, list)):
            out = [out]
        names = self.info["outputs"]
        logits = np.asarray(out[names.index("logits")].to_host())
        return (logits[-1:] if last else logits), {k.replace("present_", "past_"): out[i] for i, k in enumerate(names) if k.startswith("present_")}


class MLIRCPUBackend(_MLIRBackend):
    name = "mlir-cpu"
    driver = "local-task"


class MLIRCUDABackend(_MLIRBackend):
    name = "mlir-cuda"
    driver = "cuda"

    def _config(self, rt):
        try:
            return rt.Config("cuda")
        except Exception as e:  # noqa: BLE001 - no driver library, or no device
            raise LowbitError(
                f"backend mlir-cuda needs an NVIDIA GPU with its driver, and IREE's cuda driver could not start here ({str(e).splitlines()[0][:160]})",
                "run on a machine with a CUDA GPU, or use --backend mlir-cpu",
            ) from None
