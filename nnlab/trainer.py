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

On a non-finite loss or gradient norm, ``on_nonfinite="stop"`` (default) skips that update, keeps
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
from .errors import HyperparameterError, NonFiniteError, ShapeError
from .kernels import optim_cpu as OK
from .kernels.layout import LOSS_BCE, LOSS_SOFTMAX_CE

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
        if on_nonfinite not in ("stop", "raise", "ignore"):
            raise HyperparameterError(f"on_nonfinite must be 'stop', 'raise' or 'ignore'; got {on_nonfinite!r}")
        self.on_nonfinite = "raise" if clip_raises else on_nonfinite
        self._offsets = np.array([o for o, _ in net._shapes] + [net.n_params], dtype=np.int64)
        self._grads = np.zeros_like(net._flat)
        self._out = np.zeros(3)
        self._no_monitor = (np.zeros(1, net.dtype), np.zeros((1, 2)), np.zeros((1, 1)))
        self.last = None

    def step(self, X, y):
        """One fused compiled training step on the batch (X, y); returns its (pre-update) loss."""
        X, Y = self.net._prepare(X, y)
        return self._step(X, Y)

    def _step(self, X, Y):
        net, opt, mon = self.net, self.optimizer, self.monitor
        code, hp, t, state = opt.begin_flat(net._flat)
        if self.regularizer is not None:
            slot, lam = self.regularizer
            hp[slot] += lam
        ws, dws = net._workspace(X.shape[0])
        training = net.training
        net._kernels.train_step(net._ops, net._hp, net._tens, net._flat, self._grads, ws, dws, X, Y,
                                net._loss_code, training, net._noise_seed(training),
                                self.clip_kind, self.clip_value, self._offsets,
                                code, hp, t, state, self.on_nonfinite != "ignore", self._out,
                                mon is not None, *(mon.buffers() if mon is not None else self._no_monitor))
        loss, norm, applied = float(self._out[0]), float(self._out[1]), bool(self._out[2])
        self.last = StepInfo(loss, norm, applied)
        if mon is not None:
            mon.commit(loss, norm, applied, X.shape[0])
        if applied:
            opt.end_step()
        elif self.on_nonfinite == "raise":
            raise NonFiniteError(f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} "
                                 f"(loss {loss}, gradient norm {norm}); weights kept from the last finite step")
        return loss

    @property
    def grads(self):
        """The gradients of the last step (after clipping), aligned with ``net.params()``."""
        return [self._grads[o:o + int(np.prod(s))].reshape(s) for o, s in self.net._shapes]

    def evaluate(self, X, y):
        """(loss, accuracy) on (X, y) in eval mode; accuracy is None for regression losses."""
        net = self.net
        X, Y = net._prepare(X, y)
        was = net.training
        net.eval()
        try:
            out = net.forward(X)
            loss = net.loss(X, y)
        finally:
            net.training = was
        return loss, _accuracy(net._loss_code, out, Y)

    def fit(self, X, y, epochs=1, batch_size=32, shuffle=True, seed=0, validation_split=0.0,
            validation_data=None, callback=None, step_callback=None):
        """Train for ``epochs`` passes; batch_size=1 is online training, batch_size >= N full-batch.

        Each epoch visits the rows in the order ``np.random.default_rng(seed).permutation(N)`` (a
        new permutation per epoch from the one generator; ``shuffle=False`` keeps the given
        order) in batches of ``batch_size``, the last one smaller when N is not a multiple.
        ``validation_split`` holds out the last fraction of (X, y) (before shuffling, as Keras);
        ``callback(epoch, history)`` runs after every epoch (return True to stop);
        ``step_callback(epoch, step, loss)`` after every applied step (``step`` counts from 1
        over the whole run). Returns a :class:`History`.
        """
        net = self.net
        X, Y = net._prepare(X, y)
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
            Xv, Yv = net._prepare(*validation_data)
        else:
            Xv = Yv = None
        rng = np.random.default_rng(seed)
        n = X.shape[0]
        history = History()
        clock = time.perf_counter
        for epoch in range(epochs):
            t_epoch = clock()
            order = rng.permutation(n) if shuffle else np.arange(n)
            total = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                xb, yb = np.ascontiguousarray(X[idx]), np.ascontiguousarray(Y[idx])
                t0 = clock()
                loss = self._step(xb, yb)
                history.step_time.append(clock() - t0)
                history.loss.append(loss)
                history.grad_norm.append(self.last.grad_norm)
                if not self.last.applied:
                    history.stopped = (f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at "
                                       f"epoch {epoch + 1}, step {len(history.loss)}; weights kept")
                    break
                total += loss * len(idx)
                if step_callback is not None:
                    step_callback(epoch, len(history.loss), loss)
            if history.stopped:
                break
            history.epoch_loss.append(total / n)
            acc = self._eval_arrays(X, Y)[1]
            if acc is not None:
                history.accuracy.append(acc)
            if Xv is not None:
                vl, va = self._eval_arrays(Xv, Yv)
                history.val_loss.append(vl)
                if va is not None:
                    history.val_accuracy.append(va)
            history.epoch_time.append(clock() - t_epoch)
            if callback is not None and callback(epoch, history):
                history.stopped = f"stopped by callback after epoch {epoch + 1}"
                break
        return history

    def _eval_arrays(self, X, Y):
        net = self.net
        ws, dws = net._workspace(X.shape[0])
        loss = float(net._kernels.loss_only(net._ops, net._hp, net._tens, net._flat, ws, dws, X, Y,
                                            net._loss_code, False, -1))
        out = net._tensor(ws, net._out_tensor, X.shape[0])
        return loss, _accuracy(net._loss_code, out, Y)


def _accuracy(loss_code, out, Y):
    if loss_code == LOSS_SOFTMAX_CE:
        return float(np.mean(np.argmax(out, axis=1) == Y[:, 0].astype(np.int64)))
    if loss_code == LOSS_BCE:
        return float(np.mean((out > 0) == (Y > 0.5)))
    return None
