"""The training entry points call loss_and_grad through a C callback per executor and dtype
(nnlab.kernels.cpu, LOSS_AND_GRAD): the same bits as the direct call, a guard for a caller that
skipped loading it, Numba's cache, and no linked loss_and_grad on an empty cache."""

import json
import os
import subprocess
import sys

import numpy as np

import nnlab as nl
from nnlab.kernels import cpu

from .test_kernel_variants import _compiled_on_an_empty_cache


def _nets(dtype):
    """One network per executor: dense; dense + recurrent; every kind but the recurrent ones;
    every kind (an LSTM beside BatchNorm)."""
    return {
        "dense": lambda: nl.Sequential([nl.Dense(6, 6, activation="tanh"), nl.Dense(6, 3)],
                                       loss="softmax_cross_entropy", seed=0, dtype=dtype),
        "recurrent": lambda: nl.Sequential([nl.LSTM(2, 5), nl.Dense(5, 3)],
                                           loss="softmax_cross_entropy", seed=0, dtype=dtype),
        "feed-forward": lambda: nl.Sequential([nl.Dense(6, 6), nl.BatchNorm(6), nl.Activation("relu"),
                                               nl.Dense(6, 3)], loss="softmax_cross_entropy", seed=0, dtype=dtype),
        "every kind": lambda: nl.Sequential([nl.LSTM(2, 5), nl.Dense(5, 6), nl.BatchNorm(6),
                                             nl.Dense(6, 3)], loss="softmax_cross_entropy", seed=0, dtype=dtype),
    }


def test_the_training_entry_points_give_the_bits_of_the_direct_call():
    """Trainer.step, fit's compiled epoch, the monitor's observe and net.loss_and_grads (through
    the callback) against the kernel set's loss_and_grad (the direct call), on every executor (float64; the dense one in float32
    too): loss and gradients bit for bit."""
    rng = np.random.default_rng(3)
    executors = set()
    for name, dtype in (("dense", "float64"), ("dense", "float32"), ("recurrent", "float64"),
                        ("feed-forward", "float64"), ("every kind", "float64")):
        make = _nets(dtype)[name]
        X = rng.normal(size=(12, 6)).astype(dtype)
        y = rng.integers(0, 3, 12)
        if name in ("recurrent", "every kind"):
            X = X.reshape(12, 3, 2)  # sequences of 3 steps of 2 features
        ref, net = make(), make()
        executors.add(net._kernels.LG[0])
        Xp, Yp = ref._prepare(X, y)
        prog = ref._prog_for(Xp)
        ws, dws = ref._workspace(Xp.shape[0], prog.width)
        flat = np.empty_like(ref._flat)
        loss = ref._kernels.loss_and_grad(prog.ops, prog.hp, prog.tens, ref._store, flat, ws, dws, Xp, Yp,
                                          ref._loss_code, True, -1)
        grads = [flat[o:o + int(np.prod(s))].reshape(s) for o, s in ref._shapes]
        api_loss, api_grads = make().loss_and_grads(X, y)
        assert api_loss == loss and all(np.array_equal(g, h) for g, h in zip(api_grads, grads)), name
        tr = nl.Trainer(net, nl.optim.SGD(lr=0.0))
        assert tr.step(X, y) == loss, name
        for g, h in zip(tr.grads, grads):
            assert np.array_equal(g, h), name
        assert nl.GradientMonitor(make()).observe(X, y) == loss, name
        # fit (one full batch, lr 0) runs the compiled epoch
        h = nl.Trainer(make(), nl.optim.SGD(lr=0.0)).fit(X, y, epochs=1, batch_size=12, shuffle=False)
        assert h.loss == [loss], name
    assert executors == {0, 1, 2, cpu.LG_EXECUTOR}  # every executor's callback slot was used


_SKIPPED = """
import json
import numpy as np
import nnlab as nl
from nnlab.kernels import cpu, optim_cpu as OK

rng = np.random.default_rng(0)
X = rng.normal(size=(8, 3)); y = rng.integers(0, 2, 8)
net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
Xp, Yp = net._prepare(X, y)
ws, dws = net._workspace(Xp.shape[0])
code, hp, t, state = tr.optimizer.begin_flat(net._flat)
before, out = net._flat.copy(), np.zeros(3)
# the compiled step called before anything loaded the callback (as a caller bypassing the trainer)
net._kernels.train_step(net._ops, net._hp, net._tens, net._store, tr._grads, ws, dws, Xp, Yp, net._loss_code,
                        True, -1, OK.CLIP_NONE, 0.0, tr._offsets, code, hp, t, state, True, out, False,
                        *tr._no_monitor)
skipped = [out.tolist(), bool(np.array_equal(net._flat, before))]
loss = tr.step(X, y)
json.dump({"skipped": skipped, "loss": loss, "hits": [cb.cache_hits for cb in cpu._LG_CALLBACKS]}, sys.stdout)
"""


def test_a_step_before_the_callback_is_loaded_touches_nothing_and_the_callback_is_cached():
    """A child process that calls the compiled step before anything loaded the callback gets a NaN
    loss and an update that was not applied, its weights untouched (never a call through an empty
    slot); the trainer then loads the callback. A second process loads it from Numba's cache."""
    env = dict(os.environ, NNLAB_QUIET="1", NNLAB_WARMUP="0")
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", "import sys\n" + _SKIPPED], capture_output=True, text=True,
                              env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout))
    for run in runs:
        (loss, norm, applied), untouched = run["skipped"]
        assert np.isnan(loss) and applied == 0.0 and untouched
        assert np.isfinite(run["loss"])
    assert runs[1]["hits"] and all(h >= 1 for h in runs[1]["hits"])


def test_on_an_empty_cache_the_entry_points_link_no_loss_and_grad(tmp_path):
    """loss_and_grads, a step, fit's epoch and the monitor on an empty cache: loss_and_grad's code is
    compiled once, in the callback, and no entry point compiles it as a function of its own to link."""
    compiled = _compiled_on_an_empty_cache("""
import nnlab as nl
rng = np.random.default_rng(0)
X = rng.normal(size=(24, 3)); y = rng.integers(0, 2, 24)
net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
net.loss_and_grads(X, y)
tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
tr.step(X, y)
tr.fit(X, y, epochs=1, batch_size=8, progress=False)
nl.GradientMonitor(net).observe(X, y)
""", tmp_path)
    assert {"loss_and_grad_call_k2", "train_step_k2_o0", "train_epoch_k2_o0", "observe_k2"} <= compiled
    assert not {n for n in compiled if n.startswith("loss_and_grad") and not n.startswith("loss_and_grad_call")}
