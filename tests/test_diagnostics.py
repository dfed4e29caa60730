"""nl.GradientMonitor: every recorded statistic against a slow NumPy computation, the Trainer's
recording (gradients before clipping, weights after the update, the non-finite stop), each verdict
in a scenario built to show it and quiet in healthy runs, JSON, custom thresholds and bad input."""

import json
import math

import numpy as np
import pytest

import nnlab as nl
from nnlab import diagnostics as D
from nnlab.errors import HyperparameterError, NnlabError
from nnlab.kernels.layout import FLT_MIN

RATIO = 0.1  # the default saturation_ratio
MAX_DERIV = {"sigmoid": 0.25, "tanh": 1.0, "softsign": 1.0}


# ---------------------------------------------------------------- the slow reference
def reference(net, X, y, ratio=RATIO):
    """Per Dense layer, every SERIES column computed with NumPy from the public API (no update:
    update_norm = 0). Returns (loss, [dict per layer])."""
    loss, grads = net.loss_and_grads(X, y)
    errors = net.layer_errors
    inputs = net.layer_inputs(X, training=False)
    names = net.param_names()
    params = net.params()
    rows = []
    for l, layer in enumerate(net.layers):
        W, dW = params[names.index(f"{l}.W")], grads[names.index(f"{l}.W")]
        db = grads[names.index(f"{l}.b")] if f"{l}.b" in names else np.zeros(0)
        _, Z, A = inputs[l]
        E = errors[l]
        act = layer.activation
        Z64 = Z.astype(np.float64)
        d = np.abs(act.scale * act.derivative(Z64))
        ok = np.isfinite(Z) & np.isfinite(A)
        alive = (d != 0) | ~ok
        if act.name in MAX_DERIV:
            saturated = int(np.sum(ok & (d < ratio * MAX_DERIV[act.name] * abs(act.scale))))
            sat_frac = saturated / Z.size
        else:
            sat_frac = 0.0
        g64, e64 = dW.astype(np.float64), E.astype(np.float64)
        rows.append({
            "grad_norm": np.sqrt(np.sum(g64 ** 2)),
            "bias_grad_norm": np.sqrt(np.sum(db.astype(np.float64) ** 2)),
            "error_norm": np.sqrt(np.sum(e64 ** 2)),
            "weight_norm": np.sqrt(np.sum(W.astype(np.float64) ** 2)),
            "update_norm": 0.0,
            "dead_fraction": float(np.mean(~alive.any(axis=0))),
            "saturated_fraction": sat_frac,
            "nonfinite": int(np.sum(~np.isfinite(W)) + np.sum(~np.isfinite(dW)) + np.sum(~ok)
                             + np.sum(~np.isfinite(E))),
            "subnormal": int(np.sum((np.abs(g64) > 0) & (np.abs(g64) < FLT_MIN))
                             + np.sum((np.abs(e64) > 0) & (np.abs(e64) < FLT_MIN))),
            "zero_grad": int(np.sum(dW == 0)),
            "z_mean": float(np.mean(Z64[ok])), "z_std": float(np.std(Z64[ok])),
            "a_mean": float(np.mean(A.astype(np.float64)[ok])), "a_std": float(np.std(A.astype(np.float64)[ok])),
            "n_grad": W.size + Z.size,
        })
    return loss, rows


COUNTS = ("nonfinite", "subnormal", "zero_grad", "n_grad")


def assert_rows_match(mon, rows, step=-1, rtol=1e-10, skip=()):
    for name in D.SERIES:
        if name in skip:
            continue
        got = mon.series(name)[step]
        want = np.array([r[name] for r in rows], dtype=np.float64)
        if name in COUNTS or name in ("dead_fraction", "saturated_fraction"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-300, err_msg=name)


def mixed_net(dtype="float64", seed=0):
    """tanh (large weights: saturates), relu with a negative bias (dead units), sigmoid (large
    weights), then a linear output layer."""
    return nl.Sequential([
        nl.Dense(4, 12, activation="tanh", init=nl.init.get("normal", std=1.5)),
        nl.Dense(12, 10, activation="relu", init="he_normal", bias_init=-1.0),
        nl.Dense(10, 8, activation="sigmoid", init=nl.init.get("normal", std=3.0)),
        nl.Dense(8, 3),
    ], loss="softmax_cross_entropy", seed=seed, dtype=dtype)


def class_data(n=48, d=4, k=3, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, rng.integers(0, k, size=n)


def moons(n=256, seed=0):
    return nl.datasets.load("moons", n=n, seed=seed)


def fired(mon):
    return {v.name for v in mon.fired()}


def verdict(mon, name):
    return next(v for v in mon.verdicts() if v.name == name)


# ---------------------------------------------------------------- statistics == NumPy
def test_observe_matches_numpy_for_every_series():
    net = mixed_net()
    X, y = class_data()
    mon = nl.GradientMonitor(net)
    loss = mon.observe(X, y)
    ref_loss, rows = reference(net, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-14)
    assert mon.steps == 1 and mon.loss == [loss] and mon.applied == [None] and mon.batch == [48]
    assert_rows_match(mon, rows)
    # the scenario is not trivial: dead units, saturation and exact zeros are all present
    assert mon.series("dead_fraction")[0, 1] > 0
    assert mon.series("saturated_fraction")[0, 0] > 0.2 and mon.series("saturated_fraction")[0, 2] > 0.1
    assert mon.series("zero_grad")[0, 1] > 0 and mon.series("zero_grad")[0, 2] > 0  # dead units: zero dW
    # columns in their own layer, zero rows in the next
    # observe leaves what loss_and_grads leaves
    _, grads = net.loss_and_grads(X, y)
    for g, h in zip(mon.grads, grads):
        np.testing.assert_array_equal(g, h)
    assert mon.grad_norm_total[0] == pytest.approx(math.sqrt(sum(float(np.sum(g ** 2)) for g in grads)), rel=1e-12)


def test_dead_fraction_relu_negative_bias_is_exact():
    net = nl.Sequential([nl.Dense(2, 32, activation="relu", init="he_normal", bias_init=-1.5), nl.Dense(32, 2)],
                        loss="softmax_cross_entropy", seed=3)
    X, y = moons(64)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    _, rows = reference(net, X, y)
    dead = mon.series("dead_fraction")[0]
    assert dead[0] == rows[0]["dead_fraction"] and 0.2 < dead[0] < 1.0
    assert dead[1] == 0.0  # identity never dies
    # a dead unit's column of dW is exactly zero
    zero_cols = np.all(mon.grads[0] == 0, axis=0)
    assert zero_cols.sum() == round(dead[0] * 32)


@pytest.mark.parametrize("act,std,z_sat", [("sigmoid", 4.0, 3.6369), ("tanh", 3.0, 1.8184), ("softsign", 3.0, 2.1623)])
def test_saturated_fraction_uses_the_documented_threshold(act, std, z_sat):
    net = nl.Sequential([nl.Dense(4, 16, activation=act, init=nl.init.get("normal", std=std)), nl.Dense(16, 2)],
                        loss="softmax_cross_entropy", seed=0)
    X, y = class_data(64, k=2)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    assert mon.saturation_z[0] == pytest.approx(z_sat, abs=1e-4) and mon.saturation_z[1] is None
    _, rows = reference(net, X, y)
    frac = mon.series("saturated_fraction")[0]
    assert frac[0] == rows[0]["saturated_fraction"] > 0.3
    # the same fraction from the z threshold the docs state
    Z = net.layer_inputs(X)[0][1]
    assert frac[0] == np.mean(np.abs(Z) > mon.saturation_z[0])
    assert frac[1] == 0.0


def test_saturation_ratio_changes_the_threshold():
    net = nl.Sequential([nl.Dense(4, 16, activation="tanh", init=nl.init.get("normal", std=2.0)), nl.Dense(16, 2)],
                        loss="softmax_cross_entropy", seed=0)
    X, y = class_data(64, k=2)
    fracs = []
    for ratio in (0.01, 0.1, 0.5):
        mon = nl.GradientMonitor(net, saturation_ratio=ratio)
        mon.observe(X, y)
        _, rows = reference(net, X, y, ratio=ratio)
        assert mon.series("saturated_fraction")[0, 0] == rows[0]["saturated_fraction"]
        fracs.append(rows[0]["saturated_fraction"])
    assert fracs[0] < fracs[1] < fracs[2]


def test_hard_sigmoid_saturation_goes_through_the_derivative():
    net = nl.Sequential([nl.Dense(4, 16, activation="hard_sigmoid", init=nl.init.get("normal", std=3.0)),
                         nl.Dense(16, 2)], loss="softmax_cross_entropy", seed=0)
    X, y = class_data(64, k=2)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    Z = net.layer_inputs(X)[0][1]
    d = net.layers[0].activation.derivative(Z)
    assert mon.saturation_z[0] is None
    assert mon.series("saturated_fraction")[0, 0] == np.mean(d < RATIO / 6) > 0.2


def test_nonfinite_counts_with_a_planted_inf_weight():
    net = mixed_net()
    X, y = class_data()
    W2 = net.params()[net.param_names().index("1.W")]
    W2[0, 3] = np.inf
    mon = nl.GradientMonitor(net)
    loss = mon.observe(X, y)
    ref_loss, rows = reference(net, X, y)
    assert loss == ref_loss or (math.isnan(loss) and math.isnan(ref_loss))
    for name in ("nonfinite", "n_grad", "dead_fraction", "saturated_fraction"):
        np.testing.assert_array_equal(mon.series(name)[0], [r[name] for r in rows], err_msg=name)
    bad = mon.series("nonfinite")[0]
    assert bad[1] > 0 and bad[0] > 0  # the inf weight, and the NaN/inf it sends back to layer 1
    assert np.isinf(mon.series("weight_norm")[0, 1])
    v = verdict(mon, "weights_nan")
    assert v.fired and v.layer == 2 and v.step == 1 and "non-finite weights" in v.evidence
    json.dumps(mon.to_dict(), allow_nan=False)


def test_subnormal_counts_in_float32_with_planted_tiny_inputs():
    net = nl.Sequential([nl.Dense(4, 8, activation="tanh"), nl.Dense(8, 3)], loss="softmax_cross_entropy",
                        seed=0, dtype="float32")
    X, y = class_data()
    X = (X * 1e-36).astype(np.float32)  # dW_1 = X^T E_1 lands below 1.18e-38
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    _, rows = reference(net, X, y)
    sub = mon.series("subnormal")[0]
    assert sub[0] == rows[0]["subnormal"] > 0
    assert sub[1] == rows[1]["subnormal"]
    np.testing.assert_array_equal(mon.series("zero_grad")[0], [r["zero_grad"] for r in rows])
    assert_rows_match(mon, rows, rtol=1e-5, skip=("dead_fraction", "saturated_fraction"))


def test_subnormal_counts_in_a_deep_float32_sigmoid_net():
    net = deep_sigmoid(depth=40, width=32, dtype="float32", bound=1.0)
    X, y = moons(64)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    _, rows = reference(net, X, y)
    np.testing.assert_array_equal(mon.series("subnormal")[0], [r["subnormal"] for r in rows])
    np.testing.assert_array_equal(mon.series("zero_grad")[0], [r["zero_grad"] for r in rows])
    assert mon.series("subnormal")[0].sum() > 0
    v = verdict(mon, "underflow")
    assert v.fired and v.layer is not None and v.step == 1 and "subnormal" in v.evidence


def test_float32_statistics_match_numpy():
    net = nl.Sequential([nl.Dense(4, 12, activation="relu", init="he_normal"),
                         nl.Dense(12, 6, activation="tanh"), nl.Dense(6, 3)],
                        loss="softmax_cross_entropy", seed=2, dtype="float32")
    X, y = class_data()
    mon = nl.GradientMonitor(net)
    mon.observe(X.astype(np.float32), y)
    _, rows = reference(net, X.astype(np.float32), y)
    assert_rows_match(mon, rows, rtol=1e-5, skip=("saturated_fraction",))


# ---------------------------------------------------------------- the Trainer records
@pytest.mark.parametrize("opt", [lambda: nl.optim.SGD(lr=0.5, momentum=0.9), lambda: nl.optim.Adam(lr=0.05)])
def test_trainer_records_gradients_before_clipping_and_the_update_after(opt):
    net = mixed_net()
    ref = net.copy()
    X, y = class_data()
    mon = nl.GradientMonitor(net)
    trainer = nl.Trainer(net, opt(), clip=("global_norm", 1e-3), monitor=mon)
    for step in range(3):
        before = [p.copy() for p in net.params()]
        ref.set_params(before)
        _, rows = reference(ref, X, y)  # the unclipped gradients at the weights before the step
        trainer.step(X, y)
        after = net.params()
        for l, row in enumerate(rows):
            W0, W1 = before[2 * l], after[2 * l]
            row["weight_norm"] = np.linalg.norm(W1)
            row["update_norm"] = np.linalg.norm(W1 - W0)
        assert_rows_match(mon, rows, step=step)
        assert mon.applied[-1] is True
        # what the optimizer used was clipped: far below what the monitor recorded
        assert nl.clip.global_norm(trainer.grads) == pytest.approx(1e-3, rel=1e-5)
        assert mon.grad_norm_total[-1] == pytest.approx(trainer.last.grad_norm) and trainer.last.grad_norm > 0.1
    ratio = mon.update_ratio()
    np.testing.assert_allclose(ratio, mon.series("update_norm") / mon.series("weight_norm"))
    assert np.all(ratio > 0)


def test_trainer_fit_records_one_row_per_step():
    X, y = moons(100)
    net = small_net("tanh")
    mon = nl.GradientMonitor(net)
    h = nl.Trainer(net, nl.optim.Adam(lr=0.01), monitor=mon).fit(X, y, epochs=2, batch_size=32)
    assert mon.steps == len(h.loss) == 8
    assert mon.loss == h.loss and mon.batch == [32, 32, 32, 4] * 2
    assert mon.series("grad_norm").shape == (8, 3)


def test_stop_on_nonfinite_keeps_the_last_finite_weights_and_the_monitor_holds_the_bad_step():
    X, y = nl.datasets.load("sine", n=64, seed=0)
    net = nl.Sequential([nl.Dense(1, 16, activation="tanh"), nl.Dense(16, 1)], loss="mse", seed=0)
    mon = nl.GradientMonitor(net)
    trainer = nl.Trainer(net, nl.optim.SGD(lr=1e3), monitor=mon)  # on_nonfinite="stop"
    for _ in range(200):
        before = [p.copy() for p in net.params()]
        trainer.step(X, y)
        if not trainer.last.applied:
            break
    else:
        pytest.fail("the run never produced a non-finite loss")
    for p, q in zip(net.params(), before):
        np.testing.assert_array_equal(p, q)
    assert all(np.isfinite(p).all() for p in net.params())
    assert mon.applied[-1] is False and not math.isfinite(mon.loss[-1])
    assert np.all(mon.series("update_norm")[-1] == 0)  # the bad step changed nothing
    # the weights are huge but finite: so is their norm (summed with scaling, where squares overflow)
    scaled = [np.abs(W).max() * np.linalg.norm(W / np.abs(W).max()) for W in (before[0], before[2])]
    np.testing.assert_allclose(mon.series("weight_norm")[-1], scaled, rtol=1e-12)
    v = verdict(mon, "loss_nan")
    assert v.fired and v.step == mon.steps and "weights kept" in v.evidence
    assert not verdict(mon, "weights_nan").fired  # the weights stayed finite
    json.dumps(mon.to_dict(), allow_nan=False)


def test_trainer_rejects_a_monitor_of_another_network():
    a, b = small_net("tanh"), small_net("tanh")
    with pytest.raises(HyperparameterError):
        nl.Trainer(a, "sgd", monitor=nl.GradientMonitor(b))


# ---------------------------------------------------------------- verdicts: scenarios
def small_net(act, seed=0, bias_init=0.0):
    init = "he_normal" if act == "relu" else "xavier_normal"
    return nl.Sequential([nl.Dense(2, 16, activation=act, init=init, bias_init=bias_init),
                          nl.Dense(16, 16, activation=act, init=init, bias_init=bias_init),
                          nl.Dense(16, 2, init=init)], loss="softmax_cross_entropy", seed=seed)


def deep_sigmoid(depth=10, width=16, dtype="float64", n_in=2, bound=None):
    """``bound``: uniform(-bound/sqrt(fan_in), +...) weights (PyTorch's default Linear init with 1)."""
    def init(fan_in):
        if bound is None:
            return "xavier_normal"
        b = bound / math.sqrt(fan_in)
        return nl.init.get("uniform", low=-b, high=b)
    layers = [nl.Dense(n_in, width, activation="sigmoid", init=init(n_in))]
    layers += [nl.Dense(width, width, activation="sigmoid", init=init(width)) for _ in range(depth - 1)]
    layers.append(nl.Dense(width, 2, init=init(width)))
    return nl.Sequential(layers, loss="softmax_cross_entropy", seed=0, dtype=dtype)


def train(net, opt, X, y, steps, batch=32, seed=0, **kw):
    mon = kw.pop("monitor", None) or nl.GradientMonitor(net)
    trainer = nl.Trainer(net, opt, monitor=mon, **kw)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(X), size=min(batch, len(X)), replace=False)
        trainer.step(X[idx], y[idx])
        if not trainer.last.applied:
            break
    return mon


EXPLODING = {"loss_high", "loss_jumps", "loss_nan", "weights_growing", "weights_nan", "gradient_exploding"}


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_healthy_run_fires_nothing(act, seed):
    X, y = moons(400, seed=seed)
    mon = train(small_net(act, seed=seed), nl.optim.Adam(lr=0.01), X, y, steps=100, seed=seed)
    assert np.mean(mon.loss[-10:]) < 0.5 * mon.loss[0]  # it learned
    assert fired(mon) == set(), mon.report()
    assert all(v.evidence for v in mon.verdicts()), mon.report()


def test_a_healthy_digits_run_fires_nothing():
    X, y = nl.datasets.load("digits")
    net = nl.Sequential([nl.Dense(64, 64, activation="relu", init="he_normal"),
                         nl.Dense(64, 64, activation="relu", init="he_normal"), nl.Dense(64, 10, init="he_normal")],
                        loss="softmax_cross_entropy", seed=0)
    mon = train(net, nl.optim.Adam(lr=1e-3), X, y, steps=100, batch=64)
    assert fired(mon) == set(), mon.report()


def test_loss_jumps_on_synthetic_losses():
    mon = nl.GradientMonitor(small_net("tanh"))
    smooth = [1.0 / (1 + 0.1 * t) for t in range(40)]
    for loss in smooth:
        mon.commit(loss, 1.0, True, 32)
    assert not verdict(mon, "loss_jumps").fired
    mon.reset()
    jumpy = list(smooth)
    jumpy[15], jumpy[30] = 3.0, 4.0
    for loss in jumpy:
        mon.commit(loss, 1.0, True, 32)
    v = verdict(mon, "loss_jumps")
    assert v.fired and v.step == 31 and v.data["steps"] == [16, 31]
    assert "step 16: 3 vs median" in v.evidence
    # one jump is not enough (loss_jump_count = 2) ...
    mon2 = nl.GradientMonitor(small_net("tanh"), thresholds=D.Thresholds(loss_jump_count=3))
    for loss in jumpy:
        mon2.commit(loss, 1.0, True, 32)
    assert not verdict(mon2, "loss_jumps").fired
    # ... and a jump of a loss that is already tiny (noise near convergence) is not one
    mon3 = nl.GradientMonitor(small_net("tanh"))
    for t in range(40):
        mon3.commit(1.0 if t == 0 else (0.05 if t % 7 else 0.01), 1.0, True, 32)
    assert not verdict(mon3, "loss_jumps").fired


def test_small_batches_are_pooled_before_the_loss_verdicts():
    mon = nl.GradientMonitor(small_net("tanh"))
    rng = np.random.default_rng(0)
    for _ in range(64):  # online training: per-sample losses are heavy-tailed, the pooled ones are not
        mon.commit(float(rng.exponential(0.3)) * (20 if rng.random() < 0.05 else 1), 1.0, True, 1)
    assert not verdict(mon, "loss_jumps").fired and not verdict(mon, "loss_high").fired
    assert len(D._loss_points(mon)) == 2


def test_loss_jumps_and_loss_high_with_a_too_large_sgd_learning_rate():
    X, y = moons(400)
    mon = train(small_net("relu"), nl.optim.SGD(lr=5.0), X, y, steps=60)
    v = verdict(mon, "loss_jumps")
    assert v.fired and v.step is not None and "vs median" in v.evidence
    assert verdict(mon, "loss_high").fired
    # the same net with a sane learning rate: no jumps
    assert not verdict(train(small_net("relu"), nl.optim.SGD(lr=0.1), X, y, steps=60), "loss_jumps").fired


def test_loss_high_against_the_chance_level_on_one_step():
    X, y = moons(128)
    net = small_net("tanh")
    for p in net.params():
        p *= 30.0  # huge logits: confidently wrong on many samples
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    v = verdict(mon, "loss_high")
    assert v.fired and v.step == 1 and "chance-level loss 0.693" in v.evidence and v.data["recent"] > 4 * math.log(2)


def test_loss_nan_and_weights_growing_with_a_huge_learning_rate():
    X, y = nl.datasets.load("sine", n=128, seed=0)
    net = nl.Sequential([nl.Dense(1, 16, activation="tanh"), nl.Dense(16, 1)], loss="mse", seed=0)
    mon = train(net, nl.optim.SGD(lr=1e3), X, y, steps=200)
    names = fired(mon)
    assert {"loss_nan", "loss_high", "loss_jumps", "weights_growing"} <= names
    v = verdict(mon, "loss_nan")
    assert v.step == mon.steps and "last finite loss" in v.evidence
    w = verdict(mon, "weights_growing")
    assert w.layer is not None and w.data["factor"] > 10 and w.data["r2"] >= 0.9


def test_weights_growing_on_unstable_linear_regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5))
    y = X @ rng.normal(size=5)
    net = nl.Sequential([nl.Dense(5, 1)], loss="mse", seed=0)
    lam = np.linalg.eigvalsh(X.T @ X / 64).max()
    mon = train(net, nl.optim.SGD(lr=2.3 / lam), X, y, steps=30, batch=64)  # just past the stable 2/lambda
    v = verdict(mon, "weights_growing")
    assert v.fired and v.layer == 1 and v.step > 1 and "log-linear R^2" in v.evidence
    assert not verdict(mon, "weights_shrinking").fired
    w = mon.series("weight_norm")[:, 0]
    assert w[-1] > 1e5 * w[0]


def test_weights_nan_when_updates_are_not_stopped():
    X, y = nl.datasets.load("sine", n=64, seed=0)
    net = nl.Sequential([nl.Dense(1, 8, activation="tanh"), nl.Dense(8, 1)], loss="mse", seed=0)
    mon = train(net, nl.optim.SGD(lr=1e3), X, y, steps=100, on_nonfinite="ignore")
    v = verdict(mon, "weights_nan")
    assert v.fired and v.layer is not None and v.step is not None and "after step" in v.evidence
    assert not np.isfinite(mon.series("weight_norm")[v.step - 1, v.layer - 1])


def test_gradient_exploding_in_a_deep_chaotic_tanh_net():
    """tanh with weights of std 5/sqrt(n) (the chaotic phase of mean-field theory): activations stay
    bounded while each layer multiplies the backward signal by chi > 1."""
    X, y = moons(128)
    layers = [nl.Dense(2, 32, activation="tanh", init=nl.init.get("normal", std=5 / math.sqrt(2)))]
    layers += [nl.Dense(32, 32, activation="tanh", init=nl.init.get("normal", std=5 / math.sqrt(32)))
               for _ in range(24)]
    layers.append(nl.Dense(32, 2, init=nl.init.get("normal", std=5 / math.sqrt(32))))
    mon = nl.GradientMonitor(nl.Sequential(layers, loss="softmax_cross_entropy", seed=0))
    mon.observe(X, y)
    v = verdict(mon, "gradient_exploding")
    assert v.fired and v.layer == 1 and v.step == 1 and v.data["ratio"] > 1e3
    assert "first layer" in v.evidence
    assert not verdict(mon, "gradient_vanishing").fired


def test_gradient_exploding_on_an_overflowing_gradient():
    mon = nl.GradientMonitor(small_net("tanh"))
    mon._stats[:] = 1.0
    mon._stats[1, D.SERIES["grad_norm"]] = np.inf
    mon.commit(1.0, np.inf, False, 32)
    v = verdict(mon, "gradient_exploding")
    assert v.fired and v.layer == 2 and "overflow" in v.evidence


def test_slow_progress_and_gradient_vanishing_in_a_deep_sigmoid_net_with_sgd():
    X, y = moons(400)
    mon = train(deep_sigmoid(depth=10), nl.optim.SGD(lr=0.1), X, y, steps=40)
    s = verdict(mon, "slow_progress")
    assert s.fired and s.step == 40 and "lower" in s.evidence
    g = verdict(mon, "gradient_vanishing")
    assert g.fired and g.layer == 1 and g.data["ratio"] < 1e-3 and g.step == 1
    assert not fired(mon) & EXPLODING


def test_slow_progress_is_quiet_once_the_loss_is_far_below_chance():
    mon = nl.GradientMonitor(small_net("tanh"))
    for t in range(30):
        mon.commit(0.05 + 1e-4 * (t % 3), 1.0, True, 32)  # flat, but already good
    v = verdict(mon, "slow_progress")
    assert not v.fired and "below 0.5x chance level" in v.evidence
    mon.reset()
    for t in range(30):
        mon.commit(0.69 + 1e-3 * (t % 3), 1.0, True, 32)  # flat at chance level
    assert verdict(mon, "slow_progress").fired


def test_weights_shrinking_and_to_zero_under_strong_decoupled_decay():
    X, y = moons(128)
    mon = train(small_net("tanh"), nl.optim.SGD(lr=0.1), X, y, steps=30, batch=128, regularizer=("decoupled", 5.0))
    s = verdict(mon, "weights_shrinking")
    assert s.fired and s.layer is not None and s.data["factor"] < 0.1 and s.data["r2"] >= 0.9
    z = verdict(mon, "weights_to_zero")
    assert z.fired and z.step > 1 and "its first value" in z.evidence
    assert not verdict(mon, "weights_growing").fired


def test_dead_units_with_a_negative_bias():
    X, y = moons(128)
    mon = train(small_net("relu", bias_init=-3.0), nl.optim.Adam(lr=1e-3), X, y, steps=5, batch=64)
    v = verdict(mon, "dead_units")
    assert v.fired and v.layer in (1, 2) and v.step == 1 and "units dead" in v.evidence
    assert v.data["fraction"] > 0.5
    fix = train(small_net("relu", bias_init=0.1), nl.optim.Adam(lr=1e-3), X, y, steps=5, batch=64)
    assert not verdict(fix, "dead_units").fired


def test_dead_units_needs_batches_of_enough_rows():
    X, y = moons(128)
    net = small_net("relu", bias_init=-3.0)
    mon = train(net, nl.optim.Adam(lr=1e-3), X, y, steps=5, batch=4)
    v = verdict(mon, "dead_units")
    assert not v.fired and "cannot judge" in v.evidence
    mon.observe(X, y)  # one look at the whole set decides
    assert verdict(mon, "dead_units").fired


def test_saturation_with_large_sigmoid_weights():
    X, y = moons(128)
    net = nl.Sequential([nl.Dense(2, 32, activation="sigmoid", init=nl.init.get("normal", std=10.0)),
                         nl.Dense(32, 2)], loss="softmax_cross_entropy", seed=0)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    v = verdict(mon, "saturation")
    assert v.fired and v.layer == 1 and v.step == 1 and v.data["fraction"] > 0.5
    assert "activations saturated" in v.evidence
    assert not verdict(mon, "dead_units").fired  # sigmoid is judged by saturation, not as dead


def test_underflow_fires_in_float32_and_flush_to_zero_is_reported():
    X, y = moons(64)
    net = deep_sigmoid(depth=40, width=32, dtype="float32", bound=1.0)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    v = verdict(mon, "underflow")
    assert v.fired and v.layer is not None and v.data["fraction"] > 0.01
    assert mon.flush_denormals == [False]
    if not nl.backend.FTZ_SUPPORTED:
        return
    with nl.backend.flush_denormals():
        mon.observe(X, y)
    assert mon.flush_denormals == [False, True]
    assert mon.series("subnormal")[1].sum() == 0  # flushed to zero ...
    assert mon.series("zero_grad")[1].sum() > mon.series("zero_grad")[0].sum()  # ... and counted as zeros
    assert "flush-to-zero on for 1 of 2 steps" in mon.report()
    assert "flush-to-zero was on" in verdict(mon, "underflow").evidence
    assert mon.to_dict()["flush_denormals"] == [False, True]


def test_every_verdict_has_its_documented_fields():
    mon = nl.GradientMonitor(deep_sigmoid(depth=12))
    mon.observe(*moons(64))
    vs = mon.verdicts()
    assert [v.name for v in vs] == D.VERDICT_NAMES
    for v in vs:
        assert v.problem in ("exploding", "vanishing", "dead units", "saturation", "underflow")
        assert v.threshold and v.remedy and isinstance(v.fired, bool)
        assert str(v).startswith("FIRED" if v.fired else "ok")
    assert [v.name for v in mon.fired()] == ["gradient_vanishing"]
    g = verdict(mon, "gradient_vanishing")
    assert "[step 1, layer 1]" in str(g) and "tanh, ReLU" in g.remedy


# ---------------------------------------------------------------- reading, JSON, thresholds, errors
def test_to_dict_is_json_and_layer_summary():
    X, y = moons(64)
    net = small_net("relu")
    mon = train(net, nl.optim.Adam(lr=0.01), X, y, steps=3)
    d = json.loads(json.dumps(mon.to_dict(), allow_nan=False))
    assert d["steps"] == 3 and len(d["grad_norm"]) == 3 and len(d["grad_norm"][0]) == 3
    assert d["layers"] == ["1 (relu)", "2 (relu)", "3 (identity)"]
    assert {v["name"] for v in d["verdicts"]} == set(D.VERDICT_NAMES)
    assert d["thresholds"]["dead_fraction"] == 0.5 and d["chance_loss"] == pytest.approx(math.log(2))
    assert set(D.SERIES) <= set(d) and "update_ratio" in d and d["flush_denormals"] == [False] * 3
    rows = mon.layer_summary()
    assert [r["layer"] for r in rows] == [1, 2, 3] and rows[0]["shape"] == [2, 16]
    assert rows[2]["grad_norm"] == mon.series("grad_norm")[-1, 2] and isinstance(rows[0]["subnormal"], int)
    assert mon.layer_summary(0)[1]["weight_norm"] == mon.series("weight_norm")[0, 1]


def test_custom_thresholds():
    X, y = moons(64)
    net = deep_sigmoid(depth=12)
    strict = nl.GradientMonitor(net, thresholds=D.Thresholds(grad_ratio_vanishing=1e-30))
    strict.observe(X, y)
    assert not verdict(strict, "gradient_vanishing").fired
    assert "< 1e-30" in verdict(strict, "gradient_vanishing").threshold
    loose = nl.GradientMonitor(small_net("tanh"), thresholds=D.Thresholds(loss_chance_factor=0.5))
    loose.observe(X, y)
    v = verdict(loose, "loss_high")
    assert fired(loose) == {"loss_high"} and "above 0.5x the chance-level" in v.threshold and v.data["recent"] < 1


@pytest.mark.parametrize("make", [
    lambda: nl.GradientMonitor("not a net"),
    lambda: nl.GradientMonitor(small_net("tanh"), saturation_ratio=1.5),
    lambda: nl.GradientMonitor(small_net("tanh"), saturation_ratio=0),
    lambda: nl.GradientMonitor(small_net("tanh"), saturation_ratio="x"),
    lambda: nl.GradientMonitor(small_net("tanh"), thresholds={"dead_fraction": 0.2}),
    lambda: D.Thresholds(dead_fraction=2.0),
    lambda: D.Thresholds(loss_jump_window=0),
    lambda: D.Thresholds(loss_jump_window=2.5),
    lambda: D.Thresholds(grad_ratio_exploding=0.5),
    lambda: D.Thresholds(weights_zero=-1),
    lambda: D.Thresholds(loss_high_factor=float("nan")),
    lambda: nl.GradientMonitor(small_net("tanh")).series("nope"),
    lambda: nl.GradientMonitor(small_net("tanh")).layer_summary(),
])
def test_bad_arguments_raise_nnlab_errors(make):
    with pytest.raises(NnlabError):
        make()


def test_observe_checks_its_input():
    mon = nl.GradientMonitor(small_net("tanh"))
    with pytest.raises(NnlabError):
        mon.observe(np.zeros((4, 3)), [0, 1, 0, 1])
    with pytest.raises(NnlabError):
        mon.observe(np.full((4, 2), np.nan), [0, 1, 0, 1])
    assert mon.steps == 0
    mon.observe(np.zeros((4, 2)), [0, 1, 0, 1])
    with pytest.raises(HyperparameterError):
        mon.layer_summary(5)
    mon.reset()
    assert mon.steps == 0 and mon.loss == [] and mon.series("grad_norm").shape == (0, 3)


def test_report_names_every_verdict_and_the_remedy_of_fired_ones():
    mon = nl.GradientMonitor(deep_sigmoid(depth=12))
    mon.observe(*moons(64))
    text = mon.report()
    assert text.startswith("gradient health over 1 step(s), 13 layer(s) with weights, float64, flush-to-zero off")
    for name in D.VERDICT_NAMES:
        assert f" {name} (" in text
    assert text.count("remedy:") == 1
