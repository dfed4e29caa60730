"""Maxout: each output unit is the largest of k affine pieces of the input (docs/layers.md).

Z = X W + b with W of shape (n_in, n_out·k) and b (n_out·k,); piece m of unit j is column j·k + m
(the pieces of a unit are adjacent columns); A_j = max_m Z_{j·k+m}. The backward pass hands each
unit's error to its winning piece unchanged: a derivative of exactly 1 on the path the gradient
takes, whatever the input -- no saturation, and no unit is dead while any piece is alive.
"""

from .. import _validate
from .. import init as _init
from ..errors import HyperparameterError
from ..kernels.layout import KIND_MAXOUT
from ._base import Layer, register


@register
class Maxout(Layer):
    """A_j = max_{m<k} (X W + b)_{j·k+m}: ``n_out`` units of ``k`` pieces each.

    Parameters ``W`` (n_in, n_out·k) from ``init`` (default xavier_uniform over that shape) and
    ``b`` (n_out·k,) from ``bias_init`` (default 0). ``k`` >= 1 (k = 1 is an affine layer). On a
    sequence (N, T, n_in) it maps every step.

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.Maxout(4, 3, k=2)], seed=0)
    >>> [p.shape for p in net.params()]
    [(4, 6), (6,)]
    """

    def __init__(self, n_in, n_out, k=2, init="xavier_uniform", bias_init=0.0):
        self.n_in = _validate.positive_int(n_in, "Maxout n_in")
        self.n_out = _validate.positive_int(n_out, "Maxout n_out")
        self.k = _validate.positive_int(k, "Maxout k (pieces per unit)")
        self.init = _init.get(init)
        self.bias_init = _init.get(bias_init)
        if self.bias_init.name not in ("zeros", "ones", "constant", "normal", "uniform"):
            raise HyperparameterError(
                f"Maxout bias_init must be a constant, zeros, ones, normal or uniform; got {self.bias_init.name!r}")

    def __repr__(self):
        return f"Maxout({self.n_in}, {self.n_out}, k={self.k})"

    def param_specs(self):
        width = self.n_out * self.k
        return [("W", (self.n_in, width), self.init), ("b", (width,), self.bias_init)]

    def lower(self, prog, x):
        width = self.n_out * self.k
        off = prog.params(self)
        z = prog.like(x, width)
        a = prog.like(x, self.n_out)
        prog.op(KIND_MAXOUT, self, x=x, z=z, a=a, nin=self.n_in, nout=self.n_out, k=self.k, w=off["W"],
                b=off["b"], wn=self.n_in * width, bn=width, steps=prog.steps(x))
        return a

    def config(self):
        return {"type": "Maxout", "n_in": self.n_in, "n_out": self.n_out, "k": self.k,
                "init": self.init.config(), "bias_init": self.bias_init.config()}
