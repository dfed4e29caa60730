"""The training entry points per optimizer (nnlab.kernels.variants): the same bits as the general
step, cached, chosen for the first optimizer of a process, and compiling one update rule."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import nnlab as nl
from nnlab import _compile_notice as CN
from nnlab.kernels import cpu, kinds_set, variants
from nnlab.kernels import optim_cpu as OK


def _data(n=24, k=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)), rng.integers(0, 3, n)


def _net():
    return nl.Sequential([nl.Dense(6, 10, activation="tanh"), nl.Dense(10, 3)], loss="softmax_cross_entropy", seed=3)


def _train(first, make_opt, monitor, fit):
    """Weights (bits) after training with ``variants.FIRST`` set to ``first``, and the step or
    epoch entry point the trainer chose."""
    X, y = _data()
    net = _net()
    mon = nl.GradientMonitor(net) if monitor else None
    tr = nl.Trainer(net, make_opt(), monitor=mon)
    saved = dict(variants.FIRST)
    variants.FIRST.clear()
    variants.FIRST.update(first)
    try:
        if fit:
            tr.fit(X, y, epochs=2, batch_size=8, shuffle=True, seed=1)
        else:
            for _ in range(3):
                tr.step(X, y)
        chosen = dict(variants.FIRST)
    finally:
        variants.FIRST.clear()
        variants.FIRST.update(saved)
    return [p.copy() for p in net.params()], chosen


@pytest.mark.parametrize("make_opt, monitor, fit", [
    (lambda: nl.optim.SGD(lr=0.1, momentum=0.9), False, False),
    (lambda: nl.optim.Adam(lr=0.01), True, False),
    (lambda: nl.optim.Adam(lr=0.01), False, True),
])
def test_the_per_optimizer_entry_points_give_the_general_steps_bits(make_opt, monitor, fit):
    own, chosen = _train({}, make_opt, monitor, fit)
    code = next(iter(chosen.values()))
    other = 99  # another optimizer came first: this one takes the general entry point
    general, _ = _train({False: other, True: other, "epoch": other}, make_opt, monitor, fit)
    for a, b in zip(own, general):
        assert a.tobytes() == b.tobytes()
    assert code in variants.UPDATES


def test_the_first_optimizer_of_a_process_gets_its_own_step_and_later_ones_the_general_step(monkeypatch):
    monkeypatch.setattr(variants, "FIRST", {})
    assert variants.step_name(OK.ADAM, False) == "train_step_o4"
    assert variants.step_name(OK.ADAM, True) == "train_step_o4r"
    assert variants.step_name(OK.SGD, False) == "train_step"
    assert variants.step_name(OK.ADAM, False) == "train_step_o4"
    assert variants.epoch_name(OK.SGD) == "train_epoch_o0"
    assert variants.epoch_name(OK.ADAM) == "train_epoch"
    assert variants.step_name(1234, True) == "train_step"  # (True: Adam came first)
    monkeypatch.setattr(variants, "FIRST", {})
    variants.several_optimizers()  # a process that compares optimizers: the general steps from the start
    assert variants.step_name(OK.ADAM, False) == "train_step"
    assert variants.step_name(OK.SGD, True) == "train_step"
    assert variants.epoch_name(OK.SGD) == "train_epoch"


def test_the_trainer_calls_the_per_optimizer_step(monkeypatch):
    monkeypatch.setattr(variants, "FIRST", {})
    X, y = _data()
    net = _net()
    calls = []
    real = net._kernels

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    net._kernels = Spy()
    nl.Trainer(net, nl.optim.RMSprop(lr=0.01)).step(X, y)
    assert calls == [f"train_step_o{OK.RMSPROP}", "LG"]  # the step, and the callback it calls loss_and_grad by


def test_the_variants_are_cached_and_bind_one_rule():
    for ks, prefix in ((kinds_set(cpu.EXECUTOR_KINDS[0]), "train_step_k2"), (cpu, "train_step")):
        step = ks.train_step_o4
        assert step.py_func.__name__ == prefix + "_o4"
        assert step.stats.cache_path is not None
        g = step.py_func.__globals__
        assert g["grad_stats"] is variants.no_grad_stats and g["update_stats"] is variants.no_update_stats
        upd = g["opt_update"].py_func.__globals__
        assert upd["adam_update"] is OK.adam_update
        assert all(upd[n] is variants.skip_update for c, n in variants.UPDATES.items() if c != OK.ADAM)
        rec = ks.train_step_o4r.py_func.__globals__
        assert rec["grad_stats"] is getattr(ks, "grad_stats", cpu.grad_stats)
        epoch = ks.train_epoch_o4
        inlined = epoch.py_func.__globals__["train_step_inline"]
        assert inlined.targetoptions.get("inline") == "always"  # no compiled level between
        assert inlined.py_func.__code__ is step.py_func.__code__
        ig = inlined.py_func.__globals__
        assert ig["opt_update"] is g["opt_update"] and ig["grad_stats"] is variants.no_grad_stats
        assert epoch.stats.cache_path is not None
    with pytest.raises(AttributeError):
        getattr(kinds_set(cpu.EXECUTOR_KINDS[0]), "train_step_o" + "99")


# a child process that runs CODE on an empty kernel cache and prints the names of the functions it compiled
_RECORD_COMPILES = """
import json, sys
import numpy as np
from numba.core import event

names = []

class Rec(event.Listener):
    def on_start(self, ev):
        pass

    def on_end(self, ev):
        names.append(ev.data["dispatcher"].py_func.__name__)

event.register("numba:compile", Rec())
CODE
json.dump(names, sys.stdout)
"""


def _compiled_on_an_empty_cache(code, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NNLAB_QUIET="1", NNLAB_WARMUP="0")
    proc = subprocess.run([sys.executable, "-c", _RECORD_COMPILES.replace("CODE", code)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout))


def test_a_first_sgd_update_compiles_no_other_optimizers_rule(tmp_path):
    """On an empty kernel cache, the SGD step's checked update compiles SGD's loop and no other."""
    compiled = _compiled_on_an_empty_cache("""
from nnlab.kernels import cpu
checked = cpu.train_step_o0.py_func.__globals__["opt_update_checked"]
p = np.ones(4); g = np.ones(4); state = np.zeros((1, 4)); hp = np.zeros(16); hp[0] = 0.1
checked(0, hp, 1, p, g, state, 2.0)
""", tmp_path)
    assert "sgd_update" in compiled and "opt_update_checked_o0" in compiled
    assert not compiled & {n for c, n in variants.UPDATES.items() if c != OK.SGD}


def test_the_compile_notice_names_the_optimizer():
    assert CN.describe("train_step_k2_o4r", [])[0] == (
        "the executor for dense layers: training step, Adam with statistics")
    assert CN.describe("train_epoch_o0", [])[0] == "the executor for every layer kind: training epoch, SGD"


def test_fit_on_an_empty_cache_compiles_the_epoch_with_the_step_inlined(tmp_path):
    """fit's compiled epoch runs the step inlined: on an empty cache it compiles no training step of its own."""
    compiled = _compiled_on_an_empty_cache("""
import nnlab as nl
rng = np.random.default_rng(0)
X = rng.normal(size=(24, 3)); y = rng.integers(0, 2, 24)
net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
nl.Trainer(net, nl.optim.SGD(lr=0.1)).fit(X, y, epochs=1, batch_size=8, progress=False)
""", tmp_path)
    assert "train_epoch_k2_o0" in compiled
    assert not {n for n in compiled if n.startswith("train_step")}
