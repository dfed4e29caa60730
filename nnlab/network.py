"""The ``Sequential`` network, lowered to programs run by one compiled call.

A network owns one flat parameter buffer; ``params()`` are live views into it, weights stored
(n_in, n_out). The buffers of its layers (BatchNorm's running statistics) follow the parameters in
the same *store* array, so the kernels see both, and no optimizer touches the buffers.
``loss_and_grads`` is one call of :func:`nnlab.kernels.cpu.loss_and_grad`: forward, loss, and
backward with memoized layer errors

    E_L = ∂L/∂Z_L,   E_l = (E_{l+1} W_{l+1}ᵀ) ⊙ f_l'(Z_l),   ∂L/∂W_l = A_{l−1}ᵀ E_l,   ∂L/∂b_l = Σ_rows E_l,

after which ``layer_errors`` holds every E_l (see docs/backprop.md).

Data are (N, F) rows or (N, T, F) sequences. A network is lowered to a program per sequence length
(:mod:`nnlab.program`); layers without a time axis act on every step.
"""

import json
import math
import os

import numpy as np

from . import _files, _validate
from . import limits as _limits
from . import losses as _losses
from .errors import HyperparameterError, ModelFileError, NnlabError, ShapeError, UnknownNameError
from .kernels import kernels_for
from .kernels.cpu import ensure_loss_and_grad
from .kernels.layout import (
    F_A,
    F_ACT,
    F_KIND,
    F_NOISE,
    F_T,
    F_X,
    F_Z,
    KIND_BATCHNORM,
    KIND_DENSE,
    KIND_LAYERNORM,
    KIND_LSTM,
    KIND_MAXOUT,
    KIND_RBF,
    KIND_RNN,
)
from .layers import Dense, Layer  # noqa: F401  (re-exported: nnlab.network.Dense)
from .layers import from_config as layer_from_config
from .program import ProgramBuilder

FORMAT = "nnlab-model"
FORMAT_VERSION = 2  # 2: buffers (running statistics) saved beside the parameters; version 1 files load


_ROW_WISE = (KIND_DENSE, KIND_BATCHNORM, KIND_LAYERNORM, KIND_MAXOUT, KIND_RBF)  # one row per (row, step)


def _walk(layer, prefix):
    """(layer, name prefix) for ``layer`` and every layer nested in it, depth first."""
    yield layer, prefix
    for j, child in enumerate(layer.children()):
        yield from _walk(child, f"{prefix}{j}.")


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

    def __init__(self, layers, loss="mse", seed=0, dtype="float64", device=None):
        layers = list(layers)
        if not layers:
            raise ShapeError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise HyperparameterError(f"layer {i} is not an nnlab layer: {layer!r}")
        self.layers = layers
        self._check_widths()
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
        if device is None:  # (the process default: nl.backend.set_device)
            from .backend import get_device

            device = get_device()
        if device != "cpu":
            self.to(device)

    # -------------------------------------------------------------- construction
    def _check_widths(self):
        """Resolve the input width and check that every layer accepts its predecessor's output."""
        layers = self.layers
        w = next((layer.n_in for layer in layers if layer.n_in is not None), None)
        if w is None:
            raise ShapeError("cannot tell the network's input width: give one of its layers its input width "
                             "(e.g. Dense(n_in, n_out) or BatchNorm(n))")
        self._in_features = w
        for i, layer in enumerate(layers):
            if i > 0 and layer.n_in is not None and layer.n_in != w:
                raise ShapeError(f"layer {i} {layer!r} expects {layer.n_in} inputs but layer {i - 1} "
                                 f"{layers[i - 1]!r} gives {w}")
            w = layer.out_features(w, f"layer {i} {layer!r}")
        self._out_features = w

    def _build(self):
        self._param_offsets, self._buffer_offsets = {}, {}
        self._names, self._shapes, self._buffer_names, self._buffer_shapes = [], [], [], []
        self._inits = []
        offset = 0
        walked = [item for li, top in enumerate(self.layers) for item in _walk(top, f"{li}.")]
        seen = set()
        for layer, prefix in walked:
            if id(layer) in seen:
                raise HyperparameterError(f"layer {layer!r} appears twice in the network; use a new layer object")
            seen.add(id(layer))
            offs = {}
            for name, shape, initializer in layer.param_specs():
                offs[name] = offset
                self._names.append(f"{prefix}{name}")
                self._shapes.append((offset, tuple(int(d) for d in shape)))
                self._inits.append((layer, name, initializer))
                offset += int(np.prod(shape))
            self._param_offsets[id(layer)] = offs
        n_params = offset
        for layer, prefix in walked:
            offs = {}
            for name, shape, value in layer.buffer_specs():
                offs[name] = offset
                self._buffer_names.append(f"{prefix}{name}")
                self._buffer_shapes.append((offset, tuple(int(d) for d in shape), float(value)))
                offset += int(np.prod(shape))
            self._buffer_offsets[id(layer)] = offs
        _limits.require(2 * offset * self.dtype.itemsize, f"a network of {n_params:,} parameters",
                        "the layer widths or the number of layers")
        self._store = np.zeros(offset, dtype=self.dtype)
        self._flat = self._store[:n_params]
        self._views = [self._flat[o:o + int(np.prod(s))].reshape(s) for o, s in self._shapes]
        self._buffer_views = [self._store[o:o + int(np.prod(s))].reshape(s) for o, s, _ in self._buffer_shapes]
        for (_, _, value), view in zip(self._buffer_shapes, self._buffer_views):
            view[...] = value
        bound = {}  # each layer gets live views of its own parameters: layer._params[name]
        for (layer, name, _), view in zip(self._inits, self._views):
            bound.setdefault(id(layer), (layer, {}))[1][name] = view
        for layer, views in bound.values():
            layer._params = views
        self._recurrent = any(layer.sequence_input for layer, _ in walked)
        self._programs = {}
        self._shared_kinds = frozenset()
        prog = self._program(1)
        self._kernels = self._host_kernels()
        self._has_noise = bool((prog.ops[:, F_NOISE] >= 0).any())
        if self._has_noise:
            from .kernels.common import enable_noise

            enable_noise(self.dtype)  # (the kernels draw noise through a callback: see its module)
        self._bind_buffers()

    def _bind_buffers(self):
        """Give each layer with buffers live views of them (``BatchNorm.running_mean``, ...)."""
        by_layer = {}
        for name, view in zip(self._buffer_names, self._buffer_views):
            by_layer.setdefault(name.rsplit(".", 1)[0], {})[name.rsplit(".", 1)[1]] = view
        for li, top in enumerate(self.layers):
            for layer, prefix in _walk(top, f"{li}."):
                views = by_layer.get(prefix[:-1])
                if views:
                    layer._buffers = views

    def _program(self, steps, wrt_input=False, seq=None):
        """The program for inputs of ``steps`` steps (1 for 2-D data), built once and cached.
        ``seq``: the input is a sequence (default: for more than one step, or a recurrent network)."""
        seq = (steps > 1 or self._recurrent) if seq is None else bool(seq or self._recurrent)
        key = (int(steps), bool(wrt_input), seq)
        prog = self._programs.get(key)
        if prog is None:
            builder = ProgramBuilder(self, self._in_features, key[0], seq, wrt_input)
            x = 0
            for li, layer in enumerate(self.layers):
                builder.layer, builder.path = li, str(li)
                x = layer.lower(builder, x)
            prog = self._programs[key] = builder.finish(x)
        return prog

    # the tables of the 2-D (or one-step) program: what the monitor and the benchmarks read
    _ops = property(lambda self: self._program(1).ops)
    _hp = property(lambda self: self._program(1).hp)
    _tens = property(lambda self: self._program(1).tens)
    _width = property(lambda self: self._program(1).width)
    _out_tensor = property(lambda self: self._program(1).out)

    def _init_params(self):
        for (layer, name, initializer), view in zip(self._inits, self._views):
            if initializer is not None:
                view[...] = initializer(view.shape, self.rng)
            else:  # learnable activation hyperparameter: its configured value
                view[...] = layer.activation.hyperparams[name.split(".", 1)[1]]

    # -------------------------------------------------------------- device
    device = "cpu"
    _dev = None  # the device executor of a network on "cuda" (nnlab.kernels.cuda.executor)

    def to(self, device):
        """Run this network on ``device`` ("cpu" or "cuda"; see docs/gpu.md) from now on; returns it.

        On "cuda" the parameters, the optimizer state and the workspace live in GPU memory
        during training and every public method still takes and returns NumPy arrays. Raises
        :class:`~nnlab.errors.DeviceError` naming what is missing (numba-cuda, a GPU, device
        kernels for one of its layer kinds) when the network cannot run there."""
        device = _validate.device(device)
        if device == self.device:
            return self
        if device == "cuda":
            from .kernels.cuda.device import cuda
            from .kernels.cuda.executor import DeviceExecutor

            self._dev = DeviceExecutor(cuda(), self.dtype, set(self._ops[:, F_KIND].tolist()))
            self._kernels = self._dev
        else:
            self._to_host()
            self._dev = None
            self._kernels = self._host_kernels()
        self.device = device
        return self

    def _host_kinds(self):
        """The ``KIND_*`` codes of this network's program."""
        return frozenset(int(k) for k in self._program(1).ops[:, F_KIND])

    def _host_kernels(self):
        """The CPU kernel set for this network's program and the kinds of :func:`share_executor`."""
        return kernels_for(self._program(1).ops[:, F_ACT], self._host_kinds() | self._shared_kinds)

    def _to_host(self, write=False):
        """On a device: copy back what the device holds newer (parameters, buffers, optimizer
        state, gradients); with ``write`` the host's parameters may be changed next, so they are
        uploaded before the device reads them again."""
        if self._dev is not None:
            self._dev.to_host()
            if write:
                self._dev.host_written(self._store)

    # -------------------------------------------------------------- parameters
    def params(self):
        """Live views [W1, b1, (act params), W2, b2, ...]; writing into them changes the network."""
        self._to_host(write=True)
        return list(self._views)

    def param_names(self):
        """Names aligned with :meth:`params`, e.g. ``['0.W', '0.b', '1.W', ...]``; inside a residual
        block ``'{i}.{j}.{name}'``."""
        return list(self._names)

    def buffers(self):
        """Live views of the layers' buffers (running statistics): saved, loaded and copied with
        the parameters, never trained."""
        self._to_host(write=True)
        return list(self._buffer_views)

    def buffer_names(self):
        """Names aligned with :meth:`buffers`, e.g. ``['1.running_mean', '1.running_var']``."""
        return list(self._buffer_names)

    @property
    def n_params(self):
        return int(self._flat.size)

    @property
    def n_in(self):
        """Input features (per step for sequences)."""
        return self._in_features

    @property
    def n_out(self):
        """Output features (per step for sequence outputs)."""
        return self._out_features

    def set_params(self, arrays):
        """Copy ``arrays`` (aligned with :meth:`params`) into the network, checking every shape first."""
        arrays = list(arrays)
        if len(arrays) != len(self._views):
            raise ShapeError(f"set_params needs {len(self._views)} arrays; got {len(arrays)}")
        checked = []
        for name, view, arr, (layer, pname, init) in zip(self._names, self._views, arrays, self._inits):
            a = _validate.as_float_array(arr, f"parameter {name}", dtype=self.dtype)
            if a.shape != view.shape:
                raise ShapeError(f"parameter {name} must have shape {view.shape}; got {a.shape}")
            if init is None:  # a learned activation value: validated as the activation's set_value does
                layer.activation.check_value(pname.split(".", 1)[1], float(a.reshape(-1)[0]))
            checked.append(a)
        self._to_host(write=True)
        for view, a in zip(self._views, checked):
            view[...] = a
        self._sync_activation_values()

    def _sync_activation_values(self):
        """Write learned activation hyperparameters back into the Activation objects (for config)."""
        self._to_host()
        for (layer, name, initializer), view in zip(self._inits, self._views):
            if initializer is None:
                layer.activation._set_learned(name.split(".", 1)[1], float(view[0]))

    def train(self):
        """Training mode: dropout masks, batch statistics, rrelu/noisy_relu noise."""
        self.training = True
        return self

    def eval(self):
        """Evaluation mode: deterministic forward (running statistics, no dropout, no noise)."""
        self.training = False
        return self

    # -------------------------------------------------------------- running
    def _workspace(self, n, width=None):
        """(ws, dws) for a batch of n rows of a program ``width`` elements wide (default the 2-D
        program's). The kernels address tensor t of an n-row batch as ``ws[n*off : n*(off+w)]``,
        so buffers made for more elements serve too: they are kept while they are at most
        max(2x, x + 1024 rows) of what is needed (the ragged last batch of an epoch reuses the
        full batch's buffers) and replaced otherwise (a large evaluation does not pin its memory)."""
        width = self._width if width is None else int(width)
        need = n * width
        for size, ws in self._ws.items():
            if need <= size <= max(2 * need, need + 1024 * width):
                return ws
        self._ws.clear()
        _limits.require(2 * need * self.dtype.itemsize, f"a batch of {n:,} rows ({width:,} workspace elements per "
                        f"row, forward and backward)", "the batch size (rows per call) or the network's size")
        ws = self._ws[need] = (np.zeros(need, self.dtype), np.zeros(need, self.dtype))
        return ws

    def _check_X(self, X):
        """(X as the kernels take it, (N, T·F) C-contiguous; its steps T (1 for 2-D data); whether
        it is a sequence)."""
        X = _validate.as_float_array(X, "X", dtype=self.dtype)
        ndim = X.ndim
        if X.ndim == 1 and self.n_in == X.shape[0] and not self._recurrent:
            X = X.reshape(1, -1)
        if X.ndim == 2 and self._recurrent:
            raise ShapeError(f"this network starts with or contains a sequence layer: X must be a sequence "
                             f"(N, T, {self.n_in}); got 2-D data of shape {X.shape}")
        if X.ndim == 3:
            if X.shape[2] != self.n_in:
                raise ShapeError(f"X must have shape (N, T, {self.n_in}); got {X.shape}")
            if X.shape[1] == 0:
                raise ShapeError("X has no time steps")
            if X.shape[0] == 0:
                raise ShapeError("X has no rows")
            steps = X.shape[1]
            X = np.ascontiguousarray(X.reshape(X.shape[0], -1))
        elif X.ndim != 2 or X.shape[1] != self.n_in:
            raise ShapeError(f"X must have shape (N, {self.n_in}) or (N, T, {self.n_in}); got {X.shape}")
        else:
            steps = 1
        if X.shape[0] == 0:
            raise ShapeError("X has no rows")
        return X, steps, ndim == 3

    def _prog_for(self, X2):
        """The program for a batch already in the kernels' layout (N, T·F)."""
        return self._program(X2.shape[1] // self.n_in)

    fixed_noise_seed = None  # set an int to draw the same training noise (dropout masks) on every call

    def _noise_seed(self, training):
        """The seed of this call's training noise, or -1 (no reseeding) in eval mode and for a
        program without noise (nothing to draw: the generator is left untouched)."""
        if not training or not self._has_noise:
            return -1
        if self.fixed_noise_seed is not None:
            return int(self.fixed_noise_seed)
        return int(self.rng.integers(0, 2**31 - 1))

    def _output(self, prog, ws, n):
        out = prog.tensor(ws, prog.out, n)
        return out.reshape(n, -1, prog.out_features) if prog.out_seq else out

    def forward(self, X, training=None):
        """The network output for X: (N, n_in) -> (N, n_out); a sequence (N, T, n_in) -> (N, T, n_out)
        (or (N, n_out) after a recurrent layer that returns its last state). A new array."""
        X, steps, seq = self._check_X(X)
        prog = self._program(steps, seq=seq)
        training = self.training if training is None else bool(training)
        prog.check_batch(X.shape[0], training)
        ws, _ = self._workspace(X.shape[0], prog.width)
        self._kernels.run_forward(prog.ops, prog.hp, prog.tens, self._store, ws, X, training,
                                  self._noise_seed(training))
        return self._output(prog, ws, X.shape[0]).copy()

    predict = forward

    def _tensor(self, buf, t, n, prog=None):
        return (prog or self._program(1)).tensor(buf, t, n)

    def _prepare(self, X, y):
        """(X, Y) in the kernels' layout: X (N, T·F); Y (N, T_out·K') with one target row per
        output step (class labels as floats for softmax_cross_entropy)."""
        X, steps, seq = self._check_X(X)
        prog = self._program(steps, seq=seq)
        n = X.shape[0]
        if not prog.out_seq:
            return X, _losses.prepare_targets(self.loss_name, y, n, self.n_out, self.dtype)
        t_out = prog.tens[prog.out, 2]
        try:
            arr = np.asarray(y)
        except Exception as exc:  # ragged lists and the like
            raise ShapeError(f"y could not be read as an array: {exc}") from None
        if arr.ndim < 2 or arr.shape[:2] != (n, t_out):
            raise ShapeError(f"the network outputs a sequence (N, T, K) = ({n}, {t_out}, {self.n_out}): y must "
                             f"have shape ({n}, {t_out}{'' if self.loss_name == 'softmax_cross_entropy' else ', K'})"
                             f"; got {arr.shape}")
        Y = _losses.prepare_targets(self.loss_name, arr.reshape((n * t_out,) + arr.shape[2:]), n * t_out,
                                    self.n_out, self.dtype)
        return X, np.ascontiguousarray(Y.reshape(n, -1))

    def loss(self, X, y, training=None):
        """The loss on (X, y) without computing gradients (mean over rows; over N·T rows for
        sequence outputs)."""
        X, Y = self._prepare(X, y)
        prog = self._prog_for(X)
        training = self.training if training is None else bool(training)
        prog.check_batch(X.shape[0], training)
        ws, dws = self._workspace(X.shape[0], prog.width)
        return float(self._kernels.loss_only(prog.ops, prog.hp, prog.tens, self._store, ws, dws, X, Y,
                                             self._loss_code, training, self._noise_seed(training)))

    def loss_and_grads(self, X, y, training=None, wrt_input=False):
        """(loss, grads): one compiled call; grads aligned with :meth:`params` (fresh arrays).

        Afterwards ``layer_errors`` holds E_l = ∂L/∂Z_l of every layer with weights (row-wise
        layers -- dense, normalisation, maxout, RBF -- one row per (row, step): (N, width of Z), or
        (N·T, width of Z) on sequences; a normalisation layer's Z is its x̂, maxout's its n_out·k
        pieces, RBF's its squared distances). A pass in training mode updates
        BatchNorm's running statistics (once per call, as a training step does). With
        ``wrt_input=True`` it returns (loss, grads, ∂L/∂X) with ∂L/∂X shaped like X.
        """
        ndim = getattr(X, "ndim", None)
        X, Y = self._prepare(X, y)
        if ndim is None:
            ndim = np.ndim(X)
        prog = self._program(X.shape[1] // self.n_in, wrt_input, seq=ndim == 3)
        training = self.training if training is None else bool(training)
        prog.check_batch(X.shape[0], training)
        ws, dws = self._workspace(X.shape[0], prog.width)
        flat_grad = np.empty_like(self._flat)
        ks = ensure_loss_and_grad(self._kernels, self.dtype)
        # through the executor's loss_and_grad callback, which training shares (a device executor
        # and the kernel sets of user-registered activations call loss_and_grad directly)
        run = getattr(ks, "loss_and_grad_call", None) or ks.loss_and_grad
        loss = run(prog.ops, prog.hp, prog.tens, self._store, flat_grad, ws, dws, X, Y, self._loss_code, training,
                   self._noise_seed(training))
        n = X.shape[0]
        self.layer_errors = self._errors(prog, dws, n)
        grads = [flat_grad[o:o + int(np.prod(s))].reshape(s) for o, s in self._shapes]
        if wrt_input:
            dX = prog.tensor(dws, 0, n).copy()
            return float(loss), grads, (dX.reshape(n, -1, self.n_in) if ndim == 3 else dX)
        return float(loss), grads

    def _errors(self, prog, dws, n):
        """Copies of the memoized E_l of the watched ops (row-wise ops: (N·T, width of Z); recurrent:
        the gate gradients ∂L/∂z_t time-major, (T, N, G) with G = hidden (RNN) or 4·hidden (LSTM))."""
        out = []
        for i in prog.watched:
            E = prog.tensor(dws, int(prog.ops[i, F_Z]), n)
            kind = prog.ops[i, F_KIND]
            if kind in _ROW_WISE:  # one row per (row, step)
                z = int(prog.ops[i, F_Z])
                E = E.reshape(-1, int(prog.tens[z, 1] // prog.tens[z, 2]))
            elif kind in (KIND_RNN, KIND_LSTM):
                E = E.reshape(int(prog.ops[i, F_T]), n, -1)
            out.append(E.copy())
        return out

    def layer_inputs(self, X, training=False):
        """Forward X and return, per dense layer with weights, (A_{l-1}, Z_l, A_l) copies -- for diagnostics."""
        X, steps, seq = self._check_X(X)
        prog = self._program(steps, seq=seq)
        prog.check_batch(X.shape[0], training)
        ws, _ = self._workspace(X.shape[0], prog.width)
        self._kernels.run_forward(prog.ops, prog.hp, prog.tens, self._store, ws, X, training,
                                  self._noise_seed(training))
        n = X.shape[0]
        return [tuple(prog.tensor(ws, int(prog.ops[i, f]), n).reshape(-1, int(prog.ops[i, 4 if f == F_X else 5])).copy()
                      for f in (F_X, F_Z, F_A))
                for i in prog.watched if prog.ops[i, F_KIND] == KIND_DENSE]

    # -------------------------------------------------------------- copies and files
    def config(self):
        return {"layers": [layer.config() for layer in self.layers], "loss": self.loss_name,
                "dtype": self.dtype.name, "seed": self.seed}

    def copy(self, dtype=None):
        """An independent network with the same architecture, parameter values and buffers
        (optionally recast), on the CPU (``.to("cuda")`` moves it)."""
        self._sync_activation_values()
        net = from_config(self.config(), dtype=dtype, device="cpu")
        net._store[...] = self._store
        net.training = self.training
        return net

    def to_json(self, path=None):
        """The model description (architecture, loss, dtype, seed; no weights) as JSON text -- the
        ``config`` that :meth:`save` writes into a model file, readable by :func:`model_from_json`
        and ``nnlab train --model``. Written to ``path`` too when given."""
        self._sync_activation_values()
        text = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, **self.config()}, indent=2)
        if path is not None:
            with open(os.fspath(path), "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    def save(self, path):
        """Write architecture, parameters and buffers to ``path`` (.npz, no pickle), atomically: a
        temporary file in the same directory, flushed to disk, renamed over ``path``; a save that is
        killed leaves the old file intact, and its temporary file is removed by the next save or
        load of ``path``."""
        _files.write_npz(path, self._members())

    def _members(self):
        """The .npz members of a model file: ``config`` (JSON), ``params``, ``buffers`` (if any)."""
        self._sync_activation_values()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **self.config()}
        members = {"params": self._flat, "config": _files.json_member(meta)}
        if self._store.size > self._flat.size:
            members["buffers"] = self._store[self._flat.size:]
        return members

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}], loss={self.loss_name!r}, dtype={self.dtype.name!r})"


def share_executor(*nets):
    """Run the networks ``nets`` on one CPU executor: the smallest whose op kinds cover all their
    programs (see :func:`nnlab.kernels.kernels_for`).

    A network runs on the smallest executor that covers its own program, so two networks of
    different kinds of layers (a plain stack and the same stack with residual blocks) compile two
    executors on an empty kernel cache. A process that compares them trains both on one instead:
    the same kernels, so the same bits, and one compile. The choice stays with each network
    (also after ``to("cpu")``); a user-activation network keeps its own kernel set.
    """
    bad = [type(net).__name__ for net in nets if not isinstance(net, Sequential)]
    if not nets or bad:
        raise HyperparameterError("share_executor takes nnlab networks (Sequential); "
                                  + (f"got {', '.join(bad)}" if bad else "got none"))
    kinds = frozenset().union(*(net._host_kinds() for net in nets))
    for net in nets:
        net._shared_kinds = kinds
        if net.device == "cpu":
            net._kernels = net._host_kernels()


def from_config(cfg, dtype=None, device=None):
    """The network a ``config()`` dict (the JSON a model file holds) describes, freshly initialised
    (on ``device``, by default the process default: :func:`nnlab.backend.set_device`)."""
    layers = [layer_from_config(lc) for lc in cfg["layers"]]
    return Sequential(layers, loss=cfg["loss"], seed=cfg.get("seed"), dtype=dtype or cfg["dtype"], device=device)


def model_from_json(source, dtype=None, seed=None):
    """A freshly initialised network from a JSON model description: a path to a ``.json`` file or
    the JSON text itself, in the format :meth:`Sequential.to_json` and :meth:`Sequential.save`
    write (``{"format": "nnlab-model", "version": 2, "layers": [...], "loss": ..., "dtype": ...,
    "seed": ...}``; ``format``/``version`` may be left out). ``dtype``/``seed`` override the file's.

    >>> import nnlab as nl
    >>> net = nl.model_from_json('{"layers": [{"type": "Dense", "n_in": 2, "n_out": 3}], "loss": "mse"}')
    >>> net.param_names()
    ['0.W', '0.b']
    """
    text = os.fspath(source) if isinstance(source, os.PathLike) else source
    if not isinstance(text, str):
        raise ModelFileError(f"model_from_json needs a path or JSON text; got {type(source).__name__}")
    name = "the model description"
    if not text.lstrip().startswith("{"):
        name = text
        try:
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ModelFileError(f"cannot read model description {name}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ModelFileError(f"{name} is not a JSON model description (not UTF-8 text)") from None
    try:
        cfg = json.loads(text)
    except ValueError as exc:
        raise ModelFileError(f"{name} is not valid JSON ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ModelFileError(f"{name}: a model description is a JSON object with a 'layers' list")
    if cfg.get("format", FORMAT) != FORMAT:
        raise ModelFileError(f"{name}: format {cfg.get('format')!r} is not {FORMAT!r}")
    version = cfg.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ModelFileError(f"{name}: unsupported format version {version!r}")
    cfg = dict(cfg)
    cfg.setdefault("loss", "mse")
    cfg.setdefault("dtype", "float64")
    if seed is not None:
        cfg["seed"] = seed
    else:
        cfg.setdefault("seed", 0)
    try:
        return from_config(cfg, dtype=dtype)
    except NnlabError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # missing or mistyped layer fields
        raise ModelFileError(f"{name}: bad model description ({type(exc).__name__}: {exc})") from None


def _store_sizes(cfg):
    """(parameters, buffer entries) of the network ``cfg`` describes, counted from its layers'
    specifications without allocating anything."""
    layers = [layer_from_config(lc) for lc in cfg["layers"]]
    probe = Sequential.__new__(Sequential)
    probe.layers = layers
    probe._check_widths()
    n_params = n_buf = 0
    for li, top in enumerate(layers):
        for layer, _ in _walk(top, f"{li}."):
            n_params += sum(math.prod(int(d) for d in shape) for _, shape, _ in layer.param_specs())
            n_buf += sum(math.prod(int(d) for d in shape) for _, shape, _ in layer.buffer_specs())
    return n_params, n_buf


def _read_model(reader):
    """The network held by an open model (or checkpoint) file: the configuration is checked and
    the expected sizes computed before any array is read or allocated; non-finite parameters or
    buffers are refused."""
    path = reader.path
    meta = reader.json("config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an nnlab model file")
    version = meta.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path}: corrupt model file (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path} was written by a newer nnlab (format {meta['version']})")
    try:
        n_params, n_buf = _store_sizes(meta)
    except UnknownNameError:  # a layer type or activation that is not registered here
        raise
    except NnlabError as exc:  # a layer description without a required field, widths that do not chain
        raise ModelFileError(f"{path}: corrupt model configuration ({exc})") from None
    except Exception as exc:  # missing or mistyped configuration fields
        raise ModelFileError(f"{path}: corrupt model configuration ({type(exc).__name__}: {exc})") from None
    p_shape, p_dtype, _ = reader.header("params")
    if p_dtype.kind != "f" or tuple(p_shape) != (n_params,):
        raise ModelFileError(f"{path}: parameters ({p_dtype}, shape {tuple(p_shape)}) do not match its architecture "
                             f"({n_params} floats)")
    if "buffers" not in reader and n_buf:
        raise ModelFileError(f"{path}: the file has no buffers but its architecture has {n_buf} "
                             f"(running statistics)")
    if "buffers" in reader:
        b_shape, b_dtype, _ = reader.header("buffers")
        if b_dtype.kind != "f" or tuple(b_shape) != (n_buf,):
            raise ModelFileError(f"{path}: buffers ({b_dtype}, shape {tuple(b_shape)}) do not match its "
                                 f"architecture ({n_buf} floats)")
    flat = reader.array("params", shape=(n_params,), finite=True, label="the parameters ('params')")
    buffers = (reader.array("buffers", shape=(n_buf,), finite=True, label="the buffers ('buffers')")
               if n_buf else None)
    try:
        net = from_config(meta)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: corrupt model configuration ({exc})") from None
    except NnlabError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: corrupt model configuration ({type(exc).__name__}: {exc})") from None
    with np.errstate(over="ignore"):
        cast = flat.astype(net.dtype)
    if not np.isfinite(cast).all():
        raise ModelFileError(f"{path}: the parameters overflow {net.dtype} (the file's are {flat.dtype})")
    net._flat[...] = cast
    if n_buf:
        net._store[net._flat.size:] = buffers
    return net


def load(path):
    """Load a network written by :meth:`Sequential.save` (or the network of a checkpoint written by
    :func:`nnlab.save_checkpoint`).

    Anything that is not a readable nnlab model file (missing, empty, truncated, a plain ``.npy``,
    another program's ``.npz``, a corrupt configuration, arrays that do not match the
    architecture, non-finite parameters or buffers) raises :class:`ModelFileError` naming the
    problem. Sizes are checked from the archive's headers before anything is allocated, and no
    member is ever unpickled.
    """
    if isinstance(path, (str, os.PathLike)):
        _files.clean_stale(path)
    with _files.NpzReader(path) as reader:
        return _read_model(reader)
