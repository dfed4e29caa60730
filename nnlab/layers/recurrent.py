"""Recurrent layers: a simple RNN and an LSTM over sequences (N, T, F), trained by backpropagation
through time (BPTT), full or truncated.

``RNN``:  h_t = a·θ(x_t W_ih + h_{t−1} W_hh + b)
``LSTM``: [z_i z_f z_g z_o] = x_t W_ih + h_{t−1} W_hh + b (torch's gate order), i, f, o = σ(·),
g = tanh(z_g), c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t)

h_0 (and c_0) are zeros. ``return_sequences=True`` outputs every h_t, (N, T, H); False the last
state h_T, (N, H). ``truncate=k`` cuts the gradient of the loss term at step t after k steps back
(BPTT(k)); see docs/layers.md and the kernels (:mod:`nnlab.kernels.recurrent`).
"""

import numpy as np

from .. import _validate, activations
from .. import init as _init
from ..errors import HyperparameterError
from ..kernels.layout import HP_CARRY, KIND_LSTM, KIND_RNN
from ._base import Layer, register


def _truncate(value, name):
    if value is None:
        return None
    return _validate.positive_int(value, f"{name} truncate")


class _ForgetBias:
    """Bias initializer of an LSTM: zeros, the forget gate's slice [H:2H] at ``value``."""

    def __init__(self, hidden, value):
        self.hidden = hidden
        self.value = value

    def __call__(self, shape, rng):
        b = np.zeros(shape)
        b[self.hidden:2 * self.hidden] = self.value
        return b


class _Recurrent(Layer):
    """What RNN and LSTM share: parameters W_ih (n_in, G), W_hh (H, G), b (G,), the lowering."""

    sequence_input = True
    gates = 1
    kind = None

    def _setup(self, name, n_in, hidden, return_sequences, truncate, init, recurrent_init):
        self.n_in = _validate.positive_int(n_in, f"{name} n_in")
        self.hidden = _validate.positive_int(hidden, f"{name} hidden")
        self.n_out = self.hidden
        if not isinstance(return_sequences, (bool, np.bool_)):
            raise HyperparameterError(f"{name} return_sequences must be True or False; got {return_sequences!r}")
        self.return_sequences = bool(return_sequences)
        self.truncate = _truncate(truncate, name)
        self.init = _init.get(init)
        self.recurrent_init = _init.get(recurrent_init)

    def _bias_init(self):
        return _init.get("zeros")

    def param_specs(self):
        G = self.gates * self.hidden
        return [("W_ih", (self.n_in, G), self.init), ("W_hh", (self.hidden, G), self.recurrent_init),
                ("b", (G,), self._bias_init())]

    def _lower(self, prog, x, activation=None):
        prog.require_seq(self, x)
        T = prog.steps(x)
        H = self.hidden
        G = self.gates * H
        F = self.n_in
        seq = self.return_sequences
        a = prog.tensor(T * H, T, True) if seq else prog.tensor(H, 1, False)
        z = prog.tensor(T * G)
        aux = prog.tensor((T + 1) * H)      # h_0..h_T
        prog.tensor(T * F)                  # the input, time-major
        if self.kind == KIND_LSTM:
            prog.tensor(T * G)              # gate values
            prog.tensor((T + 1) * H)        # c_0..c_T
            prog.tensor(T * H)              # tanh(c_t)
        else:
            prog.tensor(T * H)              # a·θ'(z_t)
        prog.tensor(3 * H + G)              # backward scratch
        carry = prog.carry(2 * H if self.kind == KIND_LSTM else H)
        if self.kind == KIND_LSTM:
            from ..kernels.recurrent import enable_lstm_threads

            enable_lstm_threads(prog.net.dtype)  # large LSTMs run in blocks of rows on several threads
        off = prog.params(self)
        k = self.truncate if self.truncate is not None and self.truncate < T else 0
        fields = dict(x=x, z=z, a=a, nin=F, nout=H, w=off["W_ih"], b=off["b"], steps=T, aux=aux, k=k,
                      carry=carry, seq=int(seq), wn=(F + H) * G, bn=G)
        if activation is not None:
            fields.update(act=activation.code, amask=0)
        i = prog.op(self.kind, self, hp={HP_CARRY: 0.0}, activation=activation, **fields)
        if activation is not None:
            prog.set_hp(i, activation.slots())
        return a

    def _common_config(self):
        return {"n_in": self.n_in, "hidden": self.hidden, "return_sequences": self.return_sequences,
                "truncate": self.truncate, "init": self.init.config(),
                "recurrent_init": self.recurrent_init.config()}

    def _repr_tail(self):
        out = ""
        if self.return_sequences:
            out += ", return_sequences=True"
        if self.truncate is not None:
            out += f", truncate={self.truncate}"
        return out


@register
class RNN(_Recurrent):
    """A simple (Elman) recurrent layer: h_t = a·θ(x_t W_ih + h_{t−1} W_hh + b), h_0 = 0.

    ``activation``: a built-in activation without learnable hyperparameters or noise (tanh, the
    default; relu, sigmoid, ...). ``return_sequences``: output every h_t, (N, T, hidden), instead
    of the last state (N, hidden). ``truncate=k``: truncated BPTT, the loss term at step t reaches
    the parameters only through steps t−k+1..t (None: full BPTT). ``init`` initialises W_ih
    (default xavier_uniform), ``recurrent_init`` W_hh (default orthogonal); b starts at 0. torch's
    two biases b_ih + b_hh are the one b here.

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.RNN(2, 8), nl.Dense(8, 1)], seed=0)
    >>> net.param_names()
    ['0.W_ih', '0.W_hh', '0.b', '1.W', '1.b']
    """

    kind = KIND_RNN
    gates = 1

    def __init__(self, n_in, hidden, activation="tanh", return_sequences=False, truncate=None,
                 init="xavier_uniform", recurrent_init="orthogonal"):
        self._setup("RNN", n_in, hidden, return_sequences, truncate, init, recurrent_init)
        act = activations.get(activation).copy()
        if act.entry.custom or act.param_names or act.entry.noise:
            why = ("a user-registered activation" if act.entry.custom else
                   "learnable hyperparameters" if act.param_names else "a noisy activation")
            raise HyperparameterError(f"RNN activation must be a built-in activation without learnable "
                                      f"hyperparameters or noise; {act.label!r} is {why}")
        self.activation = act

    def __repr__(self):
        act = "" if self.activation.name == "tanh" and self.activation.scale == 1.0 else \
            f", activation={self.activation!r}"
        return f"RNN({self.n_in}, {self.hidden}{act}{self._repr_tail()})"

    def lower(self, prog, x):
        return self._lower(prog, x, self.activation)

    def config(self):
        return {"type": "RNN", **self._common_config(), "activation": self.activation.config()}


@register
class LSTM(_Recurrent):
    """Long short-term memory: gates i, f, g, o (torch's order in the 4·hidden columns),
    c_t = f⊙c_{t−1} + i⊙g, h_t = o⊙tanh(c_t), h_0 = c_0 = 0.

    Parameters W_ih (n_in, 4H), W_hh (H, 4H), b (4H,): b starts at 0 except the forget gate's
    slice b[H:2H] = ``forget_bias`` (default 1.0: the cell keeps its state, and its gradient, from
    the start). ``return_sequences``, ``truncate``, ``init``, ``recurrent_init`` as for
    :class:`RNN`.

    >>> import nnlab as nl
    >>> net = nl.Sequential([nl.LSTM(1, 4)], seed=0)
    >>> net.params()[2].tolist()
    [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    """

    kind = KIND_LSTM
    gates = 4

    def __init__(self, n_in, hidden, return_sequences=False, forget_bias=1.0, truncate=None,
                 init="xavier_uniform", recurrent_init="orthogonal"):
        self._setup("LSTM", n_in, hidden, return_sequences, truncate, init, recurrent_init)
        self.forget_bias = _validate.real_scalar(forget_bias, "LSTM forget_bias")

    def __repr__(self):
        fb = "" if self.forget_bias == 1.0 else f", forget_bias={self.forget_bias:g}"
        return f"LSTM({self.n_in}, {self.hidden}{fb}{self._repr_tail()})"

    def _bias_init(self):
        return _ForgetBias(self.hidden, self.forget_bias)

    def lower(self, prog, x):
        return self._lower(prog, x)

    def config(self):
        return {"type": "LSTM", **self._common_config(), "forget_bias": self.forget_bias}
