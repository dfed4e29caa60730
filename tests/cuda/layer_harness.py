"""Running one op of a network program through its CPU kernel and through its device twin on the
same inputs, for the layer-kernel tests of this folder.

A case is a small network's program (``ops``, ``hp``, ``tens`` of ``net._program``; a test may
change a copy of ``ops``, e.g. an op's DX mode) with random parameters, gradients and workspace
(``ws``, ``dws``: random everywhere, so an op that reads what it should not, or writes where it
should not, shows up). :meth:`Case.forward` / :meth:`Case.backward` run op i both ways;
:meth:`Case.compare` checks every buffer.
"""

import numpy as np
import pytest
from numba import njit

from nnlab.errors import DeviceError
from nnlab.kernels import cpu
from nnlab.kernels.common import fill_noise
from nnlab.kernels.cuda import device
from nnlab.kernels.layout import F_KIND, F_NOISE, F_SCRATCH

try:
    CUDA = device.cuda()
except DeviceError as exc:  # no GPU and no simulator: nothing here can run
    pytest.skip(f"the device kernels need a GPU or NUMBA_ENABLE_CUDASIM=1: {exc}", allow_module_level=True)

from nnlab.kernels.cuda import registry  # noqa: E402
from nnlab.kernels.cuda.program import DeviceProgram  # noqa: E402

registry.load_all()  # every kernel module registers its kinds (a test may have imported one module first)

TPB = 4 if device.simulated() else 32  # small blocks: several blocks and a partial one on tiny shapes
GRID = 3  # at most 3 blocks: the grid-stride loops run several rounds (and the simulator stays fast)
TOL = {np.dtype(np.float32): dict(rtol=1e-4, atol=2e-5), np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12)}


@pytest.fixture(autouse=True)
def small_blocks():
    old = device.set_threads_per_block(TPB)
    grid = device.MAX_BLOCKS
    device.MAX_BLOCKS = GRID
    yield
    device.set_threads_per_block(old)
    device.MAX_BLOCKS = grid


@njit
def cpu_noise(ops, tens, ws, i, n, training, seed):
    """Op i's noise drawn by the CPU kernel with Numba's generator seeded with ``seed``."""
    np.random.seed(seed)
    fill_noise(ops, tens, ws, i, n, training)


def cpu_kernels(kind):
    f, b = cpu.KIND_KERNELS[int(kind)]
    return getattr(cpu, f), getattr(cpu, b)


class Case:
    """Host and device copies of one program's buffers for an ``n``-row batch."""

    def __init__(self, net, n, steps=1, seq=None, seed=0, scratch=0):
        prog = net._program(steps, seq=seq)
        self.ops = prog.ops.copy()
        self.hp = prog.hp.copy()
        self.tens = prog.tens.copy()
        width = int(prog.width)
        if scratch and (self.ops[:, F_SCRATCH] < 0).any():  # a scratch tensor for DX_ADD tests
            self.tens = np.vstack([self.tens, [[width, scratch, 1]]]).astype(np.int64)
            self.ops[:, F_SCRATCH] = self.tens.shape[0] - 1
            width += scratch
        self.n = n
        self.dtype = np.dtype(net.dtype)
        rng = np.random.default_rng(seed)
        self.store = net._store.copy()
        self.store[net._flat.size:] = rng.uniform(0.5, 1.5, self.store.size - net._flat.size)  # buffers
        self.grads = rng.standard_normal(net._flat.size).astype(self.dtype)
        self.ws = rng.standard_normal(n * width).astype(self.dtype)
        self.dws = rng.standard_normal(n * width).astype(self.dtype)
        self.upload()

    def upload(self):
        """(Re)build the device program from the host buffers."""
        c = CUDA
        self.dev = DeviceProgram(c, self.ops, self.hp, self.tens, c.to_device(self.store), c.to_device(self.grads),
                                 c.to_device(self.ws), c.to_device(self.dws))

    def noise(self, i, training, seed):
        """Op i's noise (uniform) on both sides: the CPU's draw copied to the device."""
        cpu_noise(self.ops, self.tens, self.ws, i, self.n, training, seed)
        self.dev.ws.copy_to_device(self.ws)

    def forward(self, i, training, store):
        f, _ = cpu_kernels(self.ops[i, F_KIND])
        f(self.ops, self.hp, self.tens, self.store, self.ws, self.dws, i, self.n, training, store)
        fd, _ = registry.launchers(self.ops[i, F_KIND])
        return fd(self.dev, i, self.n, training, store)

    def backward(self, i, stored=False):
        _, b = cpu_kernels(self.ops[i, F_KIND])
        b(self.ops, self.hp, self.tens, self.store, self.grads, self.ws, self.dws, i, self.n, stored)
        _, bd = registry.launchers(self.ops[i, F_KIND])
        bd(self.dev, i, self.n, stored)

    def device_buffers(self):
        d = self.dev
        return {"params": d.params.copy_to_host(), "grads": d.grads.copy_to_host(), "ws": d.ws.copy_to_host(),
                "dws": d.dws.copy_to_host()}

    def compare(self, exact=(), skip=(), tol=None):
        """Every buffer of the device equal to the CPU's within the dtype's tolerance; the buffers
        named in ``exact`` bit for bit; ``skip``: {buffer: [(lo, hi), ...]} regions not compared."""
        host = {"params": self.store, "grads": self.grads, "ws": self.ws, "dws": self.dws}
        dev = self.device_buffers()
        tol = tol or TOL[self.dtype]
        for name, h in host.items():
            d = dev[name]
            h = h.copy()
            for lo, hi in dict(skip).get(name, ()):
                h[lo:hi] = 0
                d[lo:hi] = 0
            if name in exact:
                np.testing.assert_array_equal(d, h, err_msg=name)
            else:
                np.testing.assert_allclose(d, h, err_msg=name, **tol)

    def region(self, buf_t, n=None):
        """(lo, hi) of tensor t in a flat buffer of this case's batch."""
        n = self.n if n is None else n
        off = int(self.tens[buf_t, 0]) * n
        return off, off + n * int(self.tens[buf_t, 1])


class LaunchTypes:
    """Records the numba types of every launch of the layer kernels (module, kernel, dtype) while
    active, to check them against the signatures the PTX test compiles (a launch with other types
    would compile another specialisation on a GPU: a float32 kernel given a float64 scalar computes
    in float64)."""

    MODULES = ("dropout", "combine", "norm", "maxout", "rbf", "recurrent")

    def __init__(self):
        import importlib

        self.seen = {}
        self._saved = []
        for name in self.MODULES:
            mod = importlib.import_module(f"nnlab.kernels.cuda.{name}")
            for dtype in ("float32", "float64"):
                ns = mod.kernels(dtype)
                for kname in mod.SIGNATURES:
                    self._saved.append((ns, kname, getattr(ns, kname)))
                    setattr(ns, kname, self._proxy(getattr(ns, kname), (name, kname, dtype)))

    def _proxy(self, kernel, key):
        seen = self.seen

        class Configured:
            def __getitem__(self, config):
                run = kernel[config]

                def call(*args):
                    seen.setdefault(key, set()).add(tuple(_typeof(a) for a in args))
                    return run(*args)

                return call

        return Configured()

    def restore(self):
        for ns, kname, k in self._saved:
            setattr(ns, kname, k)


def _typeof(a):
    import numba

    if hasattr(a, "copy_to_host"):
        return numba.typeof(a.copy_to_host())
    return numba.typeof(a)


def noisy_ops(ops):
    return [i for i in range(ops.shape[0]) if ops[i, F_NOISE] >= 0]
