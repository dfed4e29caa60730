"""Compile every device kernel of the executor, activations, dense layer, losses, noise and copies
to PTX for compute capability 8.0 at the signatures the launchers use, with no GPU needed; prints
one JSON object {"<module>.<kernel>.<dtype>": {"f64": bool, "st_f32": bool}}. Run in a process
without the simulator (tests/cuda/test_ptx.py)."""

import json
import os
import sys
import types

assert os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "1"

import numba.cuda.dispatcher as disp  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

if not cuda.is_available():  # device functions ask the current device for its compute capability
    disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))

from nnlab.kernels.cuda import activations, dense, elementwise, executor, gemm, losses, noise  # noqa: E402

CC = (8, 0)


def ptx(fn, sig):
    text, _ = cuda.compile_ptx(getattr(fn, "py_func", fn), sig, cc=CC)
    return text


def main():
    out = {}
    for dtype in (np.float32, np.float64):
        dn = np.dtype(dtype).name
        t = "float32" if dtype == np.float32 else "float64"
        jobs = [("activations.act_map", activations.device_set().act_map, activations.signature(dtype))]
        jobs += [(f"dense.{k}", dense.kernels(dtype)[k], s) for k, s in dense.signatures(dtype).items()]
        jobs += [(f"elementwise.{k}", elementwise.kernels(dtype)[k], s)
                 for k, s in elementwise.signatures(dtype).items()]
        jobs += [("losses.rows", losses.kernel(dtype), losses.signature(dtype))]
        jobs += [("noise.uniform", noise.kernel(dtype), noise.signatures(dtype)["uniform"])]
        jobs += [("executor.gather", executor._gather, executor.gather_signature(dtype))]
        jobs += [("gemm.tiled", gemm._kernel(dtype), f"void({t}[:, ::1], boolean, {t}[:, ::1], boolean, "
                                                    f"{t}[:, ::1], {t})")]
        for name, fn, sig in jobs:
            text = ptx(fn, sig)
            out[f"{name}.{dn}"] = {"f64": ".f64" in text, "st_f32": "st.global.f32" in text,
                                   "entry": ".entry" in text}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
