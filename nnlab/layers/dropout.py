"""Dropout layers: random masks in training, the identity in evaluation (docs/layers.md).

``Dropout(p)``: inverted dropout (torch.nn.Dropout): A = X·m/(1 − p) with m ~ Bernoulli(1 − p),
so E[A] = X and nothing needs rescaling at evaluation. ``AlphaDropout(p)``: torch.nn.AlphaDropout,
the dropout for SELU networks: a dropped entry becomes SELU's saturation value −α, then an affine
map a·(·) + b restores mean 0 and variance 1. Both act elementwise on any width, on 2-D data and on
every step of a sequence, and take their masks from the op's U(0,1) noise (m = [u >= p]), drawn
per call from the network's seed (``net.fixed_noise_seed`` repeats one draw on every call).
"""

from .. import _validate
from ..errors import HyperparameterError
from ..kernels.layout import HP_P, KIND_ALPHA_DROPOUT, KIND_DROPOUT, NOISE_NONE, NOISE_UNIFORM
from ._base import Layer, register


def _probability(p, name):
    p = _validate.real_scalar(p, f"{name} p")
    if not 0.0 <= p < 1.0:
        raise HyperparameterError(f"{name} p is the drop probability and must be in [0, 1); got {p}")
    return p


class _DropoutBase(Layer):
    kind = None

    def __init__(self, p):
        self.p = _probability(p, type(self).__name__)

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"

    def lower(self, prog, x):
        f = prog.features(x)
        a = prog.like(x, f)
        # p = 0 keeps every entry: no noise to draw, the op copies in both modes
        noise = prog.like(x, f) if self.p > 0 else -1
        prog.op(self.kind, self, x=x, a=a, nin=f, nout=f, noise=noise,
                nkind=NOISE_UNIFORM if noise >= 0 else NOISE_NONE, steps=prog.steps(x), hp={HP_P: self.p})
        return a

    def config(self):
        return {"type": type(self).__name__, "p": self.p}


@register
class Dropout(_DropoutBase):
    """Inverted dropout: in training A = X·m/(1 − p), m = [u >= p] with u ~ U(0,1) per entry
    (each entry is dropped with probability p); in evaluation A = X. ``p`` in [0, 1).

    >>> import numpy as np, nnlab as nl
    >>> net = nl.Sequential([nl.Dense(3, 4), nl.Dropout(0.5)], seed=0)
    >>> X = np.ones((2, 3))
    >>> bool((net.eval().forward(X) == net.forward(X)).all())   # eval: the identity
    True
    """

    kind = KIND_DROPOUT

    def __init__(self, p=0.5):
        super().__init__(p)


@register
class AlphaDropout(_DropoutBase):
    """Alpha dropout (torch.nn.AlphaDropout), for SELU networks: in training a dropped entry is set
    to SELU's saturation value α' = −1.7580993408473766 and A = a·(X·m + α'(1 − m)) + b with
    a = 1/sqrt((α'²p + 1)(1 − p)), b = −a·α'·p, m = [u >= p]; this keeps mean 0 and variance 1 of
    its input. In evaluation A = X. ``p`` in [0, 1)."""

    kind = KIND_ALPHA_DROPOUT

    def __init__(self, p=0.1):
        super().__init__(p)
