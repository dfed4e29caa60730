"""Layers and the ``Sequential`` network, lowered to a program run by one compiled call.

A network owns one flat parameter buffer; ``params()`` are live views into it, weights stored
(n_in, n_out). ``loss_and_grads`` is one call of :func:`nnlab.kernels.cpu.loss_and_grad`: forward,
loss, and backward with memoized layer errors

    E_L = ∂L/∂Z_L,   E_l = (E_{l+1} W_{l+1}ᵀ) ⊙ f_l'(Z_l),   ∂L/∂W_l = A_{l−1}ᵀ E_l,   ∂L/∂b_l = Σ_rows E_l,

after which ``layer_errors`` holds every E_l (see docs/backprop.md).
"""

import json
import os
import tempfile

import numpy as np

from . import _validate, activations
from . import init as _init
from . import losses as _losses
from .errors import HyperparameterError, ModelFileError, NnlabError, ShapeError, UnknownNameError
from .kernels import kernels_for
from .kernels.layout import (
    DX_SKIP,
    DX_WRITE,
    F_A,
    F_ACT,
    F_AMASK,
    F_AP,
    F_B,
    F_DX,
    F_KIND,
    F_LAYER,
    F_NIN,
    F_NKIND,
    F_NOISE,
    F_NOUT,
    F_SCRATCH,
    F_W,
    F_X,
    F_Z,
    KIND_DENSE,
    NF,
    NOISE_NONE,
    NOISE_NORMAL,
    NOISE_UNIFORM,
)

FORMAT = "nnlab-model"
FORMAT_VERSION = 1


class Layer:
    """Base class. A layer declares its parameters and lowers itself to program ops."""

    n_in = None
    n_out = None

    def param_specs(self):
        """[(name, shape, initializer or None)] in buffer order."""
        return []

    def lower(self, prog, x):
        """Append ops to ``prog`` reading tensor ``x``; return the output tensor id."""
        raise NotImplementedError

    def config(self):
        raise NotImplementedError


class Dense(Layer):
    """Fully connected layer A = f(X W + b), W of shape (n_in, n_out).

    ``activation`` is a name or an :class:`~nnlab.activations.Activation`; ``init`` a weight
    initializer name or :class:`~nnlab.init.Initializer` (default xavier_uniform, as Keras);
    ``bias_init`` a float (e.g. 0.1 against dead ReLUs) or initializer.
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
        for name in self.activation.param_names:
            specs.append((f"act.{name}", (1,), None))
        return specs

    def lower(self, prog, x):
        act = self.activation
        z = prog.tensor(self.n_out)
        a = prog.tensor(self.n_out)
        noise = prog.tensor(self.n_out) if act.entry.noise else -1
        off = prog.offsets(self)
        row = prog.op(KIND_DENSE, self, x=x, z=z, a=a, nin=self.n_in, nout=self.n_out,
                      w=off["W"], b=off.get("b", -1), act=act.code,
                      ap=off.get(f"act.{act.param_names[0]}", -1) if act.param_names else -1,
                      amask=act.learnable_mask(), noise=noise,
                      nkind={None: NOISE_NONE, "uniform": NOISE_UNIFORM, "normal": NOISE_NORMAL}[act.entry.noise])
        prog.hp_row(row, act.slots())
        return a

    def config(self):
        return {"type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
                "activation": self.activation.config(), "init": self.init.config(),
                "bias": self.bias, "bias_init": self.bias_init.config()}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["n_in"], cfg["n_out"], activation=activations.from_config(cfg["activation"]),
                   init=_init.get(cfg["init"]), bias=cfg["bias"], bias_init=_init.get(cfg["bias_init"]))


LAYER_TYPES = {"Dense": Dense}


class _Program:
    """Builder of the (ops, hp, tens) tables of :mod:`nnlab.kernels.layout`."""

    def __init__(self, layout, in_width):
        self.layout = layout
        self.ops = []
        self.hp = []
        self.widths = []
        self.consumed = set()
        self.layer_index = {}
        self.tensor(in_width)

    def tensor(self, width):
        self.widths.append(int(width))
        return len(self.widths) - 1

    def offsets(self, layer):
        return self.layout[id(layer)]

    def op(self, kind, layer, *, x, z, a, nin, nout, w, b, act, ap, amask, noise, nkind):
        row = np.full(NF, -1, dtype=np.int64)
        row[F_KIND], row[F_X], row[F_Z], row[F_A] = kind, x, z, a
        row[F_NIN], row[F_NOUT], row[F_W], row[F_B] = nin, nout, w, b
        row[F_ACT], row[F_AP], row[F_AMASK] = act, ap, amask
        row[F_NOISE], row[F_NKIND] = noise, nkind
        row[F_DX] = DX_SKIP if x == 0 else DX_WRITE
        if x in self.consumed:
            raise NotImplementedError("tensor reuse (DX_ADD) needs a scratch tensor; not used by Sequential")
        self.consumed.add(x)
        row[F_SCRATCH] = -1
        row[F_LAYER] = self.layer_index.setdefault(id(layer), len(self.layer_index))
        self.ops.append(row)
        self.hp.append(np.zeros(4))
        return len(self.ops) - 1

    def hp_row(self, i, values):
        self.hp[i][:] = values

    def tables(self):
        offs = np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.int64)
        tens = np.stack([offs, np.array(self.widths, dtype=np.int64)], axis=1)
        return np.stack(self.ops), np.stack(self.hp), np.ascontiguousarray(tens), int(sum(self.widths))


class Sequential:
    """A stack of layers with a loss, run by compiled kernels.

    >>> import numpy as np, nnlab as nl
    >>> net = nl.Sequential([nl.Dense(4, 8, activation="tanh", init="xavier_normal"),
    ...                      nl.Dense(8, 1)], loss="mse", seed=0, dtype="float64")
    >>> X = np.random.default_rng(0).normal(size=(16, 4)); y = X.sum(axis=1)
    >>> loss, grads = net.loss_and_grads(X, y)
    >>> [g.shape for g in grads]
    [(4, 8), (8,), (8, 1), (1,)]
    >>> len(net.layer_errors), net.layer_errors[0].shape
    (2, (16, 8))
    """

    def __init__(self, layers, loss="mse", seed=0, dtype="float64"):
        layers = list(layers)
        if not layers:
            raise ShapeError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise HyperparameterError(f"layer {i} is not an nnlab layer: {layer!r}")
        for i in range(1, len(layers)):
            if layers[i].n_in != layers[i - 1].n_out:
                raise ShapeError(
                    f"layer {i} expects {layers[i].n_in} inputs but layer {i - 1} gives {layers[i - 1].n_out}")
        self.layers = layers
        self.loss_name = _losses.canonical(loss)
        self._loss_code = _losses.CODES[self.loss_name]
        self.dtype = _validate.resolve_dtype(dtype)
        if seed is not None:
            seed = _validate.positive_int(seed, "seed", minimum=0)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.training = True
        self._build()
        self._init_params()
        self.layer_errors = []
        self._ws = {}

    # -------------------------------------------------------------- construction
    def _build(self):
        layout, self._names, self._shapes, offset = {}, [], [], 0
        for li, layer in enumerate(self.layers):
            offs = {}
            for name, shape, _ in layer.param_specs():
                offs[name] = offset
                self._names.append(f"{li}.{name}")
                self._shapes.append((offset, tuple(shape)))
                offset += int(np.prod(shape))
            layout[id(layer)] = offs
        self._flat = np.zeros(offset, dtype=self.dtype)
        prog = _Program(layout, self.layers[0].n_in)
        x = 0
        for layer in self.layers:
            x = layer.lower(prog, x)
        self._ops, self._hp, self._tens, self._width = prog.tables()
        self._out_tensor = x
        self._kernels = kernels_for(self._ops[:, F_ACT])
        self._views = [self._flat[o:o + int(np.prod(s))].reshape(s) for o, s in self._shapes]
        self._dense_z = [int(r[F_Z]) for r in self._ops if r[F_KIND] == KIND_DENSE]
        self._has_noise = bool((self._ops[:, F_NOISE] >= 0).any())

    def _init_params(self):
        views = iter(self._views)
        for layer in self.layers:
            for name, shape, initializer in layer.param_specs():
                view = next(views)
                if initializer is not None:
                    view[...] = initializer(shape, self.rng)
                else:  # learnable activation hyperparameter: its configured value
                    view[...] = layer.activation.hyperparams[name.split(".", 1)[1]]

    # -------------------------------------------------------------- parameters
    def params(self):
        """Live views [W1, b1, (act params), W2, b2, ...]; writing into them changes the network."""
        return list(self._views)

    def param_names(self):
        """Names aligned with :meth:`params`, e.g. ``['0.W', '0.b', '1.W', ...]``."""
        return list(self._names)

    @property
    def n_params(self):
        return int(self._flat.size)

    @property
    def n_in(self):
        return self.layers[0].n_in

    @property
    def n_out(self):
        return self.layers[-1].n_out

    def set_params(self, arrays):
        """Copy ``arrays`` (aligned with :meth:`params`) into the network, checking every shape first."""
        arrays = list(arrays)
        if len(arrays) != len(self._views):
            raise ShapeError(f"set_params needs {len(self._views)} arrays; got {len(arrays)}")
        checked = []
        for name, view, arr in zip(self._names, self._views, arrays):
            a = _validate.as_float_array(arr, f"parameter {name}")
            if a.shape != view.shape:
                raise ShapeError(f"parameter {name} must have shape {view.shape}; got {a.shape}")
            checked.append(a)
        for view, a in zip(self._views, checked):
            view[...] = a
        self._sync_activation_values()

    def _sync_activation_values(self):
        """Write learned activation hyperparameters back into the Activation objects (for config)."""
        for li, layer in enumerate(self.layers):
            act = getattr(layer, "activation", None)
            for name in act.param_names if act is not None else ():
                act.set_value(name, float(self._views[self._names.index(f"{li}.act.{name}")][0]))

    def train(self):
        """Training mode: rrelu/noisy_relu draw noise (and later dropout, batch statistics)."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode: deterministic forward."""
        self.training = False
        return self

    # -------------------------------------------------------------- running
    def _workspace(self, n):
        """(ws, dws) for a batch of n rows. The kernels address tensor t of an n-row batch as
        ``ws[n*off : n*(off+width)]``, so buffers made for cap >= n rows serve n rows too: they are
        kept for any n <= cap <= max(2n, n + 1024) (the ragged last batch of an epoch reuses the
        full batch's buffers) and replaced otherwise (a large evaluation does not pin its memory)."""
        for cap, ws in self._ws.items():
            if n <= cap <= max(2 * n, n + 1024):
                return ws
        self._ws.clear()
        ws = self._ws[n] = (np.zeros(n * self._width, self.dtype), np.zeros(n * self._width, self.dtype))
        return ws

    def _check_X(self, X):
        X = _validate.as_float_array(X, "X", dtype=self.dtype)
        if X.ndim == 1 and self.n_in == X.shape[0]:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_in:
            raise ShapeError(f"X must have shape (N, {self.n_in}); got {X.shape}")
        if X.shape[0] == 0:
            raise ShapeError("X has no rows")
        return X

    fixed_noise_seed = None  # set an int to draw the same training noise on every call

    def _noise_seed(self, training):
        """The seed of this call's training noise, or -1 (no reseeding) in eval mode and for a
        program without noisy activations (nothing to draw: the generator is left untouched)."""
        if not training or not self._has_noise:
            return -1
        if self.fixed_noise_seed is not None:
            return int(self.fixed_noise_seed)
        return int(self.rng.integers(0, 2**31 - 1))

    def forward(self, X, training=None):
        """The network output for X (N, n_in) -> (N, n_out), a new array."""
        X = self._check_X(X)
        training = self.training if training is None else bool(training)
        ws, _ = self._workspace(X.shape[0])
        out = self._kernels.run_forward(self._ops, self._hp, self._tens, self._flat, ws, X, training,
                                        self._noise_seed(training))
        return self._tensor(ws, out, X.shape[0]).copy()

    predict = forward

    def _tensor(self, buf, t, n):
        off, w = self._tens[t]
        return buf[n * off:n * (off + w)].reshape(n, w)

    def _prepare(self, X, y):
        X = self._check_X(X)
        Y = _losses.prepare_targets(self.loss_name, y, X.shape[0], self.n_out, self.dtype)
        return X, Y

    def loss(self, X, y, training=None):
        """The loss on (X, y) without computing gradients."""
        X, Y = self._prepare(X, y)
        training = self.training if training is None else bool(training)
        ws, dws = self._workspace(X.shape[0])
        return float(self._kernels.loss_only(self._ops, self._hp, self._tens, self._flat, ws, dws, X, Y,
                                             self._loss_code, training, self._noise_seed(training)))

    def loss_and_grads(self, X, y, training=None):
        """(loss, grads): one compiled call; grads aligned with :meth:`params` (fresh arrays).

        Afterwards ``layer_errors`` holds E_l = ∂L/∂Z_l of every Dense layer, shape (N, n_out).
        """
        X, Y = self._prepare(X, y)
        training = self.training if training is None else bool(training)
        ws, dws = self._workspace(X.shape[0])
        flat_grad = np.empty_like(self._flat)
        loss = self._kernels.loss_and_grad(self._ops, self._hp, self._tens, self._flat, flat_grad, ws, dws,
                                           X, Y, self._loss_code, training,
                                           self._noise_seed(training))
        n = X.shape[0]
        self.layer_errors = [self._tensor(dws, t, n).copy() for t in self._dense_z]
        grads = [flat_grad[o:o + int(np.prod(s))].reshape(s) for o, s in self._shapes]
        return float(loss), grads

    def layer_inputs(self, X, training=False):
        """Forward X and return, per Dense layer, (A_{l-1}, Z_l, A_l) copies -- for diagnostics."""
        X = self._check_X(X)
        ws, _ = self._workspace(X.shape[0])
        self._kernels.run_forward(self._ops, self._hp, self._tens, self._flat, ws, X, training,
                                  self._noise_seed(training))
        n = X.shape[0]
        return [tuple(self._tensor(ws, int(r[f]), n).copy() for f in (F_X, F_Z, F_A))
                for r in self._ops if r[F_KIND] == KIND_DENSE]

    # -------------------------------------------------------------- copies and files
    def config(self):
        return {"layers": [layer.config() for layer in self.layers], "loss": self.loss_name,
                "dtype": self.dtype.name, "seed": self.seed}

    def copy(self, dtype=None):
        """An independent network with the same architecture and parameter values (optionally recast)."""
        self._sync_activation_values()
        net = from_config(self.config(), dtype=dtype)
        net._flat[...] = self._flat
        net.training = self.training
        return net

    def save(self, path):
        """Write architecture and parameters to ``path`` (.npz, no pickle), atomically."""
        self._sync_activation_values()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **self.config()}
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise ModelFileError(f"cannot save {path}: no such directory {directory}")
        if os.path.isdir(path):
            raise ModelFileError(f"cannot save {path}: it is a directory")
        fd, tmp = tempfile.mkstemp(prefix=".nnlab-", suffix=".npz", dir=directory)
        try:
            os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; give the file ordinary permissions
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, params=self._flat,
                         config=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}], loss={self.loss_name!r}, dtype={self.dtype.name!r})"


def _file_mode(path):
    """Permissions for a saved file: those of the file it replaces, else 0666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def from_config(cfg, dtype=None):
    layers = []
    for lc in cfg["layers"]:
        cls = LAYER_TYPES.get(lc.get("type"))
        if cls is None:
            raise UnknownNameError(f"unknown layer type {lc.get('type')!r}; known: {', '.join(LAYER_TYPES)}")
        layers.append(cls.from_config(lc))
    return Sequential(layers, loss=cfg["loss"], seed=cfg.get("seed"), dtype=dtype or cfg["dtype"])


def load(path):
    """Load a network written by :meth:`Sequential.save`.

    Anything that is not a readable nnlab model file (missing, empty, truncated, a plain ``.npy``,
    another program's ``.npz``, a corrupt configuration) raises :class:`ModelFileError`.
    """
    try:
        data = np.load(os.fspath(path), allow_pickle=False)
    except FileNotFoundError:
        raise ModelFileError(f"no such model file: {path}") from None
    except Exception as exc:  # OSError, ValueError, EOFError (empty file), zipfile.BadZipFile, ...
        raise ModelFileError(f"{path} is not an nnlab model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):  # a plain .npy array
        raise ModelFileError(f"{path} is not an nnlab model file (a single .npy array, not an .npz archive)")
    try:
        with data:
            meta = json.loads(bytes(data["config"]).decode("utf-8"))
            flat = np.array(data["params"])
    except Exception as exc:  # missing members, pickled members, bad JSON/UTF-8, truncated members
        raise ModelFileError(f"{path} is not an nnlab model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an nnlab model file")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: corrupt model file (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer nnlab (format {meta['version']})")
    try:
        net = from_config(meta)
    except NnlabError:  # e.g. UnknownNameError for an activation that is not registered here
        raise
    except Exception as exc:  # missing or mistyped configuration fields
        raise ModelFileError(f"{path}: corrupt model configuration ({type(exc).__name__}: {exc})") from None
    if flat.dtype.kind != "f" or flat.shape != net._flat.shape:
        raise ModelFileError(f"{path}: parameters ({flat.dtype}, shape {flat.shape}) do not match its architecture "
                             f"({net.n_params} floats)")
    net._flat[...] = flat
    return net
