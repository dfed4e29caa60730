"""Benchmark: one whole training step (forward, loss, backward, optimizer update) per call -- nnlab's
fused compiled step beside PyTorch eager, JAX jit and plain NumPy, against the speed goals of
docs/performance.md (section "Goals").

    nnlab bench [--quick] [--configs tiny,mnist,deep-narrow,wide]
        [--optimizers sgd-momentum,adam] [--repeat N] [--json out.json] [--skip SECTIONS]
        [--wait-quiet SECONDS]
    nnlab bench --report out.json      # re-print a saved run's tables
    nnlab bench --cold all             # only the cold start: each demo and a first step, empty cache

(``python benchmarks/bench_train_step.py`` and ``python -m nnlab.benchmark`` take the same
arguments.) PyTorch and JAX are optional: a framework that is not importable is reported ``n/a``.

For every configuration x optimizer it first runs ONE step in every framework from the same
weights (nnlab's initial parameters; torch ``Linear.weight`` = W.T) and compares the loss, the
gradients and the parameter update with a float64 NumPy reference; a framework that disagrees is
reported and not timed. Then it times steps in blocks, round-robin (the order rotated every round,
an idle gap before every framework's turn; see time_round_robin), and prints the median time per
step -- nnlab's ``Trainer.step``, the bare compiled call it makes, PyTorch, JAX, NumPy and a "GEMM
floor" of the step's matrix products alone -- the ratios other/nnlab (> 1: nnlab is faster),
nnlab's achieved GFLOP/s against a measured float32 GEMM peak, the CPU load other processes put on
the machine meanwhile, and the speed goals (docs/performance.md#goals) as met / missed.

Further sections (``--skip`` any of them, comma-separated): ``fit`` (per-step time of
``Trainer.fit``), ``denormals`` (deep-narrow with flush-to-zero off/on), ``sweeps`` (time per step
vs depth and vs width), ``memory`` (peak resident memory of one framework per fresh subprocess),
``compile`` (nnlab's first call in a fresh process with an empty and with a filled Numba cache),
``demo`` (wall time of ``nnlab demo vanishing``, twice), ``layers`` (an LSTM and a
BatchNorm/Dropout MLP beside PyTorch: :mod:`nnlab.bench_layers`).

``--cold TARGETS`` runs only the cold-start section (:func:`bench_cold`: every demo in order, then
the first ``Trainer.step``, each in a fresh process on a kernel cache that starts empty; wall and
CPU seconds). It is separate because it takes minutes.

All numbers are measurements, never assertions. The machine is shared: compare ratios within one
run, not absolute times across runs. See docs/performance.md for what every number means.
"""

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------- what is measured

LR_SGD, MOMENTUM = 0.01, 0.9
LR_ADAM, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
OPTIMIZERS = ("sgd-momentum", "adam")

# Agreement with the float64 reference (see check()): loss relative error; per tensor, the largest
# gradient error relative to the tensor's largest |gradient|; per tensor, the largest error of the
# updated weights beyond 2 float32 ulps of the weight, relative to the tensor's largest |update|.
LOSS_RTOL, GRAD_RTOL, UPDATE_RTOL = 1e-4, 1e-3, 1e-3
# Gradient entries this small cannot be compared relatively in float32: they lie in or next to the
# subnormal range (< 1.18e-38) where precision is lost, or flushed to 0 (JAX, flush-to-zero on).
GRAD_ATOL = 1e-35
FLT_MIN = float(np.finfo(np.float32).tiny)
GAP_S = 0.25  # idle time before timing another framework (see time_round_robin)


@dataclass(frozen=True)
class Spec:
    """A multilayer perceptron: layer widths (input first), batch, hidden activation, loss, init."""

    name: str
    widths: tuple
    batch: int
    act: str
    loss: str
    init: str  # an nnlab initializer name, or "torch_default": U(+-1/sqrt(fan_in)) for W and b

    @property
    def n_layers(self):
        return len(self.widths) - 1

    def describe(self):
        w = self.widths
        if self.n_layers > 4 and len(set(w[1:-1])) == 1:
            arch = f"{w[0]}->[{w[1]}]x{self.n_layers - 1}->{w[-1]}"
        else:
            arch = "->".join(map(str, w))
        return f"{arch}, batch {self.batch}, {self.act}, {self.loss}, init {self.init}, float32"


CONFIGS = {
    "tiny": Spec("tiny", (8, 16, 16, 1), 16, "tanh", "mse", "xavier_normal"),
    "mnist": Spec("mnist", (784, 256, 256, 10), 128, "relu", "softmax_cross_entropy", "he_normal"),
    # PyTorch's default nn.Linear init: the backward signal shrinks ~0.14x per layer and the lower
    # layers' float32 gradients go subnormal -- the situation the reference timings below were measured in.
    "deep-narrow": Spec("deep-narrow", (64,) + (64,) * 50 + (10,), 64, "sigmoid", "softmax_cross_entropy",
                        "torch_default"),
    "wide": Spec("wide", (1024, 2048, 2048, 10), 256, "relu", "softmax_cross_entropy", "he_normal"),
}

# The speed goals (docs/performance.md#goals), on the SGD-momentum rows: (config, other framework,
# minimum other/nnlab).
GOALS = (("tiny", "torch", 10.0), ("tiny", "jax", 2.0), ("mnist", "torch", 1.5), ("mnist", "jax", 1.2),
         ("deep-narrow", "jax", 1.5), ("deep-narrow", "torch", 5.0), ("wide", "torch", 1.0))
DEMO_GOAL_S = 5.0

# Reference timings of the other frameworks (SGD-momentum, microseconds, measured once on a 2-core x86
# machine), for orientation only.
ANCHORS_US = {"tiny": {"torch": 324, "jax": 62, "numpy": 78}, "mnist": {"torch": 2220, "jax": 1830, "numpy": 2290},
              "deep-narrow": {"torch": 22000, "jax": 2900, "numpy": 27800},
              "wide": {"torch": 53700, "jax": 58600, "numpy": 76600}}

SECTIONS = ("fit", "denormals", "sweeps", "memory", "compile", "demo", "layers")
FRAMEWORKS = ("nnlab", "nnlab-kernel", "torch", "jax", "numpy")


def mlp_spec(depth, width, name=None):
    """The sweeps' family: ``depth`` sigmoid layers of ``width`` (input ``width``), a linear output
    to 10 classes, batch 64, softmax cross-entropy, PyTorch's default init (depth 50 = deep-narrow)."""
    return Spec(name or f"d{depth}-w{width}", (width,) * (depth + 1) + (10,), 64, "sigmoid",
                "softmax_cross_entropy", "torch_default")


def flops_per_step(spec):
    """Matmul FLOPs of forward + backward: 2*N*in*out per matmul; Z = XW, dW = X^T E and dX = E W^T
    per layer, except that the first layer needs no dX. Elementwise work and the update are not counted."""
    n = spec.batch
    total = 0
    for i, (a, b) in enumerate(zip(spec.widths[:-1], spec.widths[1:])):
        total += (2 if i == 0 else 3) * 2 * n * a * b
    return total


def make_data(spec, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((spec.batch, spec.widths[0])).astype(np.float32)
    if spec.loss == "mse":
        y = rng.standard_normal((spec.batch, spec.widths[-1])).astype(np.float32)
    else:
        y = rng.integers(0, spec.widths[-1], size=spec.batch).astype(np.int64)
    return X, y


def build_nnlab(spec, seed=0):
    import nnlab as nl

    layers = []
    for i, (a, b) in enumerate(zip(spec.widths[:-1], spec.widths[1:])):
        act = spec.act if i < spec.n_layers - 1 else "identity"
        if spec.init == "torch_default":
            lim = 1.0 / math.sqrt(a)
            init = nl.init.get("uniform", low=-lim, high=lim)
            layers.append(nl.Dense(a, b, activation=act, init=init, bias_init=init))
        else:
            layers.append(nl.Dense(a, b, activation=act, init=spec.init))
    return nl.Sequential(layers, loss=spec.loss, seed=seed, dtype="float32")


def nnlab_optimizer(opt):
    import nnlab as nl

    if opt == "sgd-momentum":
        return nl.optim.SGD(lr=LR_SGD, momentum=MOMENTUM)
    return nl.optim.Adam(lr=LR_ADAM, betas=(BETA1, BETA2), eps=EPS)


# ---------------------------------------------------------------- frameworks
# Every runner starts from ``params`` (nnlab layout: [W1 (in, out), b1, W2, b2, ...], float32).
# relu_masks() gives, before any step, the sign pattern Z > 0 of every hidden layer as the
# framework's own float32 forward computes it; first_step() runs exactly one training step and
# returns (loss before the update, the gradients that step used, in nnlab layout, the parameters
# after it); run(k) then runs k more steps and returns when their results exist.

class NumpyRunner:
    """Plain NumPy forward/backward with in-place updates. With dtype=float64 it is the reference;
    ``masks`` then fixes the ReLU derivative pattern (see :func:`reference`)."""

    name = "numpy"

    def __init__(self, spec, opt, params, X, y, dtype=np.float32, masks=None):
        dt = np.dtype(dtype)
        self.spec, self.opt, self.masks = spec, opt, masks
        self.p = [np.array(q, dtype=dt) for q in params]
        self.g = [np.zeros_like(q) for q in self.p]
        self.X = np.ascontiguousarray(X, dtype=dt)
        if spec.loss == "mse":
            self.Y = np.asarray(y, dtype=dt).reshape(self.X.shape[0], -1)
        else:
            self.labels = np.asarray(y, dtype=np.int64)
        self.m = [np.zeros_like(q) for q in self.p]
        self.v = [np.zeros_like(q) for q in self.p] if opt == "adam" else None
        self.t = 0

    def _act(self, Z, i):
        if self.spec.act == "tanh":
            return np.tanh(Z, out=Z)
        if self.spec.act == "relu":
            if self.masks is not None:
                Z *= self.masks[i]
                return Z
            return np.maximum(Z, 0, out=Z)
        with np.errstate(over="ignore"):  # exp(-z) = inf for z < -88 in float32: sigmoid 0, exact
            np.negative(Z, out=Z)
            np.exp(Z, out=Z)
        Z += 1
        return np.reciprocal(Z, out=Z)

    def _dact(self, A, i):
        """f'(Z) from A = f(Z)."""
        if self.spec.act == "tanh":
            return 1 - A * A
        if self.spec.act == "relu":
            return (self.masks[i] if self.masks is not None else A > 0).astype(A.dtype)
        return A * (1 - A)

    def relu_masks(self):
        a, masks = self.X, []
        for i in range(self.spec.n_layers - 1):
            Z = a @ self.p[2 * i]
            Z += self.p[2 * i + 1]
            masks.append(Z > 0)
            a = np.maximum(Z, 0)
        return masks

    def loss_and_grads(self):
        p, n, L = self.p, self.X.shape[0], self.spec.n_layers
        acts = [self.X]
        for i in range(L):
            Z = acts[-1] @ p[2 * i]
            Z += p[2 * i + 1]
            acts.append(self._act(Z, i) if i < L - 1 else Z)
        out = acts[-1]
        if self.spec.loss == "mse":
            E = out - self.Y
            loss = 0.5 * float(np.vdot(E, E)) / n
            E /= n
        else:
            rows = np.arange(n)
            m = out.max(axis=1, keepdims=True)
            e = np.exp(out - m)
            s = e.sum(axis=1, keepdims=True)
            loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - out[rows, self.labels]))
            E = e / s
            E[rows, self.labels] -= 1
            E /= n
        for i in range(L - 1, -1, -1):
            np.matmul(acts[i].T, E, out=self.g[2 * i])
            np.sum(E, axis=0, out=self.g[2 * i + 1])
            if i > 0:
                E = E @ p[2 * i].T
                E *= self._dact(acts[i], i - 1)
        return loss

    def update(self):
        self.t += 1
        if self.opt == "sgd-momentum":  # torch convention: m = mu*m + g (m_1 = g), p -= lr*m
            for p, g, m in zip(self.p, self.g, self.m):
                m *= MOMENTUM
                m += g
                p -= LR_SGD * m
            return
        c1, c2 = 1 - BETA1 ** self.t, 1 - BETA2 ** self.t
        for p, g, m, v in zip(self.p, self.g, self.m, self.v):
            m *= BETA1
            m += (1 - BETA1) * g
            v *= BETA2
            v += (1 - BETA2) * (g * g)
            denom = np.sqrt(v)
            denom /= math.sqrt(c2)
            denom += EPS
            p -= (LR_ADAM / c1) * m / denom

    def step(self):
        loss = self.loss_and_grads()
        self.update()
        return loss

    def first_step(self):
        loss = self.step()
        return loss, [g.copy() for g in self.g], [p.copy() for p in self.p]

    def run(self, k):
        for _ in range(k):
            self.step()


class NnlabRunner:
    """``Trainer.step(X, y)``: nnlab's public fused step (input validation included)."""

    name = "nnlab"

    def __init__(self, spec, opt, params, X, y, spy=False):
        import nnlab as nl

        self.net = build_nnlab(spec)
        self.net.set_params(params)
        self.X, self.y = X, y
        self.calls, self._real_kernels = [], None
        if spy:  # record the compiled calls the trainer makes through net._kernels (see NnlabKernelRunner)
            self._install_spy()
        self.trainer = nl.Trainer(self.net, nnlab_optimizer(opt))

    def _install_spy(self):
        real = getattr(self.net, "_kernels", None)
        if real is None:
            return
        calls = self.calls

        class Spy:
            def __getattr__(self, name):
                attr = getattr(real, name)
                if not callable(attr):
                    return attr

                def spy(*a, **kw):
                    calls.append((name, attr, a, kw))
                    return attr(*a, **kw)

                return spy

        self._real_kernels = real
        self.net._kernels = Spy()

    def relu_masks(self):
        layers = self.net.layer_inputs(self.X)
        masks = [z > 0 for _, z, _ in layers[:-1]]
        del self.calls[:]
        return masks

    def first_step(self):
        del self.calls[:]  # keep only the calls of the step itself
        try:
            loss = self.trainer.step(self.X, self.y)
        finally:
            if self._real_kernels is not None:
                self.net._kernels = self._real_kernels
        return float(loss), [g.copy() for g in self.trainer.grads], [p.copy() for p in self.net.params()]

    def run(self, k):
        step, X, y = self.trainer.step, self.X, self.y
        for _ in range(k):
            step(X, y)


class NnlabKernelRunner(NnlabRunner):
    """The bare compiled call(s) that ``Trainer.step`` makes, recorded during the checked first step
    and replayed with the same arguments (no input validation, no optimizer bookkeeping: Adam's
    step counter t stays fixed, which changes no cost)."""

    name = "nnlab-kernel"

    def __init__(self, spec, opt, params, X, y):
        super().__init__(spec, opt, params, X, y, spy=True)
        self.replay, self.how = None, "not captured"

    def first_step(self):
        out = super().first_step()
        calls = list(self.calls)
        if not calls:
            self.how = "not reachable: Trainer.step made no call through net._kernels"
        else:
            self.how = " + ".join(f"net._kernels.{c[0]}" for c in calls)
            if len(calls) == 1 and not calls[0][3]:
                _, fn, a, _ = calls[0]
                self.replay = lambda: fn(*a)
            else:
                frozen = [(fn, a, kw) for _, fn, a, kw in calls]

                def replay():
                    for fn, a, kw in frozen:
                        fn(*a, **kw)

                self.replay = replay
        return out

    def run(self, k):
        replay = self.replay
        for _ in range(k):
            replay()


def compute_threads():
    """The thread count every framework is given: nnlab's BLAS threads (``nnlab --threads``,
    ``OPENBLAS_NUM_THREADS``; by default one per core), else the number of cores."""
    try:
        from nnlab.backend import get_num_threads

        n = get_num_threads()
    except ImportError:
        n = None
    return n or os.cpu_count() or 1


class TorchRunner:
    """PyTorch eager: nn.Sequential of Linear layers, torch.optim.SGD / Adam, as many intra-op
    threads as nnlab's BLAS uses (:func:`compute_threads`)."""

    name = "torch"

    def __init__(self, spec, opt, params, X, y):
        import torch

        torch.set_num_threads(compute_threads())
        self.torch = torch
        acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid}
        layers, self.linears = [], []
        for i in range(spec.n_layers):
            W, b = params[2 * i], params[2 * i + 1]
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
            layers.append(lin)
            self.linears.append(lin)
            if i < spec.n_layers - 1:
                layers.append(acts[spec.act]())
        self.model = torch.nn.Sequential(*layers)
        if opt == "sgd-momentum":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=LR_SGD, momentum=MOMENTUM)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=LR_ADAM, betas=(BETA1, BETA2), eps=EPS)
        self.X = torch.from_numpy(X)
        self.mse = spec.loss == "mse"
        self.y = torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(X.shape[0], -1) if self.mse
                                  else np.asarray(y, dtype=np.int64))

    def relu_masks(self):
        masks, a = [], self.X
        with self.torch.no_grad():
            for module in self.model:
                a = module(a)
                if isinstance(module, self.torch.nn.Linear) and module is not self.linears[-1]:
                    masks.append(a.cpu().numpy() > 0)  # (.cpu(): a no-op here, a copy from a GPU)
        return masks

    def _step(self):
        self.opt.zero_grad(set_to_none=True)
        out = self.model(self.X)
        if self.mse:
            loss = 0.5 * ((out - self.y) ** 2).sum() / out.shape[0]
        else:
            loss = self.torch.nn.functional.cross_entropy(out, self.y)
        loss.backward()
        self.opt.step()
        return loss

    def first_step(self):
        loss = float(self._step().detach())
        grads, after = [], []
        for lin in self.linears:
            grads += [lin.weight.grad.numpy().T.copy(), lin.bias.grad.numpy().copy()]
            after += [lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()]
        return loss, grads, after

    def run(self, k):
        for _ in range(k):
            self._step()


class JaxRunner:
    """JAX: one jitted step (value_and_grad + hand-written SGD-momentum / Adam in jax.numpy), the
    parameter and optimizer-state buffers donated. XLA flushes denormals to zero by default.
    The check runs the same step function jitted once more with the gradients as an extra output."""

    name = "jax"

    def __init__(self, spec, opt, params, X, y):
        import jax
        import jax.numpy as jnp

        warnings.filterwarnings("ignore", message=".*donated buffers were not usable.*")
        self.jax = jax
        L, mse = spec.n_layers, spec.loss == "mse"
        act = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}[spec.act]

        def forward(ps, X):
            a, zs = X, []
            for i, (W, b) in enumerate(ps):
                a = a @ W + b
                if i < L - 1:
                    zs.append(a)
                    a = act(a)
            return a, zs

        def loss_fn(ps, X, y):
            a = forward(ps, X)[0]
            if mse:
                return 0.5 * jnp.sum((a - y) ** 2) / X.shape[0]
            lse = jax.nn.logsumexp(a, axis=1)
            return jnp.mean(lse - jnp.take_along_axis(a, y[:, None], axis=1)[:, 0])

        vg = jax.value_and_grad(loss_fn)
        tmap = jax.tree_util.tree_map

        def step(ps, state, X, y, with_grads=False):
            loss, g = vg(ps, X, y)
            if opt == "sgd-momentum":  # torch convention: m = mu*m + g (m_1 = g), p -= lr*m
                state = tmap(lambda m, g: MOMENTUM * m + g, state, g)
                ps = tmap(lambda p, m: p - LR_SGD * m, ps, state)
            else:
                m, v, t = state
                t = t + 1.0
                m = tmap(lambda m, g: BETA1 * m + (1 - BETA1) * g, m, g)
                v = tmap(lambda v, g: BETA2 * v + (1 - BETA2) * g * g, v, g)
                c1, c2 = 1 - BETA1 ** t, 1 - BETA2 ** t
                ps = tmap(lambda p, m, v: p - (LR_ADAM / c1) * m / (jnp.sqrt(v) / jnp.sqrt(c2) + EPS), ps, m, v)
                state = (m, v, t)
            return (ps, state, loss, g) if with_grads else (ps, state, loss)

        self.forward = jax.jit(lambda ps, X: forward(ps, X)[1])
        self.checked_step = jax.jit(lambda ps, state, X, y: step(ps, state, X, y, True))
        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.params = params
        self.ps, self.state = self._fresh(opt)
        self.opt = opt
        self.X = jnp.asarray(X)
        self.y = jnp.asarray(np.asarray(y, dtype=np.float32).reshape(X.shape[0], -1) if mse
                             else np.asarray(y, dtype=np.int32))

    def _fresh(self, opt):
        import jax.numpy as jnp

        p = self.params
        ps = [(jnp.asarray(p[2 * i]), jnp.asarray(p[2 * i + 1])) for i in range(len(p) // 2)]
        zeros = [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in ps]
        if opt == "sgd-momentum":
            return ps, zeros
        return ps, (zeros, [(jnp.zeros_like(W), jnp.zeros_like(b)) for W, b in ps], jnp.zeros((), jnp.float32))

    def relu_masks(self):
        return [np.asarray(z) > 0 for z in self.forward(self.ps, self.X)]

    def first_step(self):
        ps, state, loss, g = self.checked_step(self.ps, self.state, self.X, self.y)
        grads = [np.array(x) for pair in g for x in pair]
        after = [np.array(x) for pair in ps for x in pair]
        # the timed (donating) step from the same start, as the timed runs continue from it
        self.ps, self.state, _ = self.step(*self._fresh(self.opt), self.X, self.y)
        timed_after = [np.array(x) for pair in self.ps for x in pair]
        self.timed_vs_checked = max(float(np.abs(a - b).max()) for a, b in zip(after, timed_after))
        return float(loss), grads, after

    def run(self, k):
        ps, state, X, y, step = self.ps, self.state, self.X, self.y, self.step
        for _ in range(k):
            ps, state, loss = step(ps, state, X, y)
        self.jax.block_until_ready((ps, state, loss))
        self.ps, self.state = ps, state


class GemmFloor:
    """Only the step's matrix products, in NumPy float32 into preallocated outputs: per layer
    Z = A W, dW = A^T E and (not for the first layer) dX = E W^T, with A^T and W^T stored
    contiguously beforehand (the fastest layout for the BLAS). A floor for any framework that
    calls a BLAS per product; nnlab's time minus this is its non-GEMM work and overhead."""

    name = "gemm-floor"

    def __init__(self, spec, seed=0):
        rng = np.random.default_rng(seed)
        n, self.ops = spec.batch, []
        for i, (a, b) in enumerate(zip(spec.widths[:-1], spec.widths[1:])):
            A = rng.standard_normal((n, a)).astype(np.float32)
            W = rng.standard_normal((a, b)).astype(np.float32)
            E = rng.standard_normal((n, b)).astype(np.float32)
            self.ops.append((A, W, E, np.ascontiguousarray(A.T), np.ascontiguousarray(W.T),
                             np.empty((n, b), np.float32), np.empty((a, b), np.float32),
                             np.empty((n, a), np.float32) if i > 0 else None))

    def run(self, k):
        for _ in range(k):
            for A, W, E, At, Wt, Z, dW, dX in self.ops:
                np.matmul(A, W, out=Z)
                np.matmul(At, E, out=dW)
                if dX is not None:
                    np.matmul(E, Wt, out=dX)


RUNNERS = {"nnlab": NnlabRunner, "nnlab-kernel": NnlabKernelRunner, "torch": TorchRunner, "jax": JaxRunner,
           "numpy": NumpyRunner}


def make_runner(name, spec, opt, params, X, y):
    """The runner, or None when its framework is not importable."""
    try:
        return RUNNERS[name](spec, opt, params, X, y)
    except ImportError:
        return None


# ---------------------------------------------------------------- correctness

def reference(spec, opt, params, X, y, masks=None):
    """(loss, grads, params after one step) in float64 from the same float32 weights and data.

    With ReLU, a pre-activation within float32 rounding of 0 may fall on either side of the kink in
    a float32 framework, and one such unit changes a whole gradient column (and, through dX, every
    lower layer by ~1/batch). ``masks`` -- the framework's own float32 sign pattern -- makes the
    reference take the same branches, so that what is compared is the arithmetic, not the kink."""
    return NumpyRunner(spec, opt, params, X, y, dtype=np.float64, masks=masks).first_step()


def rule_update(opt, g):
    """The first step's parameter change, in float64, from gradient ``g`` (t = 1, zero state)."""
    g = np.asarray(g, dtype=np.float64)
    if opt == "sgd-momentum":
        return -LR_SGD * g
    m, v = (1 - BETA1) * g, (1 - BETA2) * g * g
    return -(LR_ADAM / (1 - BETA1)) * m / (np.sqrt(v) / math.sqrt(1 - BETA2) + EPS)


def check(ref, params, result, opt):
    """Compare one framework's first step with the float64 reference.

    loss: relative error. grads: per tensor, max |g - g_ref| (less GRAD_ATOL) over max |g_ref|.
    update: per tensor, the parameters after the step against p0 + rule(the framework's own
    gradients) computed in float64, error beyond 2 float32 ulps of the weight, over the largest
    |update| -- the optimizer arithmetic, separated from the gradients (Adam's first step
    g/(|g| + eps) amplifies float32 gradient rounding without bound where |g| ~ eps).
    ``after_rel`` (reported, not judged) compares the parameters after with the reference's."""
    ref_loss, ref_grads, ref_after = ref
    loss, grads, after = result
    loss_rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-30)
    grad_rel = update_rel = after_rel = 0.0
    for g, r in zip(grads, ref_grads):
        g = np.asarray(g, dtype=np.float64).reshape(r.shape)
        err = float(np.maximum(np.abs(g - r) - GRAD_ATOL, 0.0).max())
        if err > 0:
            grad_rel = max(grad_rel, err / max(float(np.abs(r).max()), GRAD_ATOL))
    for p0, g, a, r in zip(params, grads, after, ref_after):
        p0 = np.asarray(p0, dtype=np.float64)
        delta = rule_update(opt, np.asarray(g).reshape(p0.shape))
        expect = p0 + delta
        a = np.asarray(a, dtype=np.float64).reshape(p0.shape)
        ulp = np.spacing(np.abs(expect).astype(np.float32)).astype(np.float64)
        err = float(np.maximum(np.abs(a - expect) - 2 * ulp, 0.0).max())
        if err > 0:
            update_rel = max(update_rel, err / max(float(np.abs(delta).max()), 1e-300))
        ref_delta = float(np.abs(r - p0).max())
        err = float(np.maximum(np.abs(a - r) - 2 * ulp, 0.0).max())
        if err > 0:
            after_rel = max(after_rel, err / max(ref_delta, 1e-300))
    finite = math.isfinite(loss) and all(np.isfinite(np.asarray(g)).all() for g in grads)
    agree = bool(finite and loss_rel <= LOSS_RTOL and grad_rel <= GRAD_RTOL and update_rel <= UPDATE_RTOL)
    return {"agree": agree, "loss_rel": loss_rel, "grad_rel": grad_rel, "update_rel": update_rel,
            "after_rel_vs_reference": after_rel}


def check_line(name, rep):
    if rep is None:
        return f"    {name:13s} not importable: skipped"
    verdict = "agree" if rep["agree"] else "DISAGREE -> not timed"
    extra = ""
    if rep.get("relu_branches_differ"):
        extra += f"; {rep['relu_branches_differ']} ReLU unit(s) on the other side of 0 than in float64"
    if rep.get("timed_vs_checked"):
        extra += f"; timed jit vs checked jit max |diff| {rep['timed_vs_checked']:.1e}"
    if rep.get("call"):
        extra += f"; replays {rep['call']}"
    return (f"    {name:13s} {verdict:5s}  loss rel {rep['loss_rel']:.1e}, grad max rel {rep['grad_rel']:.1e}, "
            f"update max rel {rep['update_rel']:.1e}  (setup + first step {rep['first_call_s']:.2f} s{extra})")


def prepare(spec, opt, names, quiet=False):
    """Build and check every runner in ``names``; returns (runners that agree, per-framework report)."""
    X, y = make_data(spec)
    params = [p.copy() for p in build_nnlab(spec).params()]
    plain_ref = reference(spec, opt, params, X, y)
    ref_masks = NumpyRunner(spec, opt, params, X, y, dtype=np.float64).relu_masks() if spec.act == "relu" else None
    runners, reports = {}, {}
    for name in names:
        t0 = time.perf_counter()
        runner = make_runner(name, spec, opt, params, X, y)
        if runner is None:
            reports[name] = None
            if not quiet:
                print(check_line(name, None), flush=True)
            continue
        ref, flipped = plain_ref, 0
        if ref_masks is not None:
            masks = runner.relu_masks()
            flipped = int(sum(int((m != r).sum()) for m, r in zip(masks, ref_masks)))
            if flipped:
                ref = reference(spec, opt, params, X, y, masks=masks)
        rep = check(ref, params, runner.first_step(), opt)
        rep["first_call_s"] = time.perf_counter() - t0
        rep["relu_branches_differ"] = flipped
        if name == "jax":
            rep["timed_vs_checked"] = runner.timed_vs_checked
        if name == "nnlab-kernel":
            rep["call"] = runner.how
            if runner.replay is None:
                rep["agree"] = False
                rep["unreachable"] = True
        reports[name] = rep
        if not quiet:
            print(f"    {name:13s} {runner.how}" if rep.get("unreachable") else check_line(name, rep), flush=True)
        if rep["agree"]:
            runners[name] = runner
    return runners, reports


# ---------------------------------------------------------------- timing

def calibrate(run, target):
    """Steps per timed block so that one block lasts about ``target`` seconds (after a warm-up)."""
    run(1)
    k = 1
    while True:
        t0 = time.perf_counter()
        run(k)
        dt = time.perf_counter() - t0
        if dt >= target / 4 or k >= 1 << 16:
            break
        k *= 4
    return max(1, int(round(k * target / max(dt, 1e-9))))


def time_round_robin(runs, repeat, target, rounds=3):
    """Median seconds per step of each ``runs[name](k)`` over ``repeat`` timed blocks.

    The blocks are spread over ``rounds`` visits per framework, the order rotated every round, so
    that load drifting on a shared machine hits every framework alike. Before every visit the
    process sleeps GAP_S: BLAS and OpenMP worker threads keep spinning for ~0.1 s after their last
    call (OpenBLAS' thread timeout), and on 2 cores the spinning pool of the framework timed just
    before would steal a core from the next one (measured here: 2-4x slower blocks without the gap).
    The first visit calibrates the block length (warming up); the later ones start with one untimed
    step. The garbage collector is paused inside timed blocks. Each framework's result also holds
    the median of every visit (``round_medians_s``), for :func:`paired_ratio`."""
    names = list(runs)
    ks = {}
    rounds = max(1, min(rounds, repeat))
    per_visit = [repeat // rounds + (1 if r < repeat % rounds else 0) for r in range(rounds)]
    samples = {n: [] for n in names}
    visits = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            time.sleep(GAP_S)
            if r == 0:
                ks[n] = calibrate(runs[n], target)  # warms up too
            else:
                runs[n](1)
            for _ in range(per_visit[r]):
                gc.disable()
                try:
                    t0 = time.perf_counter()
                    runs[n](ks[n])
                    dt = time.perf_counter() - t0
                finally:
                    gc.enable()
                samples[n].append(dt / ks[n])
            visits[n].append(statistics.median(samples[n][-per_visit[r]:]))
    out = {}
    for n in names:
        s = sorted(samples[n])
        out[n] = {"median_s": statistics.median(s), "min_s": s[0], "q1_s": s[len(s) // 4],
                  "q3_s": s[(3 * len(s)) // 4], "steps_per_block": ks[n], "blocks": len(s),
                  "round_medians_s": visits[n]}
    return out


def paired_ratio(timing, other, base="nnlab"):
    """other/base time per step: the median over the rounds of :func:`time_round_robin` of the two
    frameworks' ratio within the round (their visits lie seconds apart), or the ratio of the
    overall medians with one round (or a saved run without the rounds).

    The machine's speed drifts in stretches of several seconds, longer than one framework's visit
    and shorter than a row: a stretch that slows the visits of one framework in two rounds and of
    the other in one moves the ratio of the overall medians, while the ratios within the rounds
    stay right in the rounds that the stretch covers whole or misses."""
    a, b = timing[other], timing[base]
    ra, rb = a.get("round_medians_s"), b.get("round_medians_s")
    if ra and rb and len(ra) == len(rb) and len(ra) > 1:
        return statistics.median(x / y for x, y in zip(ra, rb))
    return a["median_s"] / b["median_s"]


def sgemm_peak(size=2048, repeat=5):
    """GFLOP/s of numpy's float32 matrix multiply, size^3 (best of ``repeat`` after one warm-up)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(np.float32)
    b = rng.standard_normal((size, size)).astype(np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best / 1e9


class ForeignLoad:
    """CPU time used by OTHER processes while a section runs, in cores (Linux /proc/stat; None
    elsewhere): all busy CPU time minus this process's own, over the wall time."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as fh:
                f = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system

    def cores(self):
        end = self._sample()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        wall = end[0] - self.start[0]
        return max(0.0, ((end[1] - self.start[1]) - (end[2] - self.start[2])) / wall)


QUIET_CORES = 0.3  # a row timed while other processes used more than this is "loaded"


class QuietBudget:
    """``--wait-quiet``: seconds this run may spend waiting for other processes to go quiet, before
    the run and before re-timing a row that was timed under load (at most twice per row)."""

    def __init__(self, seconds):
        self.left = float(seconds)

    def wait(self, window=1.0, verbose=False):
        """Sleep until other processes used < QUIET_CORES over ``window`` s (or the budget is spent)."""
        t0 = time.perf_counter()
        while True:
            load = ForeignLoad()
            time.sleep(window)
            cores = load.cores()
            if cores is None or cores < QUIET_CORES or self.left - (time.perf_counter() - t0) <= 0:
                break
        waited = time.perf_counter() - t0
        self.left -= waited
        if verbose or waited > 2 * window:
            print(f"  [waited {waited:.0f} s for quiet: other processes' load {'?' if cores is None else f'{cores:.2f}'}"
                  f" cores; {max(0.0, self.left):.0f} s of --wait-quiet left]", flush=True)
        return cores


def timed(runs, repeat, target, rounds, budget):
    """time_round_robin, plus the load other processes put on the machine meanwhile; with a
    --wait-quiet budget, waits for quiet first and re-times (up to twice) a row timed under load."""
    for attempt in range(3):
        if budget.left > 0:
            budget.wait()
        load = ForeignLoad()
        timing = time_round_robin(runs, repeat, target, rounds)
        other = load.cores()
        if other is None or other < QUIET_CORES or budget.left <= 0 or attempt == 2:
            return timing, other, attempt
        print(f"  [other processes used {other:.2f} cores while timing: timing again]", flush=True)


def measured_peak(budget):
    """sgemm_peak(), re-measured (at most twice) when other processes were busy meanwhile."""
    for _ in range(3):
        if budget.left > 0:
            budget.wait()
        load = ForeignLoad()
        gflops = sgemm_peak()
        other = load.cores()
        if other is None or other < QUIET_CORES or budget.left <= 0:
            break
    return gflops, other


def ftz_state():
    import nnlab as nl

    return nl.backend.flush_denormals_enabled()


# ---------------------------------------------------------------- sections

def bench_case(spec, opt, args):
    print(f"\n[{spec.name} / {opt}] {spec.describe()}", flush=True)
    print("  correctness of one step vs a float64 NumPy reference (same weights and batch):", flush=True)
    runners, reports = prepare(spec, opt, FRAMEWORKS)
    runs = {n: r.run for n, r in runners.items()}
    runs["gemm-floor"] = GemmFloor(spec).run
    timing, other, retries = timed(runs, args.repeat, args.target, args.rounds, args.budget)
    flops = flops_per_step(spec)
    case = {"config": spec.name, "optimizer": opt, "spec": spec.describe(), "flops_per_step": flops,
            "check": reports, "time": timing, "flush_denormals": ftz_state(), "other_processes_cores": other,
            "retimed": retries,
            "refused": [n for n, r in reports.items() if r is not None and not r["agree"]],
            "unavailable": [n for n, r in reports.items() if r is None]}
    for t in timing.values():
        t["gflops"] = flops / t["median_s"] / 1e9
    nn = timing.get("nnlab")
    case["ratios"] = {f"{o}/nnlab": paired_ratio(timing, o)
                      for o in ("torch", "jax", "numpy", "nnlab-kernel") if nn and o in timing}
    summary = "  ".join(f"{n} {fmt_us(t['median_s'])} us" for n, t in timing.items())
    print(f"  median per step: {summary}" + (f"  [other processes used {other:.2f} cores meanwhile]"
                                                if other is not None else ""), flush=True)
    if "fit" not in args.skip and "nnlab" in runners:
        case["fit"] = bench_fit(spec, opt, args)
    return case


def bench_fit(spec, opt, args):
    """Per-step time of ``Trainer.fit`` over one epoch of identical-size batches (the epoch's
    training-set evaluation included), and the trainer's own per-step clock."""
    import nnlab as nl

    X, y = make_data(spec)
    params = [p.copy() for p in build_nnlab(spec).params()]
    runner = NnlabRunner(spec, opt, params, X, y)
    runner.first_step()
    calibrate(runner.run, 0.01)  # warm-up
    t0 = time.perf_counter()
    runner.run(3)
    per = (time.perf_counter() - t0) / 3
    n_batches = int(min(64, max(4, 0.15 // max(per, 1e-9))))
    rng = np.random.default_rng(1)
    Xd = np.tile(X, (n_batches, 1)) + rng.standard_normal((n_batches * spec.batch, X.shape[1])).astype(np.float32)
    yd = np.tile(y, (n_batches,) + (1,) * (y.ndim - 1))
    trainer = runner.trainer
    walls, inner = [], []
    if args.budget.left > 0:
        args.budget.wait()
    time.sleep(GAP_S)
    load = ForeignLoad()
    for _ in range(1 + max(2, args.repeat // 5)):
        t0 = time.perf_counter()
        hist = trainer.fit(Xd, yd, epochs=1, batch_size=spec.batch, shuffle=False)
        walls.append((time.perf_counter() - t0) / n_batches)
        if hist.step_time:
            inner.append(statistics.median(hist.step_time))
    walls, inner = walls[1:], inner[1:]
    known = {"step", "fit", "evaluate", "grads"}
    extra = sorted(n for n in dir(nl.Trainer) if not n.startswith("_") and n not in known)
    return {"batches_per_epoch": n_batches, "fit_per_step_s": statistics.median(walls),
            "other_processes_cores": load.cores(),
            "fit_step_time_median_s": statistics.median(inner) if inner else None,
            "trainer_extra_methods": extra}


def bench_denormals(args):
    """Deep-narrow, SGD-momentum: nnlab and torch with flush-to-zero off and on; JAX as it comes."""
    import nnlab as nl

    spec, opt = CONFIGS["deep-narrow"], "sgd-momentum"
    print(f"\n[denormals] deep-narrow / {opt}: flush-to-zero (FTZ+DAZ) off vs on", flush=True)
    X, y = make_data(spec)
    net = build_nnlab(spec)
    old = nl.backend.set_flush_denormals(False)
    try:
        net.loss_and_grads(X, y)
        errs = np.concatenate([e.ravel() for e in net.layer_errors])
    finally:
        nl.backend.set_flush_denormals(old)
    nz = errs[errs != 0]
    sub_frac = float(np.mean(np.abs(nz) < FLT_MIN)) if nz.size else 0.0
    zero_frac = float(np.mean(errs == 0))
    runners, reports = prepare(spec, opt, ("nnlab", "torch", "jax"), quiet=True)
    for n, rep in reports.items():
        if rep is not None and not rep["agree"]:
            print(check_line(n, rep), flush=True)
    runs = {}
    if "nnlab" in runners:
        r_on = NnlabRunner(spec, opt, [p.copy() for p in build_nnlab(spec).params()], X, y)
        r_on.first_step()
        runs["nnlab ftz off"] = with_ftz(runners["nnlab"].run, False, nl.backend.set_flush_denormals)
        runs["nnlab ftz on"] = with_ftz(r_on.run, True, nl.backend.set_flush_denormals)
    if "torch" in runners:
        import torch

        def torch_setter(on):
            prev = ftz_state()
            torch.set_flush_denormal(bool(on))
            return prev

        r_on = TorchRunner(spec, opt, [p.copy() for p in build_nnlab(spec).params()], X, y)
        r_on.first_step()
        runs["torch ftz off"] = with_ftz(runners["torch"].run, False, torch_setter)
        runs["torch ftz on"] = with_ftz(r_on.run, True, torch_setter)
    if "jax" in runners:
        runs["jax (XLA flushes)"] = runners["jax"].run
    timing, other, _ = timed(runs, args.repeat, args.target, args.rounds, args.budget)
    for n, t in timing.items():
        print(f"    {n:18s} {fmt_us(t['median_s']):>9s} us", flush=True)
    if other is not None:
        print(f"    [other processes used {other:.2f} cores meanwhile]", flush=True)
    print(f"    layer errors E_l (nnlab, FTZ off): {100 * sub_frac:.1f}% of the nonzero entries subnormal, "
          f"{100 * zero_frac:.1f}% exactly 0", flush=True)
    return {"config": spec.name, "optimizer": opt, "time": timing, "check": reports, "other_processes_cores": other,
            "subnormal_fraction_of_nonzero_errors": sub_frac, "zero_fraction_of_errors": zero_frac}


def with_ftz(run, enabled, setter):
    def wrapped(k):
        old = setter(enabled)
        try:
            run(k)
        finally:
            setter(old)
    return wrapped


def bench_sweep(kind, values, args):
    """Time per step vs depth (width 64) or vs width (depth 3), SGD-momentum; nnlab, torch, jax."""
    rows = []
    print(f"\n[{kind} sweep] {'width 64' if kind == 'depth' else 'depth 3'}, sigmoid, batch 64, "
          "softmax-CE, SGD-momentum, float32", flush=True)
    for v in values:
        spec = mlp_spec(v, 64) if kind == "depth" else mlp_spec(3, v)
        runners, reports = prepare(spec, "sgd-momentum", ("nnlab", "torch", "jax"), quiet=True)
        bad = [n for n, r in reports.items() if r is not None and not r["agree"]]
        timing, other, _ = timed({n: r.run for n, r in runners.items()}, max(2, args.repeat // 2), args.target,
                                 min(2, args.rounds), args.budget)
        row = {kind: v, "spec": spec.describe(), "flops_per_step": flops_per_step(spec), "refused": bad,
               "time": timing, "check": reports, "other_processes_cores": other}
        rows.append(row)
        print("    " + f"{kind} {v:5d}: " + "  ".join(f"{n} {fmt_us(t['median_s'])} us" for n, t in timing.items())
              + (f"  (refused: {', '.join(bad)})" if bad else "")
              + (f"  [other processes: {other:.2f} cores]" if other is not None else ""), flush=True)
    return rows


# ---------------------------------------------------------------- subprocess probes

def _vm(field):
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def probe_memory(config, framework, opt):
    """In a fresh process: growth of the resident set while one framework trains one config.

    The framework is first warmed up on the tiny net (so that its runtime, loaded kernels and
    allocator pools are resident before the baseline); then, from a baseline taken after the
    config's weights and batch exist: the peak while it builds its model and optimizer and runs 4
    steps (JAX's compile of this config's step included), what stays resident afterwards, and the
    peak growth over 5 further steps (per-step allocations that do not fit in memory already held)."""
    import importlib

    importlib.import_module({"nnlab": "nnlab", "torch": "torch", "jax": "jax", "numpy": "numpy"}[framework])
    import nnlab  # noqa: F401 - the weights come from nnlab in every case

    tiny = CONFIGS["tiny"]
    Xt, yt = make_data(tiny)
    warm = RUNNERS[framework](tiny, opt, [p.copy() for p in build_nnlab(tiny).params()], Xt, yt)
    warm.first_step()
    warm.run(3)
    spec = CONFIGS[config]
    X, y = make_data(spec)
    params = [p.copy() for p in build_nnlab(spec).params()]
    gc.collect()
    resettable = _reset_peak()
    base = _vm("VmRSS")
    runner = RUNNERS[framework](spec, opt, params, X, y)
    runner.first_step()
    runner.run(3)
    gc.collect()
    held, peak_setup = _vm("VmRSS"), _vm("VmHWM")
    _reset_peak()
    base2 = _vm("VmRSS")
    runner.run(5)
    peak_steady = _vm("VmHWM")
    return {"config": config, "framework": framework, "optimizer": opt, "hwm_resettable": resettable,
            "setup_and_first_steps_peak_bytes": peak_setup - base if resettable else None,
            "held_after_steps_bytes": held - base,
            "steady_step_peak_bytes": peak_steady - base2 if resettable else None,
            "params_bytes": int(sum(p.nbytes for p in params))}


def probe_first_call():
    """In a fresh process: import time, then first and second Trainer.step (tiny, float32)."""
    import nnlab as nl  # already imported by _PROBE's launcher, which timed it

    t_import = float(os.environ.get("NNLAB_BENCH_IMPORT_S", "nan"))
    spec = CONFIGS["tiny"]
    X, y = make_data(spec)
    out = {"import_s": t_import}
    for opt in OPTIMIZERS:
        net = build_nnlab(spec)
        trainer = nl.Trainer(net, nnlab_optimizer(opt))
        t0 = time.perf_counter()
        trainer.step(X, y)
        t1 = time.perf_counter()
        trainer.step(X, y)
        out[opt] = {"first_step_s": t1 - t0, "second_step_s": time.perf_counter() - t1}
    return out


# A fresh interpreter that times ``import nnlab`` (this module lives in the package, so importing it
# imports nnlab first) and then runs main() with the probe's arguments.
_PROBE = ("import os, sys, time\n"
          "t0 = time.perf_counter()\n"
          "import nnlab\n"
          "os.environ['NNLAB_BENCH_IMPORT_S'] = repr(time.perf_counter() - t0)\n"
          "from nnlab.benchmark import main\n"
          "main(sys.argv[1:])\n")


def run_probe(args_list, env=None, timeout=300):
    cmd = [sys.executable, "-c", _PROBE] + args_list
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-800:], "wall_s": wall}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


def bench_compile():
    """nnlab's first step in a fresh process: cold (empty NUMBA_CACHE_DIR), then warm (same dir)."""
    print("\n[first call] nnlab Trainer.step in a fresh process (tiny, float32)", flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="nnlab-bench-cache-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            load = ForeignLoad()
            res = run_probe(["--_probe-first-call"], env=env, timeout=400)
            res["other_processes_cores"] = load.cores()
            out[label] = res
            if "error" in res:
                print(f"    {label}: failed: {res['error']}", flush=True)
                continue
            print(f"    {label:4s} ({'empty' if label == 'cold' else 'filled'} cache): import {res['import_s']:.2f} s, "
                  f"first step {res['sgd-momentum']['first_step_s']:.2f} s (then Adam's first "
                  f"{res['adam']['first_step_s']:.3f} s), second step "
                  f"{1e6 * res['sgd-momentum']['second_step_s']:.0f} us; process wall {res['wall_s']:.2f} s"
                  + ("" if res["other_processes_cores"] is None else
                     f" [other processes: {res['other_processes_cores']:.2f} cores]"), flush=True)
    return out


def bench_demo():
    """Wall time of ``nnlab demo vanishing`` in a subprocess, twice (the second is the warm start)."""
    exe = os.path.join(os.path.dirname(sys.executable), "nnlab")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-c",
                                             "import sys; from nnlab_cli.main import main; sys.exit(main())"]
    cmd += ["demo", "vanishing"]
    print("\n[demo] nnlab demo vanishing, wall time of the whole process", flush=True)
    walls, codes = [], []
    load = ForeignLoad()
    for _ in range(2):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        walls.append(time.perf_counter() - t0)
        codes.append(proc.returncode)
    other = load.cores()
    print(f"    run 1: {walls[0]:.2f} s, run 2 (warm): {walls[1]:.2f} s (exit codes {codes})"
          + ("" if other is None else f" [other processes: {other:.2f} cores]"), flush=True)
    return {"command": " ".join(os.path.basename(c) if i == 0 else c for i, c in enumerate(cmd)),
            "wall_s": walls, "exit_codes": codes, "other_processes_cores": other}


# new configurations after the demos: the first Trainer.step of each on the cache the demos filled
# (label, dtype, hidden layers, their output width, optimizer)
_NEW_STEPS = (("dense tanh, float32, SGD", "float32", "nl.Dense(8, 16, activation='tanh')", 16, "nl.optim.SGD(lr=0.1)"),
              ("dense relu, float32, Adam", "float32", "nl.Dense(8, 32, activation='relu')", 32,
               "nl.optim.Adam(lr=1e-3)"),
              ("BatchNorm + Dropout, float64, SGD-momentum", "float64",
               "nl.Dense(8, 16), nl.BatchNorm(16), nl.Activation('relu'), nl.Dropout(0.2)", 16,
               "nl.optim.SGD(lr=0.1, momentum=0.9)"))


def _new_step_source(dtype, hidden, width, opt):
    return ("import numpy as np, nnlab as nl\n"
            "rng = np.random.default_rng(0)\n"
            f"X = rng.normal(size=(32, 8)).astype(np.{dtype}); y = rng.integers(0, 3, 32)\n"
            f"net = nl.Sequential([{hidden}, nl.Dense({width}, 3)],\n"
            f"                    loss='softmax_cross_entropy', seed=0, dtype='{dtype}')\n"
            f"nl.Trainer(net, {opt}).step(X, y)\n")


# the first Trainer.step of a new configuration on an empty cache: the first of those above (a small
# dense network, float32, SGD)
_COLD_STEP = _new_step_source(*_NEW_STEPS[0][1:])


def cold_targets(spec):
    """The cold-start targets named by ``spec``: ``all`` (every demo, then ``new-steps``, then
    ``step``, then ``warmup``) or a comma-separated list of demo names, ``new-steps`` (the first
    Trainer.step of three configurations no demo trains, on the cache the demos filled), ``step``
    (the first Trainer.step on an empty cache) and ``warmup`` (``nnlab warmup`` of everything, then
    the same first step on the cache it filled)."""
    from .demos import names

    known = names() + ["new-steps", "step", "warmup"]
    if spec == "all":
        return known
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in targets if t not in known]
    if bad or not targets:
        raise ValueError(f"unknown cold-start target(s) {', '.join(map(repr, bad)) or 'none given'}; "
                         f"known: all, {', '.join(known)}")
    return targets


def bench_cold(targets, timeout=900):
    """Cold start: each target in a fresh process, on a kernel cache that starts empty.

    The demos run in order on one cache directory that starts empty (``nnlab demo vanishing``
    first, as a new user would: each later demo finds the kernels the earlier ones compiled);
    ``new-steps`` then runs the first ``Trainer.step`` of three configurations that no demo
    trains (:data:`_NEW_STEPS`), one process each, on that same cache;
    ``step`` (the first ``Trainer.step`` of a small dense float32 network) runs on a cache of its
    own that is empty; ``warmup`` runs ``nnlab warmup`` (every target, one process per core) on a
    cache of its own and then the same first step on it. The background warm-up a first demo
    starts is off here (``NNLAB_WARMUP=0``): each row is what that command compiles by itself.
    Reports each process's wall and CPU seconds (user + system, its children included) and its exit
    code; on a machine shared with other processes the CPU seconds are the steadier number.
    """
    import resource

    print("\n[cold start] each command in a fresh process on an empty kernel cache "
          "(demos in order on one cache; the first Trainer.step on a cache of its own)", flush=True)
    rows = []
    launcher = "import sys; from nnlab_cli.main import main; sys.exit(main())"

    def one(cmd, cache, label, target):
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NNLAB_QUIET="1", NNLAB_WARMUP="0")
        load = ForeignLoad()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        row = {"target": target, "command": label, "wall_s": wall, "cpu_s": cpu, "exit_code": code,
               "other_processes_cores": load.cores()}
        rows.append(row)
        other = row["other_processes_cores"]
        print(f"    {label:36s} wall {wall:6.1f} s  CPU {cpu:6.1f} s  exit {code}"
              + ("" if other is None else f"  [other processes: {other:.2f} cores]"), flush=True)

    with tempfile.TemporaryDirectory(prefix="nnlab-cold-demos-") as shared:
        for target in targets:
            with tempfile.TemporaryDirectory(prefix="nnlab-cold-step-") as own:
                if target == "step":
                    one([sys.executable, "-c", _COLD_STEP], own, "first Trainer.step", target)
                elif target == "new-steps":
                    for label, *config in _NEW_STEPS:
                        one([sys.executable, "-c", _new_step_source(*config)], shared,
                            f"step: {label}", target)
                elif target == "warmup":
                    jobs = str(os.cpu_count() or 1)
                    one([sys.executable, "-c", launcher, "warmup", "--jobs", jobs], own,
                        f"nnlab warmup --jobs {jobs}", target)
                    one([sys.executable, "-c", _COLD_STEP], own, "first Trainer.step after it", "step-warm")
                else:
                    one([sys.executable, "-c", launcher, "demo", target], shared, f"nnlab demo {target}", target)
    return rows


def cold_table(rows):
    lines = [f"    {'command (empty cache)':36s} {'wall s':>7s} {'CPU s':>7s}  exit"]
    for r in rows:
        lines.append(f"    {r['command']:36s} {r['wall_s']:7.1f} {r['cpu_s']:7.1f}  {r['exit_code']}")
    return "\n".join(lines)


def bench_memory(configs, opt):
    print(f"\n[memory] resident-set growth, one framework per fresh process, warmed on tiny first ({opt})", flush=True)
    rows = []
    for config in configs:
        for fw in ("nnlab", "torch", "jax", "numpy"):
            res = run_probe(["--_probe-memory", f"{config}:{fw}:{opt}"], timeout=300)
            rows.append(res if "error" not in res else {"config": config, "framework": fw, **res})
            if "error" in res:
                if "ModuleNotFoundError" not in res["error"] and "ImportError" not in res["error"]:
                    print(f"    {config} {fw}: failed: {res['error'][-200:]}", flush=True)
                continue
            print(f"    {config:12s} {fw:6s} peak +{mb(res['setup_and_first_steps_peak_bytes'])} MB (setup + 4 steps), "
                  f"held +{mb(res['held_after_steps_bytes'])} MB, steady steps +{mb(res['steady_step_peak_bytes'])} MB"
                  f"  (parameters {mb(res['params_bytes'])} MB)", flush=True)
    return rows


# ---------------------------------------------------------------- reporting

def fmt_us(seconds):
    if seconds is None:
        return "-"
    us = seconds * 1e6
    return f"{us:.1f}" if abs(us) < 100 else f"{us:,.0f}"


def mb(nbytes):
    return "-" if nbytes is None else f"{nbytes / 2 ** 20:.1f}"


def cell_us(case, fw):
    if fw in case["time"]:
        return fmt_us(case["time"][fw]["median_s"])
    if fw in case["refused"]:
        return "refused"
    return "n/a"


def cell_ratio(case, other):
    r = case.get("ratios", {}).get(f"{other}/nnlab")
    return "-" if r is None else f"{r:.2f}x"


def main_table(cases):
    head = (f"{'config':12s} {'optimizer':13s} {'nnlab us':>9s} {'kernel us':>9s} {'torch us':>9s} {'jax us':>9s} "
            f"{'numpy us':>9s} {'torch/nnlab':>11s} {'jax/nnlab':>9s} {'numpy/nnlab':>11s} {'GFLOP/s':>8s} {'% peak':>6s} "
            f"{'load':>5s}")
    lines = [head, "-" * len(head)]
    for c in cases:
        nn = c["time"].get("nnlab")
        gf, pct = (f"{nn['gflops']:.1f}", f"{nn.get('pct_peak', float('nan')):.1f}") if nn else ("-", "-")
        load = c.get("other_processes_cores")
        load = "-" if load is None else f"{load:.2f}"
        lines.append(f"{c['config']:12s} {c['optimizer']:13s} {cell_us(c, 'nnlab'):>9s} {cell_us(c, 'nnlab-kernel'):>9s} "
                     f"{cell_us(c, 'torch'):>9s} {cell_us(c, 'jax'):>9s} {cell_us(c, 'numpy'):>9s} "
                     f"{cell_ratio(c, 'torch'):>11s} {cell_ratio(c, 'jax'):>9s} {cell_ratio(c, 'numpy'):>11s} "
                     f"{gf:>8s} {pct:>6s} {load:>5s}")
    return "\n".join(lines)


def _verdict(r, need, nn, other_s):
    if r >= need:
        return f"MET (margin {r / need:.2f}x)"
    return f"MISSED by {need / r:.2f}x: nnlab {fmt_us(nn)} us, needs <= {fmt_us(other_s / need)} us"


def evaluate_goals(cases, demo, denormals=None):
    """[(goal text, measured, verdict text, met or None)] for the speed goals (SGD-momentum rows,
    every framework with its default denormal policy); with the denormals section, the deep-narrow
    goals again with nnlab's flush-to-zero on (against torch with and without it)."""
    by = {(c["config"], c["optimizer"]): c for c in cases}
    out = []
    for config, other, need in GOALS:
        text = f"{config}: {other}/nnlab >= {need:g}x"
        c = by.get((config, "sgd-momentum"))
        r = c and c.get("ratios", {}).get(f"{other}/nnlab")
        if r is None:
            why = "not measured" if c is None else "no ratio (framework unavailable or refused)"
            out.append((text, "-", why, None))
            continue
        nn = c["time"]["nnlab"]["median_s"]
        out.append((text, f"{r:.2f}x", _verdict(r, need, nn, c["time"][other]["median_s"]), r >= need))
        if config == "deep-narrow" and denormals and "nnlab ftz on" in denormals["time"]:
            t = denormals["time"]
            nn = t["nnlab ftz on"]["median_s"]
            alts = [("jax (XLA flushes)", "jax")] if other == "jax" else [("torch ftz off", "torch"),
                                                                          ("torch ftz on", "torch FTZ")]
            for key, label in alts:
                if key in t:
                    r = t[key]["median_s"] / nn
                    out.append((f"  nnlab FTZ on: {label}/nnlab >= {need:g}x", f"{r:.2f}x",
                                _verdict(r, need, nn, t[key]["median_s"]), r >= need))
    if demo and len(demo["wall_s"]) > 1:
        w = demo["wall_s"][1]
        verdict = (f"MET (margin {DEMO_GOAL_S / w:.2f}x)" if w < DEMO_GOAL_S
                   else f"MISSED by {w / DEMO_GOAL_S:.2f}x")
        out.append((f"nnlab demo vanishing, 2nd run < {DEMO_GOAL_S:g} s", f"{w:.2f} s", verdict, w < DEMO_GOAL_S))
    else:
        out.append((f"nnlab demo vanishing, 2nd run < {DEMO_GOAL_S:g} s", "-", "not measured", None))
    return out


def goals_table(goals):
    lines = [f"{'goal (SGD-momentum rows)':38s} {'measured':>9s}  verdict", "-" * 100]
    lines += [f"{g:38s} {m:>9s}  {v}" for g, m, v, _ in goals]
    return "\n".join(lines)


def sweep_table(kind, rows):
    head = (f"{kind:>6s} {'nnlab us':>9s} {'torch us':>9s} {'jax us':>9s} {'torch/nnlab':>11s} {'jax/nnlab':>9s} "
            f"{'nnlab GFLOP/s':>13s} {'load':>5s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        t = r["time"]
        nn = t.get("nnlab", {}).get("median_s")

        def cell(fw, t=t):
            return fmt_us(t[fw]["median_s"]) if fw in t else "n/a"

        def ratio(fw, t=t, nn=nn):
            return f"{t[fw]['median_s'] / nn:.2f}x" if nn and fw in t else "-"

        gf = f"{r['flops_per_step'] / nn / 1e9:.1f}" if nn else "-"
        load = "-" if r.get("other_processes_cores") is None else f"{r['other_processes_cores']:.2f}"
        lines.append(f"{r[kind]:>6d} {cell('nnlab'):>9s} {cell('torch'):>9s} {cell('jax'):>9s} "
                     f"{ratio('torch'):>11s} {ratio('jax'):>9s} {gf:>13s} {load:>5s}")
    return "\n".join(lines)


def detail_table(cases):
    lines = [f"{'config':12s} {'optimizer':13s} {'step us':>9s} {'kernel us':>9s} {'wrapper us':>10s} "
             f"{'fit/step us':>11s} {'fit inner us':>12s} {'GEMM floor us':>13s} {'step/floor':>10s}"]
    lines.append("-" * len(lines[0]))
    for c in cases:
        t = c["time"]
        st = t.get("nnlab", {}).get("median_s")
        kn = t.get("nnlab-kernel", {}).get("median_s")
        fit = c.get("fit") or {}
        fl = t.get("gemm-floor", {}).get("median_s")
        over = f"{paired_ratio(t, 'nnlab', base='gemm-floor'):.2f}x" if st and fl else "-"
        lines.append(f"{c['config']:12s} {c['optimizer']:13s} {fmt_us(st):>9s} {fmt_us(kn):>9s} "
                     f"{(fmt_us(st - kn) if st and kn else '-'):>10s} {fmt_us(fit.get('fit_per_step_s')):>11s} "
                     f"{fmt_us(fit.get('fit_step_time_median_s')):>12s} {fmt_us(fl):>13s} "
                     f"{over:>10s}")
    return "\n".join(lines)


def memory_table(rows):
    fws = ("nnlab", "torch", "jax", "numpy")
    lines = [f"{'config':12s} " + " ".join(f"{fw:>13s}" for fw in fws) + f" {'params MB':>9s}"]
    lines.append("-" * len(lines[0]))
    for config in dict.fromkeys(r["config"] for r in rows):
        cells, params = [], None
        for fw in fws:
            r = next((r for r in rows if r["config"] == config and r["framework"] == fw), None)
            if r is None or "error" in r:
                cells.append("n/a")
                continue
            params = r["params_bytes"]
            cells.append(f"{mb(r['setup_and_first_steps_peak_bytes'])} / {mb(r['steady_step_peak_bytes'])}")
        lines.append(f"{config:12s} " + " ".join(f"{c:>13s}" for c in cells) + f" {mb(params):>9s}")
    return "\n".join(lines)


def machine_info():
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "numpy": np.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    for mod in ("numba", "nnlab", "torch", "jax"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    try:
        from nnlab.backend import get_num_threads
        from nnlab.kernels.blas import LIBRARY

        info["nnlab_blas"] = LIBRARY
        info["nnlab_blas_threads"] = get_num_threads()
    except ImportError:  # an nnlab before kernels/blas.py
        info["nnlab_blas"] = None
    try:
        import torch

        torch.set_num_threads(compute_threads())
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        info["git_commit"] = subprocess.run(["git", "-C", root, "log", "-1", "--format=%h"], capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "nnlab"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
        info["nnlab_sources_modified_since_commit"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    info["time"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return info


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer/shorter blocks, shorter sweeps, no fit, memory probes "
                    "or cold compile (about 75 s)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated subset of sgd-momentum,adam")
    ap.add_argument("--repeat", type=int, default=None, help="timed blocks per framework (default 15, quick 3)")
    ap.add_argument("--json", default=None, help="write every number to this file")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="on a shared machine: spend up to SECONDS in all waiting for other processes to use "
                    f"< {QUIET_CORES} cores, before the run and before re-timing a row timed under load")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    ap.add_argument("--report", default=None, metavar="FILE", help="only print the tables of a --json file")
    ap.add_argument("--cold", default=None, metavar="TARGETS",
                    help="only the cold-start section: 'all' or a comma-separated list of demo names, 'new-steps', "
                    "'step' and 'warmup' (each in a fresh process on an empty kernel cache; minutes)")
    ap.add_argument("--_probe-memory", dest="probe_memory", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_probe-first-call", dest="probe_first_call", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    args.optimizers = [o for o in args.optimizers.split(",") if o]
    args.skip = {s for s in args.skip.split(",") if s}
    for c in args.configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; known: {', '.join(CONFIGS)}")
    for o in args.optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r}; known: {', '.join(OPTIMIZERS)}")
    for s in args.skip:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r}; known: {', '.join(SECTIONS)}")
    if args.repeat is None:
        args.repeat = 3 if args.quick else 15
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    args.target = 0.01 if args.quick else 0.04  # seconds per timed block
    args.rounds = 1 if args.quick else 5  # visits per framework (see time_round_robin, paired_ratio)
    if args.quick:
        args.skip |= {"memory", "fit"}
    return args


def report(results):
    """Print the summary tables of a run (``results`` as main() returns it or --json wrote it)."""
    info, peak = results["machine"], results["sgemm_peak_gflops"]
    goals = evaluate_goals(results["cases"], results.get("demo"), results.get("denormals"))
    print("\n" + "=" * 120)
    print(f"Median time per training step (float32; {results['repeat']} round-robin blocks per framework; "
          f"ratio other/nnlab > 1 means nnlab is faster;\nGFLOP/s and % peak are nnlab's, against the "
          f"{peak:.0f} GFLOP/s sgemm peak (the better of " + " and ".join(f"{r[0]:.0f}" for r in results.get(
              "sgemm_peak_runs", [[peak]])) + " at start and end); load = cores used by other processes meanwhile;\ncommit "
          f"{info.get('git_commit')}{' + uncommitted nnlab changes' if info.get('nnlab_sources_modified_since_commit') else ''}"
          f", {info['time']})")
    print(main_table(results["cases"]))
    if results["cases"]:
        print("\nnnlab detail: Trainer.step vs the bare compiled call it makes, Trainer.fit per step, the GEMM floor")
        print(detail_table(results["cases"]))
    if "denormals" in results:
        d = results["denormals"]
        print(f"\nDenormals, deep-narrow / sgd-momentum ({100 * d['subnormal_fraction_of_nonzero_errors']:.0f}% of "
              "nnlab's nonzero layer errors subnormal): "
              + ", ".join(f"{n} {fmt_us(t['median_s'])} us" for n, t in d["time"].items()))
    for kind in ("depth", "width"):
        if f"{kind}_sweep" in results:
            print(f"\n{kind.capitalize()} sweep (SGD-momentum, sigmoid, batch 64, PyTorch default init)")
            print(sweep_table(kind, results[f"{kind}_sweep"]))
    if results.get("memory"):
        print(f"\nResident-set growth, MB: peak over setup + 4 steps / growth over 5 more steps "
              f"({results['memory'][0].get('optimizer', '')}; each framework in a fresh process, warmed on tiny first)")
        print(memory_table(results["memory"]))
    fc, demo = results.get("first_call"), results.get("demo")
    if fc and all("error" not in fc[k] for k in ("cold", "warm")):
        print(f"\nnnlab first Trainer.step in a fresh process: {fc['cold']['sgd-momentum']['first_step_s']:.1f} s with an "
              f"empty Numba cache (compile), {fc['warm']['sgd-momentum']['first_step_s']:.2f} s with it filled (load); "
              f"import nnlab {fc['warm']['import_s']:.2f} s")
    if demo:
        print(f"nnlab demo vanishing (whole process): {demo['wall_s'][0]:.2f} s, then {demo['wall_s'][1]:.2f} s warm")
    if results.get("layers"):
        from . import bench_layers

        print("\nLayers: training steps of networks built from the remedy layers (float32; Trainer.step vs torch eager; "
              "see nnlab/bench_layers.py)")
        print(bench_layers.table(results["layers"]))
    print("\nSpeed goals (docs/performance.md#goals; nnlab = Trainer.step)")
    print(goals_table(goals))
    return goals


def main(argv=None):
    args = parse_args(argv)
    if args.probe_memory:
        print(json.dumps(probe_memory(*args.probe_memory.split(":"))))
        return None
    if args.probe_first_call:
        print(json.dumps(probe_first_call()))
        return None
    if args.report:
        with open(args.report) as fh:
            results = json.load(fh)
        report(results)
        return results
    if args.cold is not None:
        try:
            targets = cold_targets(args.cold)
        except ValueError as exc:
            raise SystemExit(f"--cold: {exc}") from None
        results = {"machine": machine_info(), "cold": bench_cold(targets)}
        print("\nCold start (wall and CPU seconds of each process)")
        print(cold_table(results["cold"]))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=2, default=str)
            print(f"wrote {args.json}")
        return results
    t_start = time.perf_counter()
    args.budget = QuietBudget(args.wait_quiet)
    if args.wait_quiet > 0:
        args.budget.wait(window=3.0, verbose=True)
    info = machine_info()
    print(f"nnlab train-step benchmark -- {info['time']}, commit {info.get('git_commit')}"
          f"{' + uncommitted nnlab changes' if info.get('nnlab_sources_modified_since_commit') else ''}, "
          f"{info.get('cpu')}, {info['cpu_count']} cores, load {info.get('loadavg_start')}")
    print(f"numba {info['numba']}, numpy {info['numpy']}, torch {info['torch']} "
          f"({info.get('torch_threads', '-')} threads), jax {info['jax']}; flush-to-zero at start: {ftz_state()}\n"
          f"nnlab's matrix products: {info.get('nnlab_blas') or 'np.dot inside @njit'}, "
          f"{info.get('nnlab_blas_threads') or '?'} thread(s)",
          flush=True)
    peak, peak_load = measured_peak(args.budget)
    print(f"measured sgemm peak (numpy float32 matmul 2048^3, best of 5): {peak:.0f} GFLOP/s"
          + ("" if peak_load is None else f" [other processes: {peak_load:.2f} cores]"), flush=True)
    results = {"machine": info, "sgemm_peak_gflops": peak, "sgemm_peak_runs": [[peak, peak_load]], "repeat": args.repeat, "block_target_s": args.target,
               "quick": args.quick, "cases": []}

    sections = results["section_s"] = {}
    t0 = time.perf_counter()
    for config in args.configs:
        for opt in args.optimizers:
            results["cases"].append(bench_case(CONFIGS[config], opt, args))
    sections["cases"] = time.perf_counter() - t0
    if "denormals" not in args.skip:
        t0 = time.perf_counter()
        results["denormals"] = bench_denormals(args)
        sections["denormals"] = time.perf_counter() - t0
    if "sweeps" not in args.skip:
        t0 = time.perf_counter()
        depths = (5, 50) if args.quick else (5, 10, 20, 50, 100)
        widths = (64, 1024) if args.quick else (64, 128, 256, 512, 1024, 2048)
        results["depth_sweep"] = bench_sweep("depth", depths, args)
        results["width_sweep"] = bench_sweep("width", widths, args)
        sections["sweeps"] = time.perf_counter() - t0
    if "memory" not in args.skip:
        t0 = time.perf_counter()
        results["memory"] = bench_memory(args.configs, args.optimizers[-1])
        sections["memory"] = time.perf_counter() - t0
    if "compile" not in args.skip:
        if args.quick:
            print("\n[first call] skipped in --quick (a cold compile takes tens of seconds)", flush=True)
        else:
            t0 = time.perf_counter()
            results["first_call"] = bench_compile()
            sections["compile"] = time.perf_counter() - t0
    if "demo" not in args.skip:
        t0 = time.perf_counter()
        results["demo"] = bench_demo()
        sections["demo"] = time.perf_counter() - t0
    if "layers" not in args.skip:
        from . import bench_layers

        t0 = time.perf_counter()
        results["layers"] = bench_layers.run(args.repeat, args.target, time_round_robin, quick=args.quick)
        sections["layers"] = time.perf_counter() - t0

    peak2, peak_load = measured_peak(args.budget)  # again at the end; the better of the two is the peak
    results["sgemm_peak_runs"].append([peak2, peak_load])
    results["sgemm_peak_gflops"] = peak = max(peak, peak2)
    for c in results["cases"]:
        for t in c["time"].values():
            t["pct_peak"] = 100 * t["gflops"] / peak
    report(results)
    results["wall_s"] = time.perf_counter() - t_start
    try:
        results["machine"]["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    print(f"\nwhole run: {results['wall_s']:.0f} s (" + ", ".join(f"{k} {v:.0f} s" for k, v in sections.items()) + ")")
    results["goals"] = [{"goal": g, "measured": m, "verdict": v, "met": ok}
                        for g, m, v, ok in evaluate_goals(results["cases"], results.get("demo"),
                                                          results.get("denormals"))]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
