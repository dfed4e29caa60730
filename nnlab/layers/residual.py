"""Residual blocks: y = x + F(x), F a short chain of layers (a skip over 2-3 layers).

The skip hands the block's output error to its input unchanged: ∂L/∂x = ∂L/∂y + (∂L/∂y)·∂F/∂x,
so the gradient that reaches early layers is at least the one at the block's output, whatever
F's derivatives do -- the remedy for vanishing gradients in deep stacks (docs/layers.md).
"""

from .. import init as _init
from ..errors import HyperparameterError, ShapeError
from ..kernels.layout import KIND_ADD
from ._base import Layer, register


@register
class Residual(Layer):
    """y = x + F(x) with F = ``layers`` applied in order.

    F must keep the width (and the steps of a sequence); when it does not, ``projection=True``
    puts a learned linear map on the skip, y = x P + F(x) with P of shape (n_in, n_out)
    (parameter ``W_proj``, initialised by ``init``). Parameters of F's layers are named
    ``"{i}.{j}.{name}"`` (block i, layer j inside it).

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.Residual([nl.Dense(4, 4, activation="relu"), nl.Dense(4, 4)])], seed=0)
    >>> net.param_names()
    ['0.0.W', '0.0.b', '0.1.W', '0.1.b']
    """

    def __init__(self, layers, projection=False, init="xavier_uniform"):
        layers = list(layers) if not isinstance(layers, Layer) else [layers]
        if not layers:
            raise ShapeError("Residual needs at least one layer in its block")
        for j, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise HyperparameterError(f"Residual: block layer {j} is not an nnlab layer: {layer!r}")
        self.layers = layers
        self.projection = bool(projection)
        self.init = _init.get(init)
        self.n_in = next((layer.n_in for layer in layers if layer.n_in is not None), None)
        self.n_out = self._chain(self.n_in, "Residual") if self.n_in is not None else None
        if self.projection and self.n_in is None:
            raise ShapeError("Residual(projection=True) needs a block whose widths are known: give its first "
                             "layer its input width")

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Residual([{inner}]{', projection=True' if self.projection else ''})"

    def _chain(self, n_in, where):
        f = n_in
        for j, layer in enumerate(self.layers):
            f = layer.out_features(f, f"{where} block layer {j} ({layer!r})")
        return f

    def out_features(self, n_in, where):
        f = self._chain(n_in, where)
        if f != n_in and not self.projection:
            raise ShapeError(f"{where}: its block maps {n_in} features to {f}, but the skip adds the input "
                             f"unchanged; keep the width or use Residual(..., projection=True)")
        return f

    def children(self):
        return list(self.layers)

    def param_specs(self):
        if not self.projection:
            return []
        return [("W_proj", (self.n_in, self.n_out), self.init)]

    def lower(self, prog, x):
        base = prog.path
        y = x
        for j, layer in enumerate(self.layers):
            prog.path = f"{base}.{j}"
            y = layer.lower(prog, y)
        prog.path = base
        if prog.steps(y) != prog.steps(x) or prog.seq(y) != prog.seq(x):
            raise ShapeError(f"{prog.where(self)}: its block changes the sequence length; the skip needs the "
                             f"block's output to have the input's steps")
        nin, nout = prog.features(x), prog.features(y)
        skip = x
        if self.projection:
            from ..activations import get
            from .dense import lower_dense
            skip = lower_dense(prog, self, x, nin, nout, prog.params(self)["W_proj"], -1, get("identity"),
                               label="Residual projection")
        a = prog.like(x, nout)
        prog.op(KIND_ADD, self, x=skip, x2=y, a=a, nin=nout, nout=nout, steps=prog.steps(x))
        return a

    def config(self):
        return {"type": "Residual", "layers": [layer.config() for layer in self.layers],
                "projection": self.projection, "init": self.init.config()}
