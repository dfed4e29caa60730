"""Compile every optimizer, clipping, reduction and statistics kernel with ``cuda.compile_ptx`` at
cc 8.0 for float32 and float64 and print, as JSON, the opcode counts of each kernel's PTX.

Run as a script in a process without the simulator (the PTX test starts it with
``NUMBA_ENABLE_CUDASIM`` removed from the environment). Device functions are
compiled for the current device's compute capability; without a GPU there is none, so the script
stands in cc 8.0 -- the architecture every kernel here is compiled for anyway. Exit status 3: the
CUDA toolkit (NVVM) is missing, with the reason on stderr."""

import collections
import json
import re
import sys
import types

OP = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][\w.]*)\s", re.M)


def main():
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda

    try:
        has_gpu = cuda.is_available()
    except Exception:  # noqa: BLE001 - no driver at all
        has_gpu = False
    if not has_gpu:
        dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
    import numpy as np

    from nnlab.kernels.cuda import clip, optim, reduce, stats

    out = {}
    for dtype in (np.float32, np.float64):
        dt = np.dtype(dtype).name
        table = {f"optim.{code}": (k, optim.signature(dtype)) for code, k in optim.kernels(dtype).items()}
        for mod in (reduce, clip, stats):
            sigs = mod.signatures(dtype)
            name = mod.__name__.rsplit(".", 1)[1]
            table.update({f"{name}.{k}": (kern, sigs[k]) for k, kern in mod.kernels(dtype).items()})
        for name, (kern, sig) in table.items():
            try:
                ptx, _ = cuda.compile_ptx(kern.py_func, sig, cc=(8, 0))
            except Exception as exc:  # noqa: BLE001
                if "NVVM" in str(exc) or "libnvvm" in str(exc).lower():
                    print(f"the CUDA toolkit's NVVM is missing: {exc}", file=sys.stderr)
                    sys.exit(3)
                raise
            out[f"{dt}:{name}"] = dict(collections.Counter(OP.findall(ptx)))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
