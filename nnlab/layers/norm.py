"""Normalisation layers: batch normalisation (per feature over the batch) and layer normalisation
(per row over its features), each followed by a learned affine map γ·x̂ + β.

``BatchNorm(n)`` is torch.nn.BatchNorm1d(n): in training it normalises with the batch's mean and
biased variance (over the N rows, or the N·T rows of a sequence batch) and moves the running
estimates (variance unbiased) once per training step; in eval it normalises with the running
estimates. ``LayerNorm(n)`` is torch.nn.LayerNorm(n): each row (each step) over its n features,
the same in training and eval. Equations forward and backward: docs/layers.md and
:mod:`nnlab.kernels.norm`.
"""

from .. import _validate
from .. import init as _init
from ..errors import HyperparameterError, NnlabError, ShapeError
from ..kernels.layout import HP_EPS, HP_MOMENTUM, KIND_BATCHNORM, KIND_LAYERNORM
from ._base import Layer, register


def _eps(eps, name):
    return _validate.real_scalar(eps, f"{name} eps", positive=True)


class _Norm(Layer):
    """What both normalisation layers share: width n in and out, γ (ones) and β (zeros)."""

    def param_specs(self):
        return [("gamma", (self.n_in,), _init.get("ones")), ("beta", (self.n_in,), _init.get("zeros"))]

    def _lower(self, prog, x, kind, aux, hp, buf=-1):
        n = self.n_in
        if prog.features(x) != n:  # (Sequential's width check catches this first)
            raise ShapeError(f"{prog.where(self)} expects {n} input features; it gets {prog.features(x)}")
        off = prog.params(self)
        z = prog.like(x, n)
        a = prog.like(x, n)
        prog.op(kind, self, x=x, z=z, a=a, nin=n, nout=n, w=off["gamma"], b=off["beta"], wn=n, bn=n,
                steps=prog.steps(x), aux=aux, buf=buf, hp=hp)
        return a


@register
class BatchNorm(_Norm):
    """Batch normalisation of n features: A = γ·(X − μ)/√(σ² + ε) + β, as torch.nn.BatchNorm1d(n).

    Training mode: μ, σ² are the batch's mean and biased variance per feature (over the N rows;
    over the N·T rows of a sequence batch (N, T, n)), and a training step (``loss_and_grads``,
    ``Trainer.step``, ``fit``) moves the running estimates: running ← (1 − momentum)·running +
    momentum·batch, the variance unbiased (·m/(m − 1)). ``forward`` and ``loss`` never move them.
    Eval mode: μ, σ² are the running estimates. Parameters ``gamma`` (ones), ``beta`` (zeros);
    buffers ``running_mean`` (zeros), ``running_var`` (ones), live as :attr:`running_mean` and
    :attr:`running_var` once the layer is in a network. A training batch of one row (one value
    per feature) raises :class:`~nnlab.errors.ShapeError`, as torch does.

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.Dense(3, 4), nl.BatchNorm(4), nl.Activation("relu")], seed=0)
    >>> net.param_names(), net.buffer_names()
    (['0.W', '0.b', '1.gamma', '1.beta'], ['1.running_mean', '1.running_var'])
    """

    def __init__(self, n, eps=1e-5, momentum=0.1):
        self.n_in = self.n_out = _validate.positive_int(n, "BatchNorm n")
        self.eps = _eps(eps, "BatchNorm")
        self.momentum = _validate.real_scalar(momentum, "BatchNorm momentum")
        if not 0.0 <= self.momentum <= 1.0:
            raise HyperparameterError(f"BatchNorm momentum must be in [0, 1]; got {self.momentum}")

    def __repr__(self):
        extra = (f", eps={self.eps:g}" if self.eps != 1e-5 else "") + \
            (f", momentum={self.momentum:g}" if self.momentum != 0.1 else "")
        return f"BatchNorm({self.n_in}{extra})"

    def buffer_specs(self):
        return [("running_mean", (self.n_in,), 0.0), ("running_var", (self.n_in,), 1.0)]

    def _buffer(self, name):
        views = getattr(self, "_buffers", None)
        if not views:
            raise NnlabError(f"{self!r} is not in a network yet: its {name} lives in the network's store; "
                             f"build nl.Sequential([...]) with it first")
        return views[name]

    @property
    def running_mean(self):
        """The running mean per feature: a live view into the network (writing into it changes it)."""
        return self._buffer("running_mean")

    @property
    def running_var(self):
        """The running (unbiased) variance per feature: a live view into the network."""
        return self._buffer("running_var")

    def check_batch(self, n_rows, training, where=""):
        if training and n_rows < 2:
            raise ShapeError(f"{where or repr(self)}: expected more than 1 value per feature when training "
                             f"(a batch of {n_rows} row{'s' if n_rows != 1 else ''}); use batches of 2 rows or "
                             f"more, or eval mode (net.eval())")

    def lower(self, prog, x):
        aux = prog.tensor(self.n_in + 1)  # s per feature, then the train/eval flag
        prog.batch_check(self, prog.steps(x))
        return self._lower(prog, x, KIND_BATCHNORM, aux, {HP_EPS: self.eps, HP_MOMENTUM: self.momentum},
                           buf=prog.buffers(self)["running_mean"])

    def config(self):
        return {"type": "BatchNorm", "n": self.n_in, "eps": self.eps, "momentum": self.momentum}


@register
class LayerNorm(_Norm):
    """Layer normalisation over the last n features: A = γ·(x − μ_row)/√(σ²_row + ε) + β per row
    (per step of a sequence), biased variance, as torch.nn.LayerNorm(n); the same in training and
    eval. Parameters ``gamma`` (ones), ``beta`` (zeros).

    >>> import nnlab as nl
    >>> nl.Sequential([nl.Dense(3, 4), nl.LayerNorm(4)], seed=0).param_names()
    ['0.W', '0.b', '1.gamma', '1.beta']
    """

    def __init__(self, n, eps=1e-5):
        self.n_in = self.n_out = _validate.positive_int(n, "LayerNorm n")
        self.eps = _eps(eps, "LayerNorm")

    def __repr__(self):
        return f"LayerNorm({self.n_in}{f', eps={self.eps:g}' if self.eps != 1e-5 else ''})"

    def lower(self, prog, x):
        aux = prog.like(x, 1)  # s per row and step
        return self._lower(prog, x, KIND_LAYERNORM, aux, {HP_EPS: self.eps})

    def config(self):
        return {"type": "LayerNorm", "n": self.n_in, "eps": self.eps}
