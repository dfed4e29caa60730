"""Highway layers: y = T·H(x) + (1 − T)·x, a learned gate between a transform and the input.

H = f(x W_H + b_H) and T = σ(x W_T + b_T) are two dense ops; a gate op mixes them with x. The
carry term (1 − T)·x hands the output error to the input scaled by 1 − T instead of through f'
and W: with b_T negative (``gate_bias=-2``: T ≈ 0.12 at the start) a deep stack of highway layers
starts close to the identity and its gradient reaches the first layers (docs/layers.md).
"""

from .. import _validate, activations
from .. import init as _init
from ..kernels.layout import KIND_GATE
from ._base import Layer, register
from .dense import act_param_specs, lower_dense


@register
class Highway(Layer):
    """y = T ⊙ H(x) + (1 − T) ⊙ x with H = f(x W_H + b_H), T = σ(x W_T + b_T), all (n, n).

    Parameters ``W_H``, ``b_H``, ``W_T``, ``b_T`` (b_T starts at ``gate_bias``, b_H at 0; the
    weights from ``init``), then any learnable hyperparameter of ``activation`` (``act.{name}``).
    On a sequence (N, T, n) it acts on every step.

    >>> import nnlab as nl
    >>> nl.Sequential([nl.Highway(4)], seed=0).param_names()
    ['0.W_H', '0.b_H', '0.W_T', '0.b_T']
    """

    def __init__(self, n, activation="relu", gate_bias=-2.0, init="xavier_uniform"):
        self.n = _validate.positive_int(n, "Highway n")
        self.n_in = self.n_out = self.n
        self.activation = activations.get(activation).copy()
        self.gate_bias = _validate.real_scalar(gate_bias, "Highway gate_bias")
        self.init = _init.get(init)

    def __repr__(self):
        return f"Highway({self.n}, activation={self.activation!r}, gate_bias={self.gate_bias})"

    def param_specs(self):
        n = self.n
        return [("W_H", (n, n), self.init), ("b_H", (n,), _init.get("zeros")),
                ("W_T", (n, n), self.init), ("b_T", (n,), _init.get(self.gate_bias))] + act_param_specs(self.activation)

    def lower(self, prog, x):
        n = self.n
        off = prog.params(self)
        h = lower_dense(prog, self, x, n, n, off["W_H"], off["b_H"], self.activation,
                        label=f"Highway H ({self.activation.label})")
        t = lower_dense(prog, self, x, n, n, off["W_T"], off["b_T"], activations.get("sigmoid"),
                        label="Highway T (sigmoid)")
        a = prog.like(x, n)
        prog.op(KIND_GATE, self, x=x, x2=h, x3=t, a=a, nin=n, nout=n, steps=prog.steps(x))
        return a

    def config(self):
        return {"type": "Highway", "n": self.n, "activation": self.activation.config(),
                "gate_bias": self.gate_bias, "init": self.init.config()}
