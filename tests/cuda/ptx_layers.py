"""Compile every layer kernel of the device backend to PTX for compute capability 8.0, at float32
and float64, and print one JSON object: {"module.kernel": {"float32": uses_f64, "float64": ...}}
or {"error": ...}. Run as a script in a process without the simulator (``cuda.compile_ptx`` needs
the CUDA toolkit's NVVM, not a GPU)."""

import json
import re
import sys

MODULES = ("dropout", "combine", "norm", "maxout", "rbf", "recurrent")
F64 = re.compile(r"\.f64\b")


def uses_f64(ptx):
    """Whether any PTX line (comments aside) names a float64 type."""
    return any(F64.search(line.split("//")[0]) for line in ptx.splitlines())


def main():
    import importlib

    from numba import cuda

    try:
        from numba.cuda import dispatcher
    except ImportError as exc:
        print(json.dumps({"missing": f"numba-cuda: {exc}"}))
        return

    class _Target:  # a kernel that calls device functions compiles them for "the current device"
        compute_capability = (8, 0)

    dispatcher.get_current_device = lambda: _Target()
    out = {}
    for name in MODULES:
        mod = importlib.import_module(f"nnlab.kernels.cuda.{name}")
        for dtype in ("float32", "float64"):
            for kname, fn, sig in mod.ptx_kernels(dtype):
                try:
                    ptx, _ = cuda.compile_ptx(fn, sig, cc=(8, 0))
                except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
                    text = f"{type(exc).__name__}: {exc}"
                    if "NVVM" in text or "libnvvm" in text.lower():
                        print(json.dumps({"missing": f"the CUDA toolkit's NVVM: {text[:300]}"}))
                        return
                    out.setdefault(f"{name}.{kname}", {})[dtype] = f"error: {text[:500]}"
                    continue
                out.setdefault(f"{name}.{kname}", {})[dtype] = uses_f64(ptx)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
