"""Dense (fully connected) layers and activations as layers of their own.

``Dense``: Z = X W + b, A = a·θ(Z), W of shape (n_in, n_out); on a sequence (N, T, F) it acts on
every step (the same W for every t). ``Activation``: A = a·θ(X), e.g. after a normalisation layer.
Backward (docs/backprop.md): E = dA ⊙ a·θ'(Z), dW = Xᵀ E, db = Σ_rows E, dX = E Wᵀ.
"""

from .. import _validate, activations
from .. import init as _init
from ..errors import HyperparameterError
from ..kernels.layout import KIND_DENSE, NOISE_NONE, NOISE_NORMAL, NOISE_UNIFORM
from ._base import Layer, register

_NOISE = {None: NOISE_NONE, "uniform": NOISE_UNIFORM, "normal": NOISE_NORMAL}


def lower_dense(prog, layer, x, nin, nout, w, b, act, act_prefix="act.", label=None):
    """Append one dense op (``w`` = -1: no product, Z = X) reading tensor ``x``; returns its A.

    ``act`` is the op's :class:`~nnlab.activations.Activation`; its learnable hyperparameters are
    the layer's parameters ``{act_prefix}{name}``.
    """
    z = prog.like(x, nout)
    a = prog.like(x, nout)
    noise = prog.like(x, nout) if act.entry.noise else -1
    off = prog.params(layer)
    ap = off.get(f"{act_prefix}{act.param_names[0]}", -1) if act.param_names else -1
    i = prog.op(KIND_DENSE, layer, label=label, activation=act, x=x, z=z, a=a, nin=nin, nout=nout, w=w, b=b, act=act.code, ap=ap,
                amask=act.learnable_mask(), noise=noise, nkind=_NOISE[act.entry.noise], steps=prog.steps(x),
                wn=nin * nout if w >= 0 else 0, bn=nout if b >= 0 else 0)
    prog.set_hp(i, act.slots())
    return a


def act_param_specs(act, prefix="act."):
    return [(f"{prefix}{name}", (1,), None) for name in act.param_names]


@register
class Dense(Layer):
    """Fully connected layer A = f(X W + b), W of shape (n_in, n_out).

    ``activation`` is a name or an :class:`~nnlab.activations.Activation`; ``init`` a weight
    initializer name or :class:`~nnlab.init.Initializer` (default xavier_uniform, as Keras);
    ``bias_init`` a float (e.g. 0.1 against dead ReLUs) or initializer. On a sequence
    (N, T, n_in) it maps every step: (N, T, n_out).
    """

    def __init__(self, n_in, n_out, activation="identity", init="xavier_uniform", bias=True,
                 bias_init=0.0):
        self.n_in = _validate.positive_int(n_in, "Dense n_in")
        self.n_out = _validate.positive_int(n_out, "Dense n_out")
        self.activation = activations.get(activation).copy()  # learned values are per layer
        self.init = _init.get(init)
        self.bias = bool(bias)
        self.bias_init = _init.get(bias_init)
        if self.bias_init.name not in ("zeros", "ones", "constant", "normal", "uniform"):
            raise HyperparameterError(
                f"bias_init must be a constant, zeros, ones, normal or uniform; got {self.bias_init.name!r}")

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out}, activation={self.activation!r})"

    def param_specs(self):
        specs = [("W", (self.n_in, self.n_out), self.init)]
        if self.bias:
            specs.append(("b", (self.n_out,), self.bias_init))
        return specs + act_param_specs(self.activation)

    def lower(self, prog, x):
        off = prog.params(self)
        return lower_dense(prog, self, x, self.n_in, self.n_out, off["W"], off.get("b", -1), self.activation)

    def config(self):
        return {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
                "activation": self.activation.config(), "init": self.init.config(),
                "bias": self.bias, "bias_init": self.bias_init.config()}


@register
class Activation(Layer):
    """An activation as a layer of its own: A = a·θ(X), elementwise, any width.

    ``activation`` is a name or an :class:`~nnlab.activations.Activation` (learnable
    hyperparameters, e.g. prelu's α, are this layer's parameters ``act.{name}``).

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.Dense(3, 4), nl.Activation("relu")], seed=0)
    >>> net.param_names()
    ['0.W', '0.b']
    """

    def __init__(self, activation="relu"):
        self.activation = activations.get(activation).copy()

    def __repr__(self):
        return f"Activation({self.activation!r})"

    def param_specs(self):
        return act_param_specs(self.activation)

    def lower(self, prog, x):
        f = prog.features(x)
        return lower_dense(prog, self, x, f, f, -1, -1, self.activation)

    def config(self):
        return {"type": "Activation", "activation": self.activation.config()}
