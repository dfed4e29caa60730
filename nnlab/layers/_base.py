"""The layer base class and the registry of layer types (name -> class, for model files)."""

from ..errors import ModelFileError, ShapeError, UnknownNameError

LAYER_TYPES = {}
"""Layer class name -> class; :func:`from_config` builds a layer from what ``config()`` wrote."""


def register(cls):
    """Class decorator: make ``cls`` loadable from a model file under its class name."""
    LAYER_TYPES[cls.__name__] = cls
    return cls


class Layer:
    """Base class. A layer declares its parameters and buffers and lowers itself to program ops.

    ``n_in`` / ``n_out`` are feature counts (per time step for sequences); ``None`` means "the
    width of the input" (Activation, Dropout, ...), resolved when the layer joins a network.
    """

    n_in = None
    n_out = None
    sequence_input = False  # True for layers that need (N, T, F) input (RNN, LSTM)

    @property
    def label(self):
        """A short name for tables: the class name, with the activation where there is one."""
        act = getattr(self, "activation", None)
        return f"{type(self).__name__} ({act.label})" if act is not None else type(self).__name__

    def param_specs(self):
        """[(name, shape, initializer)] in buffer order; an initializer is a callable
        ``(shape, rng) -> array`` (e.g. an :class:`~nnlab.init.Initializer`), or None for a
        learnable activation hyperparameter (it starts at its configured value)."""
        return []

    def buffer_specs(self):
        """[(name, shape, initial value)]: state that is saved and copied but not trained."""
        return []

    def children(self):
        """Layers nested inside this one (a residual block's chain); their parameters are named
        ``"{index}.{child index}.{name}"``."""
        return []

    def out_features(self, n_in, where):
        """The output width for ``n_in`` input features, or a ShapeError naming ``where``."""
        if self.n_in is not None and n_in != self.n_in:
            raise ShapeError(f"{where} expects {self.n_in} input features; it gets {n_in}")
        return self.n_out if self.n_out is not None else n_in

    def check_batch(self, n_rows, training, where=""):
        """Raise a :class:`~nnlab.errors.ShapeError` (naming ``where``) when this layer cannot run
        on a batch of ``n_rows`` rows (batch rows times steps) in this mode. Called before any
        kernel runs, for the layers that asked for it while lowering
        (:meth:`nnlab.program.ProgramBuilder.batch_check`: BatchNorm refuses one row in training)."""

    def lower(self, prog, x):
        """Append ops to ``prog`` reading tensor ``x``; return the output tensor id."""
        raise NotImplementedError

    def config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg):
        """The layer a ``config()`` dict (or a hand-written model description) describes: its keys
        are the constructor's arguments; missing ones take their defaults. An activation is its
        ``config()`` dict or a name, an initializer likewise (or a number), a nested layer list
        (``layers``) layer descriptions."""
        import inspect

        from .. import init as _init

        params = inspect.signature(cls.__init__).parameters
        args = {}
        for name, param in list(params.items())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if name not in cfg:
                if param.default is param.empty:
                    raise ModelFileError(f"a {cls.__name__} layer description needs {name!r}")
                continue
            value = cfg[name]
            if name == "activation":
                value = activation_from(value, param.default if isinstance(param.default, str) else "identity")
            elif (name == "init" or name.endswith("_init")) and value is not None:
                value = _init.get(value)
            elif name == "layers":
                value = [from_config(c) for c in value]
            args[name] = value
        unknown = sorted(set(cfg) - set(params) - {"type"})
        if unknown:
            raise ModelFileError(f"a {cls.__name__} layer has no argument {', '.join(map(repr, unknown))}")
        return cls(**args)


def activation_from(value, default="identity"):
    """An Activation from a model description: its ``config()`` dict, a plain name, or missing."""
    from .. import activations

    if value is None:
        return activations.get(default)
    if isinstance(value, dict):
        return activations.from_config(value)
    return activations.get(value)


def from_config(cfg):
    """The layer a ``config()`` dict describes."""
    if not isinstance(cfg, dict):
        raise UnknownNameError(f"a layer description must be a JSON object; got {cfg!r}")
    cls = LAYER_TYPES.get(cfg.get("type"))
    if cls is None:
        raise UnknownNameError(f"unknown layer type {cfg.get('type')!r}; known: {', '.join(LAYER_TYPES)}")
    return cls.from_config(cfg)
