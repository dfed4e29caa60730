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
import os
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import _files, _validate
from . import clip as _clip
from . import limits as _limits
from . import optim as _optim
from . import progress as _progress
from .errors import HyperparameterError, NnlabError, NonFiniteError, ShapeError
from .kernels import cpu as CK
from .kernels import is_cached
from .kernels import optim_cpu as OK
from .kernels.layout import HP_CARRY, LOSS_BCE, LOSS_SOFTMAX_CE
from .kernels.variants import epoch_name as _epoch_name
from .kernels.variants import step_name as _step_name

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


class _Run:
    """Where a :meth:`Trainer.fit` run is: its settings, the shuffle generator, the epoch, the
    next batch of the epoch and the epoch's row order, the epoch's loss sum so far and the
    history -- everything a checkpoint needs to continue it exactly."""

    def __init__(self, n, batch_size, shuffle, seed, tbptt, fingerprint, rng, history):
        self.n, self.batch_size, self.shuffle, self.seed, self.tbptt = n, batch_size, shuffle, seed, tbptt
        self.fingerprint, self.rng, self.history = fingerprint, rng, history
        self.epoch = 0        # completed epochs
        self.batch = 0        # batches of the current epoch already trained
        self.order = None     # the current epoch's row order (None between epochs)
        self.total = 0.0      # Σ loss·rows of the current epoch so far
        self.elapsed = 0.0    # seconds spent in the current epoch so far


def _fingerprint(X, Y):
    """A cheap identity of the training arrays (shapes, dtypes, CRC-32 of the bytes)."""
    crc = zlib.crc32(np.ascontiguousarray(X).view(np.uint8).reshape(-1))
    crc = zlib.crc32(np.ascontiguousarray(Y).view(np.uint8).reshape(-1), crc)
    return f"{X.shape}/{X.dtype}/{Y.shape}/{Y.dtype}/{crc:08x}"


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

    def __init__(self, net, optimizer, clip=None, regularizer=None, on_nonfinite="stop", monitor=None, device=None):
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
        if device is not None:  # (None: where the network is; moved once every argument is checked)
            net.to(device)
        self._offsets = np.array([o for o, _ in net._shapes] + [net.n_params], dtype=np.int64)
        self._grads = np.zeros_like(net._flat)
        self._out = np.zeros(3)
        self._no_monitor = (np.zeros(1, net.dtype), np.zeros((1, 2)), np.zeros((1, 1)))
        self._lg_kernels = None  # the kernel set whose loss_and_grad callback is loaded
        self._labels = {}  # batch size -> ((N, 1) buffer, its flat view): float labels for step's fast path
        self.last = None
        self._bar = None
        self._run = None       # the current (or last) fit run: what save_checkpoint records
        self._restored = None  # a run restored from a checkpoint, continued by the next fit
        self.checkpoint_metadata = {}
        """JSON-ready values saved with every checkpoint and restored with it (e.g. how the data
        were made), for the caller's own use."""

    def save_checkpoint(self, path):
        """Write this trainer's complete state to ``path`` (see :func:`nnlab.save_checkpoint`)."""
        from .checkpoint import save_checkpoint

        save_checkpoint(path, self)

    @classmethod
    def from_checkpoint(cls, path):
        """The Trainer saved in ``path`` (see :func:`nnlab.load_checkpoint`)."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(path)

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
        # the step compiled with this optimizer's update rule only (and no statistics without a
        # monitor: nnlab.kernels.variants); a user-activation kernel set has the general one only
        step = getattr(net._kernels, _step_name(code, mon is not None), None) or net._kernels.train_step
        if net._kernels is not self._lg_kernels:  # (the executor's loss_and_grad callback, once)
            self._lg_kernels = CK.ensure_loss_and_grad(net._kernels, net.dtype)
        step(prog.ops, prog.hp, prog.tens, net._store, self._grads, ws, dws, X, Y,
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
        self.net._to_host()
        return [self._grads[o:o + int(np.prod(s))].reshape(s) for o, s in self.net._shapes]

    def evaluate(self, X, y):
        """(loss, accuracy) on (X, y) in eval mode; accuracy is None for regression losses.

        One forward pass gives both (the one :meth:`fit` evaluates with after each epoch), run
        :attr:`eval_chunk` rows at a time for a larger set, so its memory stays bounded."""
        X2, Y = self.net._prepare(X, y)
        return self._eval_arrays(X2, Y)

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=0, validation_split=0.0,
            validation_data=None, callback=None, step_callback=None, tbptt=None, max_steps=None,
            checkpoint=None, checkpoint_every=None, resume=None, progress=False):
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

        ``progress=True`` (or a label for the bar) shows a bar of the steps on stderr (plain lines
        every few seconds when stderr is not a terminal; see :mod:`nnlab.progress`);
        ``NNLAB_QUIET=1`` silences it.
        Stopping and resuming: ``max_steps`` ends the run after that many steps in all (mid-epoch
        too; ``history.stopped`` says so). ``checkpoint=PATH`` saves the trainer's complete state
        (:func:`nnlab.save_checkpoint`) every ``checkpoint_every`` steps, or at the end of every
        epoch when that is None, and when the fit returns. A trainer from
        :func:`nnlab.load_checkpoint` continues the saved run in its next ``fit`` given the same
        data, ``batch_size``, ``shuffle``, ``seed`` and ``tbptt``: ``epochs`` and ``max_steps``
        count the whole run, and the returned history holds the whole run, so the result is the
        same bits as a run that never stopped. ``resume=False`` starts a new run instead (keeping
        weights and optimizer state); ``resume=True`` insists on continuing one. With ``tbptt``,
        checkpoints and ``max_steps`` act at the end of the batch whose windows reach the count.
        """
        self._bar = None
        try:
            return self._fit(X, y, epochs, batch_size, shuffle, seed, validation_split, validation_data, callback,
                             step_callback, tbptt, max_steps, checkpoint, checkpoint_every, resume, progress)
        finally:
            if self._bar is not None:
                self._bar.close()
            self._bar = None
            if self.net._dev is not None:  # the data sets this fit kept on the device
                self.net._dev.release()

    def _fit(self, X, y, epochs, batch_size, shuffle, seed, validation_split, validation_data, callback,
             step_callback, tbptt, max_steps, checkpoint, checkpoint_every, resume, progress):
        net = self.net
        X, Y = net._prepare(X, y)
        window = self._tbptt_window(X, tbptt)
        epochs = _validate.positive_int(epochs, "epochs", minimum=0)
        batch_size = _validate.positive_int(batch_size, "batch_size")
        if seed is not None:
            seed = _validate.positive_int(seed, "seed", minimum=0)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise HyperparameterError(f"shuffle must be True or False; got {shuffle!r}")
        for name, fn in (("callback", callback), ("step_callback", step_callback)):
            if fn is not None and not callable(fn):
                raise HyperparameterError(f"{name} must be callable; got {fn!r}")
        if max_steps is not None:
            max_steps = _validate.positive_int(max_steps, "max_steps")
        every = None if checkpoint_every is None else _validate.positive_int(checkpoint_every, "checkpoint_every")
        if checkpoint is not None:
            if not isinstance(checkpoint, (str, os.PathLike)):
                raise HyperparameterError(f"checkpoint must be a file path; got {checkpoint!r}")
            checkpoint = _files.check_target(checkpoint, "checkpoint ")
        elif every is not None:
            raise HyperparameterError("checkpoint_every needs checkpoint=PATH (where to save)")
        if resume is not None and not isinstance(resume, bool):
            raise HyperparameterError(f"resume must be None, True or False; got {resume!r}")
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
        n = X.shape[0]
        prog = net._prog_for(X)
        for rows in {min(batch_size, n), n % batch_size}:  # every batch size the epochs will see
            if rows:
                prog.check_batch(rows, net.training)
        _limits.require(_limits.network_bytes(net.n_params, prog.width, min(batch_size, n) + min(n, self.eval_chunk),
                                              net.dtype.itemsize),
                        f"training with batch_size={batch_size} ({net.n_params:,} parameters, "
                        f"{prog.width} workspace elements per row)", "batch_size or the network's size")
        per_epoch = -(-n // batch_size) * (1 if window is None else -(-(X.shape[1] // net.n_in) // window))
        steps = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
        kept = epochs if max_steps is None else min(epochs, -(-steps // per_epoch) + 1)  # epochs that can run
        _limits.require(_limits.history_bytes(steps, kept),  # (every step is kept in the History)
                        f"a fit of {_limits.count(epochs)} epochs ({_limits.count(steps)} steps)", "epochs (or set max_steps)")
        if progress:
            desc = progress if isinstance(progress, str) else "training"
        run = self._begin_run(X, Y, batch_size, shuffle, seed, None if tbptt is None else int(tbptt), resume)
        history = run.history
        if progress:
            self._bar = _progress.bar(epochs * per_epoch, desc, "step", force=True)
            if history.loss:  # a resumed run: the bar starts where it stopped
                self._bar.update(len(history.loss))
        if net._dev is not None:  # on a device: the data sets are copied there once for the whole fit
            net._dev.hold(X, Y, Xv, Yv)
        clock = time.perf_counter
        # the epoch kernel is worth compiling for the cached built-in kernel set only (a set with
        # user activations is compiled in every process: a few seconds more for microseconds a step)
        compiled = (self.compiled_epochs and self.monitor is None and step_callback is None and window is None
                    and type(self)._step is Trainer._step and is_cached(net._kernels))
        n_batches = -(-n // batch_size)
        saved = [len(history.loss)]  # the step count at the last checkpoint

        def save_due():
            steps = len(history.loss)
            return (checkpoint is not None and every is not None and steps != saved[0]
                    and steps // every > saved[0] // every)

        def save():
            self.save_checkpoint(checkpoint)
            saved[0] = len(history.loss)

        while run.epoch < epochs and not history.stopped:
            epoch = run.epoch
            if max_steps is not None and len(history.loss) >= max_steps:
                history.stopped = f"reached max_steps={max_steps} after epoch {epoch}"
                break
            if run.order is None:
                run.order = run.rng.permutation(n) if shuffle else np.arange(n)
                run.batch, run.total, run.elapsed = 0, 0.0, 0.0
            t_epoch = clock() - run.elapsed
            while run.batch < n_batches:
                steps = len(history.loss)
                hi = run.batch + 1
                if compiled:  # as many batches as the next checkpoint and max_steps allow, in one call
                    hi = n_batches
                    if every is not None and checkpoint is not None:
                        hi = min(hi, run.batch + every - steps % every)
                    if max_steps is not None:
                        hi = min(hi, run.batch + max_steps - steps)
                idx = run.order[run.batch * batch_size:min(hi * batch_size, n)]
                if compiled:
                    run.total = self._epoch(X, Y, idx, batch_size, epoch, history, run.total)
                    if self._bar is not None:
                        self._bar.update(len(history.loss) - steps,
                                         f"epoch {epoch + 1}/{epochs}, loss {run.total / n:.4g}")
                    run.batch = hi if not history.stopped else run.batch + len(history.loss) - steps
                elif window is not None:
                    xb, yb = np.ascontiguousarray(X[idx]), np.ascontiguousarray(Y[idx])
                    run.total += self._tbptt_batch(xb, yb, window, epoch, history, step_callback) * len(idx)
                    run.batch += 1
                else:
                    if net._dev is not None and net._dev.held(X) is not None:  # gathered on the device
                        xb, yb = net._dev.batch(X, Y, run.order, run.batch * batch_size, idx.size)
                    else:
                        xb, yb = np.ascontiguousarray(X[idx]), np.ascontiguousarray(Y[idx])
                    t0 = clock()
                    loss = self._step(xb, yb)
                    history.step_time.append(clock() - t0)
                    run.batch += 1
                    if self._record(loss, epoch, history, step_callback):
                        run.total += loss * len(idx)
                run.elapsed = clock() - t_epoch
                if history.stopped:
                    break
                if run.batch < n_batches:  # a checkpoint or a stop at the end of the epoch waits for it
                    if save_due():
                        save()
                    if max_steps is not None and len(history.loss) >= max_steps:
                        history.stopped = (f"reached max_steps={max_steps} at epoch {epoch + 1}, "
                                           f"batch {run.batch} of {n_batches}")
                        break
            if history.stopped:
                break
            self._end_epoch(X, Y, Xv, Yv, n, run.total, t_epoch, epoch, history)
            run.epoch, run.order, run.batch = epoch + 1, None, 0
            if callback is not None and callback(epoch, history):
                history.stopped = f"stopped by callback after epoch {epoch + 1}"
            if checkpoint is not None and (every is None or save_due()):
                save()
        if checkpoint is not None and saved[0] != len(history.loss):
            save()
        return history

    def _begin_run(self, X, Y, batch_size, shuffle, seed, tbptt, resume):
        """The run this fit trains: the one restored from a checkpoint (checked to be the same
        data and settings), or a new one."""
        fingerprint = _fingerprint(X, Y)
        restored, self._restored = self._restored, None
        if resume is False or (resume is None and restored is None):
            run = _Run(X.shape[0], batch_size, bool(shuffle), seed, tbptt, fingerprint,
                       np.random.default_rng(seed), History())
        elif restored is None:
            raise HyperparameterError("resume=True needs a trainer from nnlab.load_checkpoint with a run to continue")
        else:
            diff = [what for what, a, b in (("training data", fingerprint, restored.fingerprint),
                                            ("batch_size", batch_size, restored.batch_size),
                                            ("shuffle", bool(shuffle), restored.shuffle),
                                            ("seed", seed, restored.seed), ("tbptt", tbptt, restored.tbptt)) if a != b]
            if diff:
                self._restored = restored
                raise HyperparameterError(
                    f"this trainer continues a run saved in a checkpoint, which had different {', '.join(diff)} "
                    f"(batch_size={restored.batch_size}, shuffle={restored.shuffle}, seed={restored.seed}, "
                    f"tbptt={restored.tbptt}, {restored.n} training rows): give fit the same to continue it, or "
                    "resume=False to start a new run")
            run = restored
            run.history.stopped = ""
        self._run = run
        return run

    def _record(self, loss, epoch, history, step_callback):
        """History entries of one step of the per-step loop; False (and ``history.stopped``) when
        its update was not applied."""
        history.loss.append(loss)
        history.grad_norm.append(self.last.grad_norm)
        if not self.last.applied:
            history.stopped = (f"non-finite {_what(loss, self.last.grad_norm)} at "
                               f"epoch {epoch + 1}, step {len(history.loss)}; weights kept")
            return False
        if self._bar is not None:
            self._bar.update(1, f"epoch {epoch + 1}, loss {loss:.4g}")
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

    def _epoch(self, X, Y, order, batch_size, epoch, history, total=0.0):
        """The batches of rows ``order`` (an epoch, or a run of whole batches of one) through
        ``train_epoch``; fills ``history`` as the per-step loop does and returns ``total`` plus
        their Σ loss·rows, added step by step as the per-step loop adds them. Everything a step of
        :meth:`_step` does in Python (hyperparameters, noise seeds, optimizer bookkeeping) is done
        for all steps around it."""
        net, opt = self.net, self.optimizer
        n = order.size
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
        batch_size = min(batch_size, X.shape[0])  # (the same batches; a larger one only sizes the buffers)
        buf = self._epoch_buffers(batch_size, X.shape[1], Y.shape[1], n_steps)
        xb, yb, outs, cycles = buf
        prog = net._prog_for(X)
        ws, dws = net._workspace(batch_size, prog.width)
        t_call = time.perf_counter()
        run = getattr(net._kernels, _epoch_name(code), None) or net._kernels.train_epoch  # (as in _step)
        if net._kernels is not self._lg_kernels:
            self._lg_kernels = CK.ensure_loss_and_grad(net._kernels, net.dtype)
        done = run(prog.ops, prog.hp, prog.tens, net._store, self._grads, ws, dws, X, Y,
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
        if m == n and not is_cached(net._kernels):  # a user-activation kernel set: no extra kernel to compile
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
