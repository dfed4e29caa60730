"""Lowering a network to the program tables the compiled executor runs (see
:mod:`nnlab.kernels.layout` for what each column means).

Each layer's ``lower(prog, x)`` appends its ops with :meth:`ProgramBuilder.op`, asking the
builder for the tensors it writes; :meth:`ProgramBuilder.finish` then decides, for every tensor
read by several ops, which op writes its gradient and which ones add to it, places the tensors in
the workspace and returns a :class:`Program`.
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import ShapeError
from .kernels import layout as L

_FIELDS = {
    "kind": L.F_KIND, "x": L.F_X, "z": L.F_Z, "a": L.F_A, "nin": L.F_NIN, "nout": L.F_NOUT, "w": L.F_W,
    "b": L.F_B, "act": L.F_ACT, "ap": L.F_AP, "amask": L.F_AMASK, "noise": L.F_NOISE, "nkind": L.F_NKIND,
    "steps": L.F_T, "x2": L.F_X2, "x3": L.F_X3, "aux": L.F_AUX, "buf": L.F_BUF, "k": L.F_K,
    "carry": L.F_CARRY, "wn": L.F_WN, "bn": L.F_BN, "seq": L.F_SEQ,
}
_INPUTS = ((L.F_X, L.F_DX), (L.F_X2, L.F_DX2), (L.F_X3, L.F_DX3))


@dataclass
class Program:
    """The tables of one network for one sequence length, and what the Python side reads of them."""

    ops: np.ndarray
    hp: np.ndarray
    tens: np.ndarray
    width: int                  # elements per batch row of the workspace
    out: int                    # the output tensor id
    out_seq: bool               # the output is a sequence (N, T, K)
    out_features: int           # K
    steps: int                  # the input's steps (1 for 2-D data)
    watched: list = field(default_factory=list)   # op indices with weights, in F_LEVEL order
    labels: list = field(default_factory=list)    # a label per watched op: "2 LSTM", "3.1 Dense (relu)"
    recurrent: list = field(default_factory=list)  # op indices of the recurrent ops
    carry_width: int = 0        # elements per batch row of the carry block
    activations: list = field(default_factory=list)  # per op, its Activation or None
    batch_checks: list = field(default_factory=list)  # (layer, steps, where): layer.check_batch(n·steps, ...)

    def check_batch(self, n, training):
        """Let every layer that asked for it refuse an n-row batch in this mode (before any kernel)."""
        for layer, steps, where in self.batch_checks:
            layer.check_batch(n * steps, training, where)

    def tensor(self, buf, t, n):
        """Tensor t of an n-row batch as (n, width), a view into ``buf``."""
        off, w = int(self.tens[t, 0]), int(self.tens[t, 1])
        return buf[n * off:n * (off + w)].reshape(n, w)


class ProgramBuilder:
    """Collects the ops of one network lowered for input tensors of ``steps`` steps."""

    def __init__(self, net, in_features, steps, seq, wrt_input=False):
        self.net = net
        self.widths, self.tsteps, self.tseq = [], [], []
        self.rows, self.hps, self.paths, self.acts = [], [], [], []
        self.batch_checks = []
        self.wrt_input = wrt_input
        self.carry_width = 0
        self.layer = -1     # the top-level layer being lowered (F_LAYER)
        self.path = ""      # its path label, e.g. "2" or "3.1" inside a residual block
        self.tensor(in_features * steps, steps, seq)

    # ------------------------------------------------------------------ tensors
    def tensor(self, width, steps=1, seq=False):
        """A new tensor of ``width`` elements per batch row (``steps`` steps of width/steps features)."""
        self.widths.append(int(width))
        self.tsteps.append(int(steps))
        self.tseq.append(bool(seq))
        return len(self.widths) - 1

    def like(self, x, features):
        """A new tensor with the steps of tensor ``x`` and ``features`` features per step."""
        return self.tensor(features * self.tsteps[x], self.tsteps[x], self.tseq[x])

    def steps(self, x):
        return self.tsteps[x]

    def seq(self, x):
        return self.tseq[x]

    def features(self, x):
        return self.widths[x] // self.tsteps[x]

    def carry(self, width):
        """Reserve ``width`` elements per batch row of the carry block; returns their offset."""
        off = self.carry_width
        self.carry_width += int(width)
        return off

    # ------------------------------------------------------------------ parameters
    def params(self, layer):
        """{name: offset in the parameter store} of ``layer``'s parameters."""
        return self.net._param_offsets[id(layer)]

    def buffers(self, layer):
        """{name: offset in the parameter store} of ``layer``'s buffers."""
        return self.net._buffer_offsets[id(layer)]

    def where(self, layer):
        """'layer 3 (LSTM(1, 16))' for error messages."""
        return f"layer {self.path} ({layer!r})"

    def require_seq(self, layer, x):
        if not self.seq(x):
            raise ShapeError(f"{self.where(layer)} needs sequences of shape (N, T, {layer.n_in}); "
                             f"it gets 2-D data (N, {self.features(x)})")

    def batch_check(self, layer, steps):
        """Have ``layer.check_batch(n·steps, training, where)`` run before the program runs on an
        n-row batch (the layer acts on tensors of ``steps`` steps)."""
        self.batch_checks.append((layer, int(steps), self.where(layer)))

    # ------------------------------------------------------------------ ops
    def op(self, kind, layer, hp=None, label=None, activation=None, **fields):
        """Append an op; ``fields`` name the columns (x, z, a, nin, nout, w, b, ...); unnamed
        columns are -1 except F_T (1), F_WN and F_BN (0); ``label`` names the op in the monitor's
        tables (default: the layer's label); ``activation`` is the op's
        :class:`~nnlab.activations.Activation`, if it has one. Returns the op's index."""
        row = np.full(L.NF, -1, dtype=np.int64)
        row[L.F_T] = 1
        row[L.F_WN] = 0
        row[L.F_BN] = 0
        row[L.F_AMASK] = 0
        row[L.F_NKIND] = L.NOISE_NONE
        row[L.F_KIND] = kind
        for name, value in fields.items():
            row[_FIELDS[name]] = value
        row[L.F_LAYER] = self.layer
        self.rows.append(row)
        h = np.zeros(L.NHP)
        if hp is not None:
            for k, v in (hp.items() if isinstance(hp, dict) else enumerate(hp)):
                h[k] = v
        self.hps.append(h)
        self.paths.append((self.path, label or layer.label))
        self.acts.append(activation)
        return len(self.rows) - 1

    def set_hp(self, i, values):
        for k, v in (values.items() if isinstance(values, dict) else enumerate(values)):
            self.hps[i][k] = v

    # ------------------------------------------------------------------ tables
    def finish(self, out):
        ops = np.stack(self.rows)
        seen = set()
        need_scratch = 0
        for i in range(ops.shape[0] - 1, -1, -1):  # backward order: the first to run writes
            for fx, fdx in _INPUTS:
                x = int(ops[i, fx])
                if x < 0:
                    continue
                if x == 0 and not self.wrt_input:
                    ops[i, fdx] = L.DX_SKIP
                elif x not in seen:
                    ops[i, fdx] = L.DX_WRITE
                    seen.add(x)
                else:
                    ops[i, fdx] = L.DX_ADD
                    need_scratch = max(need_scratch, self.widths[x])
        if need_scratch:
            ops[:, L.F_SCRATCH] = self.tensor(need_scratch)
        level = 0
        watched, labels, recurrent = [], [], []
        for i in range(ops.shape[0]):
            if ops[i, L.F_WN] > 0:
                ops[i, L.F_LEVEL] = level
                level += 1
                watched.append(i)
                path, label = self.paths[i]
                labels.append(f"{path} {label}")
            if ops[i, L.F_KIND] in (L.KIND_RNN, L.KIND_LSTM):
                recurrent.append(i)
        widths = np.array(self.widths, dtype=np.int64)
        offs = self.carry_width + np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        tens = np.ascontiguousarray(np.stack([offs, widths, np.array(self.tsteps, dtype=np.int64)], axis=1))
        return Program(ops=ops, hp=np.stack(self.hps), tens=tens, width=int(self.carry_width + widths.sum()),
                       out=int(out), out_seq=self.tseq[out], out_features=self.features(out),
                       steps=self.tsteps[0], watched=watched, labels=labels, recurrent=recurrent,
                       carry_width=self.carry_width, activations=list(self.acts),
                       batch_checks=list(self.batch_checks))
