"""The Gaussian RBF layer: A_j = exp(−γ‖x − c_j‖²) for learnable centres c_j (docs/layers.md).

Initialisation that does not start saturated: for inputs of unit variance per feature (standardized
data) and centres drawn like them, c ~ N(0, 1) (``init``'s default) or rows of the data
(:meth:`RBF.init_centers`), each difference x_i − c_ij has variance 2, so Z = ‖x − c‖² is about
2·n_in. A fixed γ = 1 then gives outputs of order e^(−2 n_in): every unit ~0 and no gradient as
soon as n_in exceeds a few features, whatever the centres' spread (x's own variance alone gives
E[A] <= 3^(−n_in/2)). ``gamma="auto"`` (the default) sets γ = 1/(2·n_in), so γZ is about 1 and,
for x ~ N(0, I) and c ~ N(0, I), E[A] = (1 + 2/n_in)^(−n_in/2), between e^(−1) ≈ 0.37 and
3^(−1/2) ≈ 0.58 for every n_in: neither all ~0 nor all ~1, and the gradient flows.
"""

import numpy as np

from .. import _validate
from .. import init as _init
from ..errors import HyperparameterError, ShapeError
from ..kernels.layout import HP_GAMMA, KIND_RBF
from ._base import Layer, register


def auto_gamma(n_in):
    """γ = 1/(2·n_in): γ·E‖x − c‖² = 1 for unit-variance inputs and centres."""
    return 1.0 / (2.0 * n_in)


@register
class RBF(Layer):
    """A_j = exp(−γ‖x − c_j‖²), j < n_centers: Gaussian radial basis units with learnable centres.

    Parameters ``c`` (n_in, n_centers), column j the centre c_j, from ``init`` (default N(0, 1),
    centres like standardized data); with ``learnable_gamma=True`` also ``gamma`` (1,). ``gamma``
    > 0, or ``"auto"`` (the default): 1/(2·n_in), the width for which standardized inputs start
    in the middle of the Gaussian (see the module notes and docs/layers.md). A learnable γ is used
    as it is: keep it positive (a negative γ makes the units grow with the distance); ``gamma``
    (the attribute) is then its starting value and ``net.params()`` holds the learned one. On a sequence
    (N, T, n_in) it maps every step. :meth:`init_centers` places the centres on rows of data.

    >>> import nnlab as nl
    >>> layer = nl.RBF(8, 4)
    >>> layer.gamma
    0.0625
    """

    def __init__(self, n_in, n_centers, gamma="auto", learnable_gamma=False, init=None):
        self.n_in = _validate.positive_int(n_in, "RBF n_in")
        self.n_centers = self.n_out = _validate.positive_int(n_centers, "RBF n_centers")
        if isinstance(gamma, str):
            if gamma != "auto":
                raise HyperparameterError(f"RBF gamma must be a number > 0 or 'auto'; got {gamma!r}")
            gamma = auto_gamma(self.n_in)
        self.gamma = _validate.real_scalar(gamma, "RBF gamma", positive=True)
        self.learnable_gamma = bool(learnable_gamma)
        self.init = _init.get("normal", std=1.0) if init is None else _init.get(init)
        self._params = {}

    def __repr__(self):
        extra = ", learnable_gamma=True" if self.learnable_gamma else ""
        return f"RBF({self.n_in}, {self.n_centers}, gamma={self.gamma}{extra})"

    def param_specs(self):
        specs = [("c", (self.n_in, self.n_centers), self.init)]
        if self.learnable_gamma:
            specs.append(("gamma", (1,), _init.get(self.gamma)))
        return specs

    def lower(self, prog, x):
        off = prog.params(self)
        z = prog.like(x, self.n_centers)
        a = prog.like(x, self.n_centers)
        prog.op(KIND_RBF, self, x=x, z=z, a=a, nin=self.n_in, nout=self.n_centers, w=off["c"],
                ap=off.get("gamma", -1), wn=self.n_in * self.n_centers, steps=prog.steps(x),
                hp={HP_GAMMA: self.gamma})
        return a

    def init_centers(self, X, seed=0):
        """Set the centres to rows of ``X`` ((N, n_in), or (N, T, n_in): its N·T rows), drawn
        without replacement (with replacement when there are fewer rows than centres) by
        ``np.random.default_rng(seed)``: the classic initialisation of an RBF network. The layer
        must be in a network (whose parameters it writes). Returns the chosen row indices."""
        c = self._params.get("c")
        if c is None:
            raise HyperparameterError(f"{self!r}.init_centers needs the layer to be in a network "
                                      f"(nl.Sequential([...]) owns its parameters)")
        X = _validate.as_float_array(X, "X", dtype=np.float64)
        if X.ndim not in (2, 3) or X.shape[-1] != self.n_in:
            raise ShapeError(f"{self!r}.init_centers needs X of shape (N, {self.n_in}) or (N, T, {self.n_in}); "
                             f"got {X.shape}")
        rows = X.reshape(-1, self.n_in)
        if rows.shape[0] == 0:
            raise ShapeError("X has no rows")
        if seed is not None:
            seed = _validate.positive_int(seed, "seed", minimum=0)
        rng = np.random.default_rng(seed)
        idx = rng.choice(rows.shape[0], size=self.n_centers, replace=rows.shape[0] < self.n_centers)
        c[...] = rows[idx].T
        return idx

    def config(self):
        return {"type": "RBF", "n_in": self.n_in, "n_centers": self.n_centers, "gamma": self.gamma,
                "learnable_gamma": self.learnable_gamma, "init": self.init.config()}
