"""The training loop: one fused compiled call per batch (forward, backward, clip, regularise, update).

>>> import nnlab as nl
>>> X, y = nl.datasets.load("xor", n=64, seed=0)
>>> net = nl.Sequential([nl.Dense(2, 8, activation="tanh"), nl.Dense(8, 2)],
...                     loss="softmax_cross_entropy", seed=0)
>>> trainer = nl.Trainer(net, nl.optim.Adam(lr=0.05), clip=("global_norm", 1.0))
>>> history = trainer.fit(X, y, epochs=30, batch_size=16, seed=0)
>>> history.epoch_loss[-1] < history.epoch_loss[0]
True

The step (:func:`nnlab.kernels.cpu.train_step`) runs ``loss_and_grad`` over the network program,
then clipping on the flat gradient buffer (``clip``: ``("value", c)``, ``("norm", c)`` per tensor or
``("global_norm", c)`` with PyTorch's ``clip_grad_norm_`` semantics), then the optimizer's compiled
update of the flat parameter buffer. ``regularizer`` adds to the optimizer's own weight decay:
``("l2", λ)`` (coupled: g += λp), ``("l1", λ)`` (g += λ·sign p) or ``("decoupled", λ)``
(p -= lr·λ·p); it applies to every parameter, as torch's ``weight_decay`` does, and the reported
loss is the data loss without the penalty.

A :class:`~nnlab.diagnostics.GradientMonitor` passed as ``monitor`` records per-layer gradient
health inside the same compiled call (gradients before clipping, weights after the update).

On a non-finite loss or gradient norm, or an update that would leave a non-finite weight or optimizer
state entry (a huge but finite gradient overflowing Adam's g², say), ``on_nonfinite="stop"`` (default)
skips that update (weights, buffers and optimizer state as before it), keeps
the last finite weights and makes ``fit`` stop; ``"raise"`` raises
:class:`~nnlab.errors.NonFiniteError` (weights likewise kept); ``"ignore"`` applies the update anyway.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import _validate
from . import clip as _clip
from . import optim as _optim
from .errors import HyperparameterError, NnlabError, NonFiniteError, ShapeError
from .kernels import cpu as CK
from .kernels import optim_cpu as OK
from .kernels.layout import HP_CARRY, LOSS_BCE, LOSS_SOFTMAX_CE

_REGULARIZERS = {"l2": OK.H_WD, "l1": OK.H_L1, "decoupled": OK.H_DWD}


@dataclass
class StepInfo:
    """What the last step did: its loss, the pre-clip global gradient norm, whether it updated."""

    loss: float
    grad_norm: float
    applied: bool


@dataclass
class History:
    """Per-step and per-epoch records of :meth:`Trainer.fit`."""

    loss: list = field(default_factory=list)          # per step (batch)
    grad_norm: list = field(default_factory=list)     # per step, before clipping
    epoch_loss: list = field(default_factory=list)    # per epoch, mean over the epoch's samples
    accuracy: list = field(default_factory=list)      # per epoch, on the training set (classifiers)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    epoch_time: list = field(default_factory=list)    # per completed epoch, seconds (steps + evaluation)
    step_time: list = field(default_factory=list)     # per step, seconds inside the fused step
    stopped: str = ""                                 # why training stopped early, "" if it did not

    def to_dict(self):
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _clip_spec(clip):
    """(kind, value, error_if_nonfinite) of the one clipping transformation the fused step runs."""
    obj = _clip.get(clip)
    if obj is None:
        return OK.CLIP_NONE, 0.0, False
    if obj.kind is None:
        raise HyperparameterError(f"the Trainer fuses one clipping transformation; got {obj!r}")
    return obj.kind, float(obj.value), bool(getattr(obj, "error_if_nonfinite", False))


def _reg_spec(regularizer):
    if regularizer is None:
        return None
    try:
        kind, lam = regularizer
    except (TypeError, ValueError):
        raise HyperparameterError(f"regularizer must be (kind, lambda), e.g. ('l2', 1e-4); got {regularizer!r}") from None
    if kind not in _REGULARIZERS:
        raise HyperparameterError(f"regularizer kind must be one of {list(_REGULARIZERS)}; got {kind!r}")
    return _REGULARIZERS[kind], _validate.real_scalar(lam, "regularizer lambda", nonnegative=True)


class Trainer:
    """Train a :class:`~nnlab.Sequential` with an optimizer; see the module docstring."""

    def __init__(self, net, optimizer, clip=None, regularizer=None, on_nonfinite="stop", monitor=None):
        self.net = net
        if monitor is not None and getattr(monitor, "net", None) is not net:
            raise HyperparameterError("the monitor must watch the trainer's network (GradientMonitor(net))")
        self.monitor = monitor
        self.optimizer = _optim.get(optimizer) if isinstance(optimizer, str) else optimizer
        if not isinstance(self.optimizer, _optim.Optimizer):
            raise HyperparameterError(f"optimizer must be an nnlab optimizer or its name; got {optimizer!r}")
        self.clip_kind, self.clip_value, clip_raises = _clip_spec(clip)
        self.clip = clip
        self.regularizer = _reg_spec(regularizer)
        if not isinstance(on_nonfinite, str) or on_nonfinite not in ("stop", "raise", "ignore"):
            raise HyperparameterError(f"on_nonfinite must be 'stop', 'raise' or 'ignore'; got {on_nonfinite!r}")
        self.on_nonfinite = "raise" if clip_raises else on_nonfinite
        self._offsets = np.array([o for o, _ in net._shapes] + [net.n_params], dtype=np.int64)
        self._grads = np.zeros_like(net._flat)
        self._out = np.zeros(3)
        self._no_monitor = (np.zeros(1, net.dtype), np.zeros((1, 2)), np.zeros((1, 1)))
        self._labels = {}  # batch size -> ((N, 1) buffer, its flat view): float labels for step's fast path
        self.last = None

    def step(self, X, y):
        """One fused compiled training step on the batch (X, y); returns its (pre-update) loss."""
        XY = self._quick_batch(X, y)
        if XY is None:
            XY = self.net._prepare(X, y)
        return self._step(*XY)

    def _quick_batch(self, X, y):
        """(X, Y) as ``net._prepare`` returns them, for the common case of numpy arrays already in
        the network's dtype and layout, checked by one compiled pass (finite X, valid targets);
        None when anything differs or fails, and the caller runs the full validation."""
        net = self.net
        if type(X) is not np.ndarray or type(y) is not np.ndarray or X.ndim != 2 or X.dtype != net.dtype:
            return None
        n = X.shape[0]
        if X.shape[1] != net.n_in or n == 0 or not X.flags.c_contiguous:
            return None
        if net._loss_code == LOSS_SOFTMAX_CE:
            if y.ndim != 1 or y.shape[0] != n or y.dtype.kind not in "iu":
                return None
            buf = self._labels.get(n)
            if buf is None:
                self._labels.clear()
                Y = np.empty((n, 1), net.dtype)
                buf = self._labels[n] = (Y, Y.reshape(-1))
            return (X, buf[0]) if CK.labels_ok(X, y, buf[1], net.n_out) else None
        if y.dtype != net.dtype or not y.flags.c_contiguous:
            return None
        if y.ndim == 1 and net.n_out == 1:
            y = y.reshape(-1, 1)
        if y.shape != (n, net.n_out):
            return None
        return (X, y) if CK.targets_ok(X, y, net._loss_code == LOSS_BCE) else None

    def _step(self, X, Y, prog=None, workspace=None):
        """One fused step on a batch in the kernels' layout; ``prog`` and ``workspace`` (ws, dws)
        default to the batch's program and the network's workspace (truncated BPTT passes the
        window's program and the one workspace pair that keeps the carried state)."""
        net, opt, mon = self.net, self.optimizer, self.monitor
        if prog is None:
            prog = net._prog_for(X)
        if prog.batch_checks:  # (BatchNorm: a training batch of one row) before anything changes
            prog.check_batch(X.shape[0], net.training)
        code, hp, t, state = opt.begin_flat(net._flat)
        if self.regularizer is not None:
            slot, lam = self.regularizer
            hp[slot] += lam
        ws, dws = workspace if workspace is not None else net._workspace(X.shape[0], prog.width)
        training = net.training
        net._kernels.train_step(prog.ops, prog.hp, prog.tens, net._store, self._grads, ws, dws, X, Y,
                                net._loss_code, training, net._noise_seed(training),
                                self.clip_kind, self.clip_value, self._offsets,
                                code, hp, t, state, self.on_nonfinite != "ignore", self._out,
                                mon is not None, *(mon.buffers() if mon is not None else self._no_monitor))
        loss, norm, applied = self._out.tolist()
        applied = applied != 0.0
        self.last = StepInfo(loss, norm, applied)
        if mon is not None:
            mon.commit(loss, norm, applied, X.shape[0], prog, dws)
        if applied:
            opt.end_step()
        elif self.on_nonfinite == "raise":
            raise NonFiniteError(f"non-finite {_what(loss, norm)} "
                                 f"(loss {loss}, gradient norm {norm}); weights kept from the last finite step")
        return loss

    @property
    def grads(self):
        """The gradients of the last step (after clipping), aligned with ``net.params()``."""
        return [self._grads[o:o + int(np.prod(s))].reshape(s) for o, s in self.net._shapes]

    def evaluate(self, X, y):
        """(loss, accuracy) on (X, y) in eval mode; accuracy is None for regression losses."""
        net = self.net
        X2, Y = net._prepare(X, y)
        was = net.training
        net.eval()
        try:
            out = net.forward(X)
            loss = net.loss(X, y)
        finally:
            net.training = was
        return loss, _accuracy(net._loss_code, out.reshape(X2.shape[0], -1), Y)

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=0, validation_split=0.0,
            validation_data=None, callback=None, step_callback=None, tbptt=None):
        """Train for ``epochs`` passes; batch_size=1 is online training, batch_size >= N full-batch.

        Each epoch visits the rows in the order ``np.random.default_rng(seed).permutation(N)`` (a
        new permutation per epoch from the one generator; ``shuffle=False`` keeps the given
        order) in batches of ``batch_size``, the last one smaller when N is not a multiple.
        ``validation_split`` holds out the last fraction of (X, y) (before shuffling, as Keras);
        ``callback(epoch, history)`` runs after every epoch (return True to stop);
        ``step_callback(epoch, step, loss)`` after every applied step (``step`` counts from 1
        over the whole run). Returns a :class:`History`.

        ``tbptt=k`` (recurrent networks with a sequence output): truncated backpropagation through
        time over windows. Each batch's sequences are cut into consecutive windows of k steps (the
        last one shorter when k does not divide T), with their targets; each window is one training
        step (one update, one entry of ``History.loss``), and the hidden (and cell) state at the
        end of a window starts the next one, with no gradient across the border (torch's
        ``h.detach()``). A batch starts from zeros. ``epoch_loss`` weights each window's loss by
        its steps. k >= T is plain training.
        """
        net = self.net
        X, Y = net._prepare(X, y)
        window = self._tbptt_window(X, tbptt)
        epochs = _validate.positive_int(epochs, "epochs", minimum=0)
        batch_size = _validate.positive_int(batch_size, "batch_size")
        if seed is not None:
            seed = _validate.positive_int(seed, "seed", minimum=0)
        for name, fn in (("callback", callback), ("step_callback", step_callback)):
            if fn is not None and not callable(fn):
                raise HyperparameterError(f"{name} must be callable; got {fn!r}")
        split = _validate.real_scalar(validation_split, "validation_split")
        if not 0.0 <= split < 1.0:
            raise HyperparameterError(f"validation_split must be in [0, 1); got {split}")
        if validation_data is not None and split:
            raise HyperparameterError("give validation_split or validation_data, not both")
        if split:
            n_val = max(1, int(round(split * X.shape[0])))
            if n_val >= X.shape[0]:
                raise ShapeError("validation_split leaves no training data")
            Xv, Yv = X[-n_val:], Y[-n_val:]
            X, Y = X[:-n_val], Y[:-n_val]
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                got = type(validation_data).__name__
                if isinstance(validation_data, (tuple, list)):
                    got += f" of length {len(validation_data)}"
                raise HyperparameterError(f"validation_data must be a pair (X_val, y_val); got {got}")
            try:
                Xv, Yv = net._prepare(*validation_data)
            except NnlabError as exc:
                raise type(exc)(f"validation_data: {exc}") from None
        else:
            Xv = Yv = None
        rng = np.random.default_rng(seed)
        n = X.shape[0]
        prog = net._prog_for(X)
        for rows in {min(batch_size, n), n % batch_size}:  # every batch size the epochs will see
            if rows:
                prog.check_batch(rows, net.training)
        history = History()
        clock = time.perf_counter
        # the epoch kernel is worth compiling for the cached built-in kernel set only (a set with
        # user activations is compiled in every process: a few seconds more for microseconds a step)
        compiled = (self.compiled_epochs and self.monitor is None and step_callback is None and window is None
                    and type(self)._step is Trainer._step and net._kernels is CK)
        for epoch in range(epochs):
            t_epoch = clock()
            order = rng.permutation(n) if shuffle else np.arange(n)
            total = 0.0
            if compiled:
                total = self._epoch(X, Y, order, batch_size, epoch, history)
                if history.stopped:
                    break
            for start in range(0, n, batch_size) if not compiled else ():
                idx = order[start:start + batch_size]
                xb, yb = np.ascontiguousarray(X[idx]), np.ascontiguousarray(Y[idx])
                if window is not None:
                    total += self._tbptt_batch(xb, yb, window, epoch, history, step_callback) * len(idx)
                    if history.stopped:
                        break
                    continue
                t0 = clock()
                loss = self._step(xb, yb)
                history.step_time.append(clock() - t0)
                if not self._record(loss, epoch, history, step_callback):
                    break
                total += loss * len(idx)
            if history.stopped:
                break
            self._end_epoch(X, Y, Xv, Yv, n, total, t_epoch, epoch, history)
            if callback is not None and callback(epoch, history):
                history.stopped = f"stopped by callback after epoch {epoch + 1}"
                break
        return history

    def _record(self, loss, epoch, history, step_callback):
        """History entries of one step of the per-step loop; False (and ``history.stopped``) when
        its update was not applied."""
        history.loss.append(loss)
        history.grad_norm.append(self.last.grad_norm)
        if not self.last.applied:
            history.stopped = (f"non-finite {_what(loss, self.last.grad_norm)} at "
                               f"epoch {epoch + 1}, step {len(history.loss)}; weights kept")
            return False
        if step_callback is not None:
            step_callback(epoch, len(history.loss), loss)
        return True

    def _end_epoch(self, X, Y, Xv, Yv, n, total, t_epoch, epoch, history):
        net = self.net
        history.epoch_loss.append(total / n)
        if net._loss_code in (LOSS_SOFTMAX_CE, LOSS_BCE):  # a regression loss has no accuracy to evaluate
            history.accuracy.append(self._eval_arrays(X, Y)[1])
        if Xv is not None:
            vl, va = self._eval_arrays(Xv, Yv)
            history.val_loss.append(vl)
            if va is not None:
                history.val_accuracy.append(va)
        history.epoch_time.append(time.perf_counter() - t_epoch)

    def _tbptt_window(self, X, tbptt):
        """The window length of ``fit(tbptt=k)`` for the batch layout X (N, T·F), or None for plain
        training (no tbptt, or k >= T); bad values and networks it cannot apply to raise."""
        if tbptt is None:
            return None
        net = self.net
        k = _validate.positive_int(tbptt, "tbptt")
        if not net._recurrent:
            raise HyperparameterError("tbptt (truncated backpropagation through time) needs a network with a "
                                      "recurrent layer (RNN, LSTM); this one has none")
        prog = net._prog_for(X)
        if not prog.out_seq:
            raise HyperparameterError(
                "tbptt needs a network whose output is a sequence (the last recurrent layer with "
                "return_sequences=True and targets per step): this network outputs only its last state, so "
                "every window but the last would have no loss; use the layer's truncate=k for truncated "
                "BPTT of a many-to-one network")
        steps = X.shape[1] // net.n_in
        return k if k < steps else None

    def _tbptt_programs(self, steps, k):
        """{window length: program} of the windows of k steps and of the remainder, if any."""
        net = self.net
        progs = {k: net._program(k)}
        if steps % k:
            progs[steps % k] = net._program(steps % k)
        return progs

    def _tbptt_batch(self, X, Y, k, epoch, history, step_callback):
        """The windows of one batch (see :meth:`fit`): one step each, the recurrent states carried
        through the carry block of one workspace pair. Returns the batch's loss (the windows' losses
        weighted by their steps); sets ``history.stopped`` when an update was not applied."""
        net = self.net
        nb = X.shape[0]
        steps = X.shape[1] // net.n_in
        kout = Y.shape[1] // steps
        Xs = X.reshape(nb, steps, net.n_in)
        Ys = Y.reshape(nb, steps, kout)
        progs = self._tbptt_programs(steps, k)
        workspace = net._workspace(nb, max(p.width for p in progs.values()))
        batch_loss = 0.0
        for lo in range(0, steps, k):
            hi = min(lo + k, steps)
            prog = progs[hi - lo]
            xw = np.ascontiguousarray(Xs[:, lo:hi]).reshape(nb, -1)
            yw = np.ascontiguousarray(Ys[:, lo:hi]).reshape(nb, -1)
            t0 = time.perf_counter()
            # start from zeros (first window) or from the kept state, and keep the final one; the
            # program starts from zeros again for any other use (a callback's forward pass)
            prog.hp[prog.recurrent, HP_CARRY] = 1.0 if lo == 0 else 2.0
            try:
                loss = self._step(xw, yw, prog, workspace)
            finally:
                prog.hp[prog.recurrent, HP_CARRY] = 0.0
            history.step_time.append(time.perf_counter() - t0)
            if not self._record(loss, epoch, history, step_callback):
                break
            batch_loss += loss * ((hi - lo) / steps)
        return batch_loss

    compiled_epochs = True
    """Let :meth:`fit` run each epoch's steps in one compiled call (:func:`nnlab.kernels.cpu.train_epoch`)
    when no monitor and no ``step_callback`` needs control between steps (built-in activations). The results are the
    same bits as one :meth:`step` per batch; ``History.step_time`` then holds each step's share
    (by CPU cycle count) of the compiled call's wall time. Set False to force the per-step loop."""

    def _epoch(self, X, Y, order, batch_size, epoch, history):
        """One epoch through ``train_epoch``; fills ``history`` as the per-step loop does and
        returns the epoch's Σ loss·rows. Everything a step of :meth:`_step` does in Python
        (hyperparameters, noise seeds, optimizer bookkeeping) is done for all steps around it."""
        net, opt = self.net, self.optimizer
        n = X.shape[0]
        n_steps = -(-n // batch_size)
        training = net.training
        code, hp, t0, state = opt.begin_flat(net._flat)  # validates; creates the state on step 1
        table = np.empty((n_steps, hp.size))
        pending = [opt._pending]
        table[0] = hp
        saved = dict(opt._scalars)
        try:
            for s in range(1, n_steps):  # later steps' hyperparameters, as their begin_flat gives them
                opt._scalars.update(opt._pending)
                table[s] = opt.hyperparams_for_step(t0 + s, _checked=True)
                pending.append(opt._pending)
        finally:
            opt._scalars = saved
        if self.regularizer is not None:
            slot, lam = self.regularizer
            table[:, slot] += lam
        rng_state = net.rng.bit_generator.state
        seeds = np.array([net._noise_seed(training) for _ in range(n_steps)], dtype=np.int64)
        buf = self._epoch_buffers(batch_size, X.shape[1], Y.shape[1], n_steps)
        xb, yb, outs, cycles = buf
        prog = net._prog_for(X)
        ws, dws = net._workspace(min(batch_size, n), prog.width)
        t_call = time.perf_counter()
        done = net._kernels.train_epoch(prog.ops, prog.hp, prog.tens, net._store, self._grads, ws, dws, X, Y,
                                        order, batch_size, xb, yb, net._loss_code, training, seeds,
                                        self.clip_kind, self.clip_value, self._offsets, code, table[:n_steps], t0,
                                        state, self.on_nonfinite != "ignore", outs, cycles)
        t_call = time.perf_counter() - t_call
        if done < n_steps and seeds[0] >= 0:  # the per-step loop would have drawn only `done` seeds
            net.rng.bit_generator.state = rng_state
            for _ in range(done):
                net._noise_seed(training)
        rows = outs[:done].tolist()
        c = cycles[:done].astype(np.float64)
        shares = (c / c.sum() if c.sum() > 0 else np.full(done, 1.0 / done)) * t_call
        total = 0.0
        for s, (loss, norm, applied) in enumerate(rows):
            applied = applied != 0.0
            self.last = StepInfo(loss, norm, applied)
            self._out[:] = outs[s]
            if applied:
                opt._pending = pending[s]
                opt.end_step()
            history.step_time.append(float(shares[s]))
            history.loss.append(loss)
            history.grad_norm.append(norm)
            if not applied:
                if self.on_nonfinite == "raise":
                    raise NonFiniteError(f"non-finite {_what(loss, norm)} "
                                         f"(loss {loss}, gradient norm {norm}); weights kept from the last finite step")
                history.stopped = (f"non-finite {_what(loss, norm)} at "
                                   f"epoch {epoch + 1}, step {len(history.loss)}; weights kept")
                break
            total += loss * min(batch_size, n - s * batch_size)
        return total

    def _epoch_buffers(self, batch, k, kout, n_steps):
        """Preallocated (xb, yb, outs, cycles) for :meth:`_epoch`, reused across epochs and fits."""
        buf = getattr(self, "_ebuf", None)
        dt = self.net.dtype
        if (buf is None or buf[0].shape != (batch, k) or buf[0].dtype != dt or buf[1].shape != (batch, kout)
                or buf[2].shape[0] < n_steps):
            buf = self._ebuf = (np.empty((batch, k), dt), np.empty((batch, kout), dt),
                                np.zeros((n_steps, 3)), np.zeros(n_steps, np.int64))
        return buf

    eval_chunk = 4096
    """Rows per forward pass in :meth:`fit`'s per-epoch evaluation: a larger set is evaluated in
    chunks through the trainer's own workspace (bounded memory, no reallocation between the
    training batches and the evaluation); a set of at most this many rows in one pass."""

    def _eval_arrays(self, X, Y):
        net = self.net
        n = X.shape[0]
        m = min(n, self.eval_chunk)
        prog = net._prog_for(X)
        if m == n and net._kernels is not CK:  # a user-activation kernel set: no extra kernel to compile
            ws, dws = net._workspace(n, prog.width)
            loss = float(net._kernels.loss_only(prog.ops, prog.hp, prog.tens, net._store, ws, dws, X, Y,
                                                net._loss_code, False, -1))
            return loss, _accuracy(net._loss_code, prog.tensor(ws, prog.out, n), Y)
        buf = getattr(self, "_eval_ws", None)
        if buf is None or buf.size < m * prog.width or buf.dtype != net.dtype:
            buf = self._eval_ws = np.empty(m * prog.width, net.dtype)
        out = np.empty((n, int(prog.tens[prog.out, 1])), net.dtype)
        loss = float(net._kernels.eval_chunks(prog.ops, prog.hp, prog.tens, net._store, buf, X, Y,
                                              net._loss_code, m, out))
        return loss, _accuracy(net._loss_code, out, Y)


def _what(loss, norm):
    """What was non-finite in a step whose update was not applied."""
    if not math.isfinite(loss):
        return "loss"
    if not math.isfinite(norm):
        return "gradient"
    return "optimizer update (a weight or an optimizer state entry would have overflowed)"


def _accuracy(loss_code, out, Y):
    """Accuracy of outputs ``out`` (N, T·K) against targets ``Y`` (N, T·K') in the kernels' layout:
    for sequence outputs, over every (row, step)."""
    if loss_code == LOSS_SOFTMAX_CE:
        labels = Y.reshape(-1).astype(np.int64)
        return float(np.mean(np.argmax(out.reshape(labels.size, -1), axis=1) == labels))
    if loss_code == LOSS_BCE:
        return float(np.mean((out > 0) == (Y > 0.5)))
    return None
