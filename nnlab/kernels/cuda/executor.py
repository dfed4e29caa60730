"""The device executor: a network program run as a sequence of CUDA kernel launches.

:class:`DeviceExecutor` has the entry points of the CPU kernel set (:mod:`nnlab.kernels.cpu`) with
the same arguments -- ``run_forward``, ``loss_only``, ``loss_and_grad``, ``eval_chunks``,
``train_step``, ``train_epoch``, ``observe`` -- so :class:`nnlab.Sequential` and
:class:`nnlab.Trainer` call it as they call the CPU's. They pass host NumPy arrays; each array
that must live on the device (the parameter store, the gradients, the optimizer state, the
workspace) has a device mirror, created on first use and kept:

* a mirror is uploaded when it is created and when the host says its copy changed
  (:meth:`DeviceExecutor.host_written`: ``Sequential.params()``, ``set_params``, ...);
* the device copy is the newer one after a kernel wrote it, and is copied back only when the host
  asks (:meth:`DeviceExecutor.to_host`: ``params()``, ``save``, checkpoints, ``Trainer.grads``);
* the workspace mirrors are scratch (never uploaded); what the API returns from them (outputs,
  layer errors, ∂L/∂X) is copied back by the call that returns it.

So a training run keeps parameters, optimizer state, workspace and batches on the device and
copies back three numbers per step (loss, gradient norm, applied) -- and the monitor's
statistics when one records. The loops over ops are Python loops launching each kind's
launchers (:mod:`nnlab.kernels.cuda.registry`); a kind without device kernels is refused with
:class:`nnlab.errors.DeviceError` when the network moves to the device, never run on the CPU.
"""

import importlib
import math
import weakref

import numpy as np
from numba import cuda

from ...errors import DeviceError
from .. import layout as L
from ..layout import F_A, F_AMASK, F_AP, F_KIND, LOSS_BCE
from . import elementwise, noise, registry
from . import losses as dlosses
from .device import blocks, gemm_backend, threads_per_block
from .program import DeviceProgram

KIND_NAMES = {getattr(L, name): name[5:].lower() for name in dir(L) if name.startswith("KIND_")}


def check_kinds(kinds):
    """DeviceError naming the op kinds in ``kinds`` that have no device kernels."""
    table = registry.load_all()
    missing = sorted({int(k) for k in kinds} - set(table))
    if missing:
        names = ", ".join(KIND_NAMES.get(k, str(k)) for k in missing)
        raise DeviceError(f"no CUDA kernels for layer kind(s) {names} in this installation: run this network "
                          'with device="cpu"')


class _Mirror:
    __slots__ = ("ref", "dev", "dev_newer", "host_dirty", "scratch")


class DeviceExecutor:
    """Runs network programs on the device for one network (see the module docstring)."""

    def __init__(self, cuda_mod, dtype, kinds=()):
        self.cuda = cuda_mod
        self.dtype = np.dtype(dtype)
        check_kinds(kinds)
        gemm_backend()  # (a matrix product asked for and missing is refused here, before anything runs)
        self.stream = cuda_mod.default_stream()
        self._m = {}
        self._progs = {}
        self._held = {}  # id(host) -> (host, device copy): a fit's data sets, uploaded once (hold)
        self._order = (None, None)  # (host row order, its device copy) of the per-step batches
        self._batch_bufs = None

    # ---------------------------------------------------------------- mirrors
    def _mirror(self, host, scratch=False):
        key = id(host)
        m = self._m.get(key)
        if m is None or m.ref() is not host:
            m = _Mirror()
            m.ref = weakref.ref(host)
            m.dev = self.cuda.device_array(host.shape, host.dtype, stream=self.stream)
            m.dev_newer = False
            m.host_dirty = not scratch
            m.scratch = scratch
            self._m[key] = m
            weakref.finalize(host, self._m.pop, key, None)
        return m

    def dev(self, host, scratch=False):
        """The device copy of the host array ``host`` (uploaded first when the host's is newer)."""
        m = self._mirror(host, scratch)
        if m.host_dirty:
            m.dev.copy_to_device(host, stream=self.stream)
            m.host_dirty = False
        return m.dev

    def written(self, host):
        """Record that a kernel wrote the device copy of ``host``."""
        m = self._m.get(id(host))
        if m is not None:
            m.dev_newer = True

    def pull(self, host):
        """Copy the device's values of ``host`` back when they are newer."""
        m = self._m.get(id(host))
        if m is not None and m.dev_newer and m.ref() is host:
            m.dev.copy_to_host(host, stream=self.stream)
            self.stream.synchronize()
            m.dev_newer = False

    def to_host(self):
        """Copy back every mirror whose device values are newer (parameters, state, gradients)."""
        for m in list(self._m.values()):
            host = m.ref()
            if host is not None and m.dev_newer:
                self.pull(host)

    def host_written(self, host):
        """The host's copy of ``host`` may have changed: upload it before the next kernel reads it."""
        self.pull(host)
        m = self._m.get(id(host))
        if m is not None and not m.scratch:
            m.host_dirty = True

    # ---------------------------------------------------------------- a fit's data
    def hold(self, *arrays):
        """Upload the host arrays (a fit's training and validation sets; None entries are skipped)
        once and keep them until :meth:`release`: the batches, the epochs' evaluation and
        ``train_epoch`` read them there instead of copying them again. Where the device has no
        room for them, nothing is held and the batches are copied from the host one by one."""
        self.release()
        try:
            for a in arrays:
                if a is not None:
                    self._held[id(a)] = (a, self.cuda.to_device(np.ascontiguousarray(a), stream=self.stream))
        except Exception as exc:  # device memory exhausted: numba's CudaAPIError (or MemoryError)
            self.release()
            if not (isinstance(exc, MemoryError) or "OUT_OF_MEMORY" in str(exc).upper().replace(" ", "_")):
                raise

    def release(self):
        """Free the arrays of :meth:`hold` (the end of a fit)."""
        self._held = {}
        self._order = (None, None)
        self._batch_bufs = None

    def held(self, host):
        """The device copy of ``host`` kept by :meth:`hold`, or None."""
        e = self._held.get(id(host))
        return e[1] if e is not None and e[0] is host else None

    def batch(self, X, Y, order, lo, m):
        """Rows ``order[lo:lo+m]`` of the held X and Y gathered on the device, as (m, width) device
        arrays (reused buffers: valid until the next call). ``order`` (an epoch's row order) is
        uploaded once per epoch; nothing else crosses to the device."""
        dX, dY = self.held(X), self.held(Y)
        if self._order[0] is not order:
            self._order = (order, self.cuda.to_device(np.ascontiguousarray(order, np.int64), stream=self.stream))
        bufs = self._batch_bufs
        if bufs is None or bufs[0].shape[0] < m or bufs[0].shape[1] != dX.shape[1] or bufs[1].shape[1] != dY.shape[1]:
            bufs = self._batch_bufs = (self.cuda.device_array((m, dX.shape[1]), self.dtype, stream=self.stream),
                                       self.cuda.device_array((m, dY.shape[1]), self.dtype, stream=self.stream))
        gather(dX, self._order[1], lo, m, bufs[0], self.stream)
        gather(dY, self._order[1], lo, m, bufs[1], self.stream)
        return bufs[0][:m], bufs[1][:m]

    def _rows(self, X, lo, m):
        """Rows lo:lo+m of the host array X as a flat device array (the held copy's rows when held)."""
        d = self.held(X)
        if d is None:
            return self._input(X[lo:lo + m])
        return d[lo:lo + m].reshape(m * d.shape[1])

    # ---------------------------------------------------------------- programs
    def _prog(self, ops, hp, tens, params, grads, ws, dws):
        key = id(ops)
        entry = self._progs.get(key)
        if entry is None or entry[0]() is not ops:
            dp = DeviceProgram(self.cuda, ops, hp, tens, params, grads, ws, dws, stream=self.stream)
            self._progs[key] = (weakref.ref(ops), dp, hp.copy())
            weakref.finalize(ops, self._progs.pop, key, None)
        else:
            dp = entry[1]
            if not np.array_equal(entry[2], hp):  # a host edit of the hyperparameters (truncated BPTT)
                dp.hp = np.ascontiguousarray(hp, np.float64)
                dp.d_hp = self.cuda.to_device(dp.hp, stream=self.stream)
                self._progs[key] = (entry[0], dp, hp.copy())
            dp.params, dp.grads, dp.ws, dp.dws = params, grads, ws, dws
        return dp

    def _input(self, X):
        if hasattr(X, "copy_to_host"):  # already on the device (a gathered batch)
            return X.reshape(X.size)
        d = self.held(X)
        if d is not None:
            return d.reshape(d.size)
        return self.cuda.to_device(np.ascontiguousarray(X).reshape(-1), stream=self.stream)

    def forward_store(self, dp, dX, n, training, seed, store):
        """Copy the device input dX into tensor 0, draw the noise and run every op forward (the twin
        of ``cpu.forward_store``). Returns (output tensor id, per-op stored flags)."""
        elementwise.copy(dp.flat(dp.ws, 0, n), dX, self.stream)
        noise.fill_pass(dp, n, training, seed)
        stored = []
        for i in range(dp.ops.shape[0]):
            fwd, _ = registry.launchers(dp.ops[i, F_KIND])
            stored.append(bool(fwd(dp, i, n, bool(training), bool(store))))
        return int(dp.ops[-1, F_A]), stored

    def backward_stored(self, dp, n, stored):
        """Backward through every op in reverse (the twin of ``cpu.backward_stored``): the learnable
        activation slots' gradients are zeroed first, the other slots are written by the ops."""
        ops = dp.ops
        for i in range(ops.shape[0]):
            k = bin(int(ops[i, F_AMASK]) & 15).count("1")
            if k:
                ap = int(ops[i, F_AP])
                elementwise.fill(dp.grads[ap:ap + k], 0.0, self.stream)
        for i in range(ops.shape[0] - 1, -1, -1):
            _, bwd = registry.launchers(ops[i, F_KIND])
            bwd(dp, i, n, stored[i])

    def _loss(self, dp, out, n, Yt, loss_code, need_grad, total=0.0):
        rows = n * int(dp.tens[out, 2])
        Yhat = dp.flat(dp.ws, out, n)
        dY = dp.flat(dp.dws, out, n)
        total = dlosses.loss_sum(self.cuda, loss_code, Yhat, Yt, dY, need_grad, total, rows, self.stream)
        return total, rows, Yhat.size // rows

    def _loss_and_grad(self, dp, dX, dY, n, loss_code, training, seed):
        out, stored = self.forward_store(dp, dX, n, training, seed, True)
        total, rows, k = self._loss(dp, out, n, dY, loss_code, True)
        self.backward_stored(dp, n, stored)
        return dlosses.mean(loss_code, total, rows, k)

    def _buffers(self, params, grads, ws, dws):
        P = self.dev(params)
        G = self.dev(grads) if grads is not None else P[:0]
        W = self.dev(ws, scratch=True)
        D = W if dws is ws else self.dev(dws, scratch=True)
        return P, G, W, D

    # ---------------------------------------------------------------- the kernel set's entry points
    def run_forward(self, ops, hp, tens, params, ws, X, training, seed):
        """``cpu.run_forward`` on the device; the workspace is copied back (outputs, layer inputs)."""
        P, G, W, _ = self._buffers(params, None, ws, ws)
        dp = self._prog(ops, hp, tens, P, G, W, W)
        out, _ = self.forward_store(dp, self._input(X), X.shape[0], training, seed, False)
        self._done(params, ws=ws, training=training)
        return out

    def loss_only(self, ops, hp, tens, params, ws, dws, X, Y, loss_code, training, seed):
        P, G, W, D = self._buffers(params, None, ws, dws)
        dp = self._prog(ops, hp, tens, P, G, W, D)
        n = X.shape[0]
        out, _ = self.forward_store(dp, self._input(X), n, training, seed, False)
        total, rows, k = self._loss(dp, out, n, self._input(Y), loss_code, False)
        self._done(params, ws=ws, training=training)
        return dlosses.mean(loss_code, total, rows, k)

    def loss_and_grad(self, ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed):
        """``cpu.loss_and_grad`` on the device; gradients and both workspaces are copied back."""
        P, G, W, D = self._buffers(params, grads, ws, dws)
        dp = self._prog(ops, hp, tens, P, G, W, D)
        loss = self._loss_and_grad(dp, self._input(X), self._input(Y), X.shape[0], loss_code, training, seed)
        self.written(grads)
        self.pull(grads)
        self._done(params, ws=ws, dws=dws, training=True)
        return loss

    def eval_chunks(self, ops, hp, tens, params, ws, X, Y, loss_code, chunk, out):
        """``cpu.eval_chunks`` on the device: eval-mode loss over all rows, ``chunk`` rows a pass;
        the outputs are copied into ``out``."""
        P, G, W, _ = self._buffers(params, None, ws, ws)
        dp = self._prog(ops, hp, tens, P, G, W, W)
        n = X.shape[0]
        total = 0.0
        steps = 1
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            o, _ = self.forward_store(dp, self._rows(X, lo, m), m, False, -1, False)
            steps = int(dp.tens[o, 2])
            rows = m * steps
            total = dlosses.loss_sum(self.cuda, loss_code, dp.flat(W, o, m), self._rows(Y, lo, m),
                                     dp.flat(W, o, m), False, total, rows, self.stream)
            out[lo:lo + m] = dp.view(W, o, m).copy_to_host(stream=self.stream)
        self.stream.synchronize()
        return total / (n * out.shape[1]) if loss_code == LOSS_BCE else total / (n * steps)

    def train_step(self, ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed,
                   clip_kind, clip_value, offsets, opt_code, opt_hp, t, state, skip_nonfinite, out,
                   record, prev, sat, stats):
        """``cpu.train_step`` on the device: forward, loss, backward, clipping and the optimizer
        update, with the gradient-health statistics when ``record``; ``out`` gets (loss, norm, applied)."""
        P, G, W, D = self._buffers(params, grads, ws, dws)
        dp = self._prog(ops, hp, tens, P, G, W, D)
        dX = self._input(X)
        dY = self._input(Y)
        self._step(dp, dX, dY, loss_code, training, seed, clip_kind, clip_value, offsets, opt_code, opt_hp, t,
                   self.dev(state), skip_nonfinite, out, record, prev, sat, stats)
        for h in (params, grads, state):
            self.written(h)
        if record:
            self.pull(dws)
        return out[0]

    def _step(self, dp, dX, dY, loss_code, training, seed, clip_kind, clip_value, offsets, opt_code, opt_hp, t,
              dstate, skip_nonfinite, out, record, prev, sat, stats):
        optim = _twin("optim")  # (every module the step needs is found before anything runs)
        clip = _twin("clip")
        stats_mod = _twin("stats") if record else None
        n = dX.size // int(dp.tens[0, 1])
        npar = dp.grads.size
        Pp = dp.params[:npar]
        nbuf = dp.params.size - npar
        kept = None
        if nbuf > 0 and skip_nonfinite:
            kept = self.cuda.device_array(nbuf, self.dtype, stream=self.stream)
            elementwise.copy(kept, dp.params[npar:], self.stream)
        loss = self._loss_and_grad(dp, dX, dY, n, loss_code, training, seed)
        dprev = None
        if record:
            dprev = self.dev(prev, scratch=True)
            elementwise.copy(dprev, Pp, self.stream)
            stats_mod.grad_stats(dp, n, sat, stats)
        norm = float(clip.clip_flat(clip_kind, clip_value, dp.grads, offsets, self.stream))
        out[0] = loss
        out[1] = norm
        out[2] = 0.0
        if not skip_nonfinite:
            optim.opt_update(opt_code, opt_hp, t, Pp, dp.grads, dstate, self.stream)
            out[2] = 1.0
        elif math.isfinite(loss) and math.isfinite(norm) and optim.opt_update_checked(
                opt_code, opt_hp, t, Pp, dp.grads, dstate, norm, self.stream):
            out[2] = 1.0
        elif kept is not None:
            elementwise.copy(dp.params[npar:], kept, self.stream)
        if record:
            stats_mod.update_stats(dp, dprev, stats)
        return loss

    def train_epoch(self, ops, hp, tens, params, grads, ws, dws, X, Y, order, batch, xb, yb, loss_code, training,
                    seeds, clip_kind, clip_value, offsets, opt_code, opt_hps, t0, state, skip_nonfinite, outs,
                    cycles):
        """``cpu.train_epoch`` on the device: X and Y are copied to the device once (not at all when
        :meth:`hold` keeps them), each batch is gathered there; the same steps as one :meth:`train_step` per batch. ``cycles`` gets equal
        shares (the device's time is not split per step)."""
        P, G, W, D = self._buffers(params, grads, ws, dws)
        dp = self._prog(ops, hp, tens, P, G, W, D)
        dXall = self.held(X)
        dYall = self.held(Y)
        if dXall is None or dYall is None:
            dXall = self.cuda.to_device(np.ascontiguousarray(X), stream=self.stream)
            dYall = self.cuda.to_device(np.ascontiguousarray(Y), stream=self.stream)
        dorder = self.cuda.to_device(np.ascontiguousarray(order, np.int64), stream=self.stream)
        dxb = self.cuda.device_array(xb.shape, self.dtype, stream=self.stream)
        dyb = self.cuda.device_array(yb.shape, self.dtype, stream=self.stream)
        dstate = self.dev(state)
        n = order.size
        no_prev = np.zeros(1, self.dtype)
        done = opt_hps.shape[0]
        for s in range(opt_hps.shape[0]):
            lo = s * batch
            m = min(batch, n - lo)
            gather(dXall, dorder, lo, m, dxb, self.stream)
            gather(dYall, dorder, lo, m, dyb, self.stream)
            self._step(dp, dxb[:m].reshape(m * xb.shape[1]), dyb[:m].reshape(m * yb.shape[1]), loss_code, training,
                       int(seeds[s]), clip_kind, clip_value, offsets, opt_code, opt_hps[s], t0 + s, dstate,
                       skip_nonfinite, outs[s], False, no_prev, None, None)
            cycles[s] = 1
            if outs[s, 2] == 0.0:
                done = s + 1
                break
        for h in (params, grads, state):
            self.written(h)
        return done

    def observe(self, ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed, sat, stats):
        """loss_and_grad plus the gradient-health statistics, without an update."""
        stats_mod = _twin("stats")
        P, G, W, D = self._buffers(params, grads, ws, dws)
        dp = self._prog(ops, hp, tens, P, G, W, D)
        n = X.shape[0]
        loss = self._loss_and_grad(dp, self._input(X), self._input(Y), n, loss_code, training, seed)
        stats_mod.grad_stats(dp, n, sat, stats)
        stats_mod.update_stats(dp, P[:G.size], stats)
        self.written(grads)
        self.pull(grads)
        self._done(params, ws=ws, dws=dws, training=True)
        return loss

    def _done(self, params, ws=None, dws=None, training=False):
        """After a call: the store may have changed (running statistics); copy back the workspaces
        the API reads."""
        if training:
            self.written(params)
        for h in (ws, dws):
            if h is not None:
                self.written(h)
                self.pull(h)


def _twin(name):
    """The device module ``nnlab.kernels.cuda.<name>`` (optimizer, clipping, statistics twins)."""
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError as exc:
        raise DeviceError(f"the device kernels of {name!r} are missing from this installation ({exc})") from None


# ---------------------------------------------------------------- batch gather
@cuda.jit
def _gather(src, order, lo, m, dst):
    """dst[r, :] = src[order[lo + r], :] for r < m (2-D device arrays of one dtype)."""
    w = dst.shape[1]
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, m * w, stride):
        r = k // w
        dst[r, k - r * w] = src[order[lo + r], k - r * w]


def gather(src, order, lo, m, dst, stream=0):
    """Rows ``order[lo:lo+m]`` of the device array src into the first m rows of dst."""
    tpb = threads_per_block()
    _gather[blocks(m * dst.shape[1], tpb), tpb, stream](src, order, int(lo), int(m), dst)


def gather_signature(dtype):
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return f"void({t}[:, ::1], int64[::1], int64, int64, {t}[:, ::1])"
