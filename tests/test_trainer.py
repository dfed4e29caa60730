"""nl.Trainer: the fused step against the unfused sequence (loss_and_grads, nl.clip, opt.step) for
every clip kind and regulariser, the fit modes and history, reproducibility, validation, accuracy,
non-finite handling, bad arguments, saving and resuming."""

import math

import numpy as np
import pytest

import nnlab as nl
from nnlab.errors import HyperparameterError, NnlabError, NonFiniteError, ShapeError, UnknownNameError

N_STEPS = 12


# ---------------------------------------------------------------- helpers
def make_net(seed=0, loss="softmax_cross_entropy", dtype="float64", n_out=3):
    return nl.Sequential([nl.Dense(3, 6, activation="tanh", init="xavier_normal"),
                          nl.Dense(6, 5, activation="relu", init="he_normal", bias_init=0.1),
                          nl.Dense(5, n_out)], loss=loss, seed=seed, dtype=dtype)


def class_data(n=24, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5).astype(np.int64)
    return X, y


def batches(n_steps=N_STEPS, size=8, seed=2):
    """Changing mini-batches: a different random subset of the data at every step."""
    X, y = class_data()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        idx = rng.choice(len(X), size=size, replace=False)
        out.append((X[idx], y[idx]))
    return out


OPTIMIZERS = {
    "sgd_nesterov": lambda **kw: nl.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, **kw),
    "adam": lambda **kw: nl.optim.Adam(lr=0.02, **kw),
    "rmsprop_centered": lambda **kw: nl.optim.RMSprop(lr=0.01, centered=True, momentum=0.5, **kw),
    "adagrad": lambda **kw: nl.optim.Adagrad(lr=0.1, lr_decay=0.01, **kw),
}
CLIPS = {"none": None, "value": ("value", 0.05), "norm": ("norm", 0.2), "global_norm": ("global_norm", 0.3)}
REGULARIZERS = {"none": None, "l2": ("l2", 0.01), "l1": ("l1", 0.005), "decoupled": ("decoupled", 0.05)}


def unfused_step(net, opt, X, y, clip, regularizer):
    """The reference: the same step from the public pieces, one call each. Returns (loss, pre-clip
    global norm, clipped grads, whether clipping changed anything)."""
    loss, grads = net.loss_and_grads(X, y)
    norm = nl.clip.global_norm(grads)
    before = [g.copy() for g in grads]
    if clip is not None:
        {"value": nl.clip.by_value, "norm": nl.clip.by_norm, "global_norm": nl.clip.by_global_norm}[clip[0]](
            grads, clip[1])
    active = any(not np.array_equal(a, b) for a, b in zip(before, grads))
    if regularizer is not None and regularizer[0] == "decoupled":
        for p in net.params():  # p <- p(1 - lr*lambda) before the rule (decoupled weight decay)
            p *= 1.0 - opt.lr * regularizer[1]
    opt.step(net.params(), grads)
    return loss, norm, grads, active


def reference_optimizer(name, regularizer):
    """The optimizer whose own options do what ``regularizer`` does inside the fused step."""
    if regularizer is None or regularizer[0] == "decoupled":
        return OPTIMIZERS[name]()
    return OPTIMIZERS[name](**{"l2": {"weight_decay": regularizer[1]}, "l1": {"l1": regularizer[1]}}[regularizer[0]])


def assert_params_close(a, b, rtol=1e-10, atol=1e-12):
    for p, q in zip(a, b):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=atol)


def params_equal(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a, b))


def copies(net):
    return [p.copy() for p in net.params()]


# ---------------------------------------------------------------- fused step == unfused sequence
@pytest.mark.parametrize("reg", list(REGULARIZERS))
@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_fused_step_equals_unfused_sequence(opt_name, clip, reg):
    clip, reg = CLIPS[clip], REGULARIZERS[reg]
    fused_net, ref_net = make_net(), make_net()
    trainer = nl.Trainer(fused_net, OPTIMIZERS[opt_name](), clip=clip, regularizer=reg)
    ref_opt = reference_optimizer(opt_name, reg)
    clipped_some = False
    for X, y in batches():
        loss = trainer.step(X, y)
        ref_loss, ref_norm, ref_grads, active = unfused_step(ref_net, ref_opt, X, y, clip, reg)
        clipped_some |= active
        assert math.isclose(loss, ref_loss, rel_tol=1e-12)
        assert trainer.last.applied and trainer.last.loss == loss
        assert math.isclose(trainer.last.grad_norm, ref_norm, rel_tol=1e-12)
        assert_params_close(trainer.grads, ref_grads)
        assert_params_close(fused_net.params(), ref_net.params())
    assert trainer.optimizer.t == ref_opt.t == N_STEPS
    assert clip is None or clipped_some, "the clip threshold never bit: the test would not test clipping"
    assert not params_equal(fused_net.params(), make_net().params())


def test_l2_regularizer_adds_to_the_optimizers_weight_decay():
    a, b = make_net(), make_net()
    trainer = nl.Trainer(a, nl.optim.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3), regularizer=("l2", 2e-3))
    ref = nl.optim.SGD(lr=0.1, momentum=0.9, weight_decay=3e-3)
    for X, y in batches():
        trainer.step(X, y)
        unfused_step(b, ref, X, y, None, None)
    assert_params_close(a.params(), b.params())


def test_decoupled_regularizer_adds_to_adamw_decay():
    a, b = make_net(), make_net()
    trainer = nl.Trainer(a, nl.optim.AdamW(lr=0.01, weight_decay=0.01), regularizer=("decoupled", 0.02))
    ref = nl.optim.AdamW(lr=0.01, weight_decay=0.03)
    for X, y in batches():
        trainer.step(X, y)
        unfused_step(b, ref, X, y, None, None)
    assert_params_close(a.params(), b.params())


def test_reported_loss_is_the_data_loss_without_the_penalty():
    net = make_net()
    X, y = batches()[0]
    expected = net.loss(X, y)
    assert nl.Trainer(net, "sgd", regularizer=("l2", 10.0)).step(X, y) == pytest.approx(expected, rel=1e-14)


def test_grads_are_the_clipped_gradients_and_grad_norm_the_pre_clip_norm():
    net, ref = make_net(), make_net()
    X, y = batches()[0]
    trainer = nl.Trainer(net, nl.optim.SGD(lr=0.1), clip=("global_norm", 0.05))
    trainer.step(X, y)
    _, raw = ref.loss_and_grads(X, y)
    pre = nl.clip.global_norm(raw)
    assert pre > 0.05
    assert trainer.last.grad_norm == pytest.approx(pre, rel=1e-12)
    assert nl.clip.global_norm(trainer.grads) == pytest.approx(0.05 * pre / (pre + 1e-6), rel=1e-12)
    nl.clip.by_global_norm(raw, 0.05)
    assert_params_close(trainer.grads, raw)
    assert [g.shape for g in trainer.grads] == [p.shape for p in net.params()]


def test_string_optimizer_and_float32():
    net = make_net(dtype="float32")
    trainer = nl.Trainer(net, "Adam")
    assert isinstance(trainer.optimizer, nl.optim.Adam)
    X, y = class_data()
    before = net.loss(X, y)
    trainer.fit(X, y, epochs=20, batch_size=8, seed=0)
    assert all(p.dtype == np.float32 for p in net.params())
    assert net.loss(X, y) < before


# ---------------------------------------------------------------- fit: modes and history
@pytest.mark.parametrize(("batch_size", "per_epoch", "sizes"), [
    (1, 30, [1] * 30),                 # online
    (8, 4, [8, 8, 8, 6]),              # mini-batch, last batch smaller
    (30, 1, [30]),                     # full batch
    (1000, 1, [30]),                   # batch larger than the data: full batch
])
def test_fit_modes_step_counts_and_history(batch_size, per_epoch, sizes):
    X, y = class_data(30)
    trainer = nl.Trainer(make_net(), nl.optim.Adam(lr=0.01))
    seen = []
    h = trainer.fit(X, y, epochs=3, batch_size=batch_size, seed=0,
                    step_callback=lambda epoch, step, loss: seen.append((epoch, step, loss)))
    assert len(h.loss) == len(h.grad_norm) == len(h.step_time) == 3 * per_epoch
    assert len(h.epoch_loss) == len(h.accuracy) == len(h.epoch_time) == 3
    assert h.val_loss == h.val_accuracy == [] and h.stopped == ""
    assert trainer.optimizer.t == 3 * per_epoch
    assert [s for _, s, _ in seen] == list(range(1, 3 * per_epoch + 1))
    assert [e for e, _, _ in seen] == [e for e in range(3) for _ in range(per_epoch)]
    assert [v for _, _, v in seen] == h.loss
    for e in range(3):  # epoch loss: the sample-weighted mean of that epoch's batch losses
        losses = h.loss[e * per_epoch:(e + 1) * per_epoch]
        assert h.epoch_loss[e] == pytest.approx(sum(a * n for a, n in zip(losses, sizes)) / 30, rel=1e-12)
    assert all(t >= 0 for t in h.step_time) and all(t >= 0 for t in h.epoch_time)
    d = h.to_dict()
    assert set(d) >= {"loss", "grad_norm", "epoch_loss", "accuracy", "val_loss", "val_accuracy", "stopped"}


@pytest.mark.parametrize("batch_size", [1, 7, 100])
def test_fit_is_a_loop_of_steps_over_seeded_permutations(batch_size):
    X, y = class_data(20)
    a, b = make_net(), make_net()
    ha = nl.Trainer(a, nl.optim.Adam(lr=0.01), clip=("global_norm", 1.0)).fit(
        X, y, epochs=2, batch_size=batch_size, seed=5)
    tb = nl.Trainer(b, nl.optim.Adam(lr=0.01), clip=("global_norm", 1.0))
    rng = np.random.default_rng(5)
    losses = []
    for _ in range(2):
        order = rng.permutation(20)
        for s in range(0, 20, batch_size):
            idx = order[s:s + batch_size]
            losses.append(tb.step(X[idx], y[idx]))
    assert ha.loss == losses
    assert params_equal(a.params(), b.params())


def test_full_batch_without_shuffle_is_plain_steps_on_all_data():
    X, y = class_data(16)
    a, b = make_net(), make_net()
    h = nl.Trainer(a, nl.optim.SGD(lr=0.2, momentum=0.9)).fit(X, y, epochs=4, batch_size=16, shuffle=False)
    tb = nl.Trainer(b, nl.optim.SGD(lr=0.2, momentum=0.9))
    first = b.loss(X, y)
    assert [tb.step(X, y) for _ in range(4)] == h.loss
    assert h.loss[0] == pytest.approx(first, rel=1e-14)
    assert h.epoch_loss == pytest.approx(h.loss, rel=1e-14)
    assert params_equal(a.params(), b.params())


def test_seeded_fit_is_reproducible_and_seeds_matter():
    X, y = nl.datasets.load("moons", n=64, seed=0)

    def run(seed, shuffle=True):
        net = nl.Sequential([nl.Dense(2, 8, activation="tanh"), nl.Dense(8, 2)], loss="softmax_cross_entropy",
                            seed=0)
        h = nl.Trainer(net, nl.optim.Adam(lr=0.05)).fit(X, y, epochs=3, batch_size=8, seed=seed, shuffle=shuffle)
        return net.params(), h

    p1, h1 = run(0)
    p2, h2 = run(0)
    p3, h3 = run(1)
    assert params_equal(p1, p2) and h1.loss == h2.loss and h1.epoch_loss == h2.epoch_loss
    assert not params_equal(p1, p3) and h1.loss != h3.loss
    assert params_equal(run(0, shuffle=False)[0], run(1, shuffle=False)[0])  # no shuffle: the seed is unused


def test_validation_split_holds_out_the_last_fraction():
    X, y = class_data(40)
    a, b = make_net(), make_net()
    ha = nl.Trainer(a, nl.optim.Adam(lr=0.01)).fit(X, y, epochs=2, batch_size=1, seed=3, validation_split=0.25)
    tb = nl.Trainer(b, nl.optim.Adam(lr=0.01))
    hb = tb.fit(X[:30], y[:30], epochs=2, batch_size=1, seed=3, validation_data=(X[30:], y[30:]))
    assert len(ha.loss) == 2 * 30  # 10 rows held out
    assert params_equal(a.params(), b.params())
    assert ha.loss == hb.loss and ha.val_loss == hb.val_loss and ha.val_accuracy == hb.val_accuracy
    assert len(ha.val_loss) == len(ha.val_accuracy) == 2
    loss, acc = tb.evaluate(X[30:], y[30:])
    assert ha.val_loss[-1] == pytest.approx(loss, rel=1e-14) and ha.val_accuracy[-1] == acc


def test_classifier_accuracy_and_regression_has_none():
    X, y = nl.datasets.load("moons", n=200, seed=0)
    net = nl.Sequential([nl.Dense(2, 16, activation="tanh"), nl.Dense(16, 2)], loss="softmax_cross_entropy",
                        seed=0)
    trainer = nl.Trainer(net, nl.optim.Adam(lr=0.03))
    h = trainer.fit(X, y, epochs=40, batch_size=20, seed=0)
    assert all(0.0 <= a <= 1.0 for a in h.accuracy)
    assert h.accuracy[-1] > 0.85 and h.accuracy[-1] > h.accuracy[0]
    loss, acc = trainer.evaluate(X, y)
    assert acc == h.accuracy[-1] == np.mean(np.argmax(net.forward(X), axis=1) == y)
    assert loss == pytest.approx(net.loss(X, y))

    Xs, ys = nl.datasets.load("sine", n=64, seed=0)
    reg = nl.Sequential([nl.Dense(1, 8, activation="tanh"), nl.Dense(8, 1)], loss="mse", seed=0)
    hr = nl.Trainer(reg, nl.optim.Adam(lr=0.01)).fit(Xs, ys, epochs=5, batch_size=16, validation_split=0.25)
    assert hr.accuracy == [] and hr.val_accuracy == [] and len(hr.val_loss) == 5
    assert nl.Trainer(reg, "sgd").evaluate(Xs, ys)[1] is None


def test_bce_accuracy_thresholds_the_logit_at_zero():
    X, y = nl.datasets.load("xor", n=64, seed=0)
    net = nl.Sequential([nl.Dense(2, 8, activation="tanh"), nl.Dense(8, 1)], loss="bce", seed=0)
    trainer = nl.Trainer(net, nl.optim.Adam(lr=0.05))
    h = trainer.fit(X, y.reshape(-1, 1).astype(float), epochs=30, batch_size=16)
    assert h.accuracy[-1] == np.mean((net.forward(X)[:, 0] > 0) == (y == 1))
    assert h.accuracy[-1] > 0.9


def test_callback_can_stop_training():
    X, y = class_data()
    h = nl.Trainer(make_net(), "adam").fit(X, y, epochs=10, batch_size=8, callback=lambda e, hist: e == 1)
    assert len(h.epoch_loss) == 2 and "callback" in h.stopped


def test_zero_epochs_changes_nothing():
    net = make_net()
    before = copies(net)
    X, y = class_data()
    h = nl.Trainer(net, "adam").fit(X, y, epochs=0)
    assert h.loss == [] and params_equal(before, net.params())


# ---------------------------------------------------------------- non-finite loss or gradient
def regression_data():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 3))
    y = X.sum(axis=1, keepdims=True)
    bad = y.copy()
    bad[13] = 1e200  # (yhat - y)^2 overflows: the 14th online step has an infinite loss
    return X, y, bad


def reg_net():
    return make_net(loss="mse", n_out=1)


def test_stop_keeps_the_weights_of_the_last_finite_step_and_fit_stops():
    X, _, bad = regression_data()
    a, b = reg_net(), reg_net()
    opt_a, opt_b = nl.optim.Adam(lr=0.01), nl.optim.Adam(lr=0.01)
    h = nl.Trainer(a, opt_a, clip=("global_norm", 1.0)).fit(X, bad, epochs=3, batch_size=1, shuffle=False)
    nl.Trainer(b, opt_b, clip=("global_norm", 1.0)).fit(X[:13], bad[:13], epochs=1, batch_size=1, shuffle=False)
    assert "non-finite loss" in h.stopped and "step 14" in h.stopped
    assert len(h.loss) == 14 and not math.isfinite(h.loss[-1]) and all(map(math.isfinite, h.loss[:13]))
    assert h.epoch_loss == [] and h.accuracy == []
    assert params_equal(a.params(), b.params())  # bitwise: the bad step changed nothing
    assert opt_a.t == opt_b.t == 13
    for s, t in zip(opt_a.state_dict()["state"], opt_b.state_dict()["state"]):
        assert np.array_equal(s, t)


def test_stop_on_an_infinite_weight_via_step():
    net = reg_net()
    X, y, _ = regression_data()
    net.params()[4][0, 0] = np.inf  # the output layer's W: the output and the loss are infinite
    before = copies(net)
    opt = nl.optim.SGD(lr=0.1, momentum=0.9)
    trainer = nl.Trainer(net, opt)  # on_nonfinite="stop" is the default
    loss = trainer.step(X, y)
    assert not math.isfinite(loss) and not trainer.last.applied
    assert params_equal(before, net.params()) and opt.t == 0 and opt.state_dict()["state"] is None


def test_raise_raises_and_keeps_the_weights():
    X, y, bad = regression_data()
    net = reg_net()
    opt = nl.optim.Adam(lr=0.01)
    trainer = nl.Trainer(net, opt, on_nonfinite="raise")
    for k in range(13):
        trainer.step(X[k:k + 1], y[k:k + 1])
    before, state = copies(net), opt.state_dict()
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        trainer.step(X[13:14], bad[13:14])
    assert params_equal(before, net.params()) and opt.t == 13
    for s, t in zip(state["state"], opt.state_dict()["state"]):
        assert np.array_equal(s, t)
    with pytest.raises(NonFiniteError):
        nl.Trainer(reg_net(), "adam", on_nonfinite="raise").fit(X, bad, epochs=1, batch_size=4)


def test_error_if_nonfinite_clip_makes_the_trainer_raise():
    X, _, bad = regression_data()
    clip = nl.clip.ClipByGlobalNorm(1.0, error_if_nonfinite=True)
    net = reg_net()
    before = copies(net)
    with pytest.raises(NonFiniteError):
        nl.Trainer(net, "adam", clip=clip).step(X, bad)
    assert params_equal(before, net.params())


def test_ignore_applies_the_update():
    X, _, bad = regression_data()
    net = reg_net()
    before = copies(net)
    opt = nl.optim.SGD(lr=0.1)
    trainer = nl.Trainer(net, opt, on_nonfinite="ignore")
    loss = trainer.step(X, bad)
    assert not math.isfinite(loss) and trainer.last.applied and opt.t == 1
    assert not params_equal(before, net.params())
    h = nl.Trainer(reg_net(), "adam", on_nonfinite="ignore").fit(X, bad, epochs=2, batch_size=5, shuffle=False)
    assert h.stopped == "" and len(h.loss) == 8


# ---------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(("kwargs", "err"), [
    (dict(epochs=-1), HyperparameterError),
    (dict(epochs=1.5), HyperparameterError),
    (dict(batch_size=0), HyperparameterError),
    (dict(batch_size=2.0), HyperparameterError),
    (dict(validation_split=1.5), HyperparameterError),
    (dict(validation_split=1.0), HyperparameterError),
    (dict(validation_split=-0.1), HyperparameterError),
    (dict(validation_split=float("nan")), HyperparameterError),
    (dict(validation_split=0.2, validation_data=(np.zeros((2, 3)), [0, 1])), HyperparameterError),
    (dict(seed=-1), HyperparameterError),
    (dict(seed="a"), HyperparameterError),
    (dict(callback=3), HyperparameterError),
    (dict(step_callback="no"), HyperparameterError),
])
def test_bad_fit_arguments_raise_before_training(kwargs, err):
    net = make_net()
    before = copies(net)
    X, y = class_data()
    trainer = nl.Trainer(net, "adam")
    with pytest.raises(err):
        trainer.fit(X, y, **kwargs)
    assert params_equal(before, net.params()) and trainer.optimizer.t == 0


def test_validation_split_leaving_no_training_data():
    X, y = class_data(2)
    with pytest.raises(ShapeError):
        nl.Trainer(make_net(), "adam").fit(X, y, validation_split=0.9)


@pytest.mark.parametrize(("kwargs", "err"), [
    (dict(regularizer=("l3", 0.1)), HyperparameterError),
    (dict(regularizer="l2"), HyperparameterError),
    (dict(regularizer=("l2", -1.0)), HyperparameterError),
    (dict(regularizer=("l2", float("inf"))), HyperparameterError),
    (dict(clip=nl.clip.Chain(("value", 1.0), ("global_norm", 1.0))), HyperparameterError),
    (dict(clip=("bogus", 1.0)), UnknownNameError),
    (dict(clip=("global_norm", -1.0)), HyperparameterError),
    (dict(clip="global_norm"), HyperparameterError),
    (dict(on_nonfinite="maybe"), HyperparameterError),
])
def test_bad_trainer_arguments(kwargs, err):
    with pytest.raises(err) as info:
        nl.Trainer(make_net(), nl.optim.SGD(lr=0.1), **kwargs)
    assert isinstance(info.value, NnlabError)


def test_bad_optimizer():
    with pytest.raises(UnknownNameError):
        nl.Trainer(make_net(), "bogus")
    with pytest.raises(HyperparameterError):
        nl.Trainer(make_net(), 42)


def test_bad_batch_is_rejected_before_any_change():
    net = make_net()
    before = copies(net)
    trainer = nl.Trainer(net, "adam")
    X, y = class_data()
    with pytest.raises(ShapeError):
        trainer.step(X[:, :2], y)
    with pytest.raises(ShapeError):
        trainer.step(X, y + 5)  # labels out of range
    assert params_equal(before, net.params()) and trainer.optimizer.t == 0


# ---------------------------------------------------------------- saving and resuming
def test_trained_model_saved_and_loaded_predicts_identically(tmp_path):
    X, y = nl.datasets.load("spirals", n=100, seed=0)
    net = nl.Sequential([nl.Dense(2, 16, activation="swish"), nl.Dense(16, 16, activation="elu"),
                         nl.Dense(16, 2)], loss="softmax_cross_entropy", seed=0)
    nl.Trainer(net, nl.optim.Adam(lr=0.02), clip=("global_norm", 1.0)).fit(X, y, epochs=5, batch_size=10)
    net.save(tmp_path / "model.npz")
    loaded = nl.load(tmp_path / "model.npz")
    assert np.array_equal(loaded.forward(X), net.forward(X))
    assert params_equal(loaded.params(), net.params())


@pytest.mark.parametrize("make_opt", [
    lambda: nl.optim.SGD(lr=0.1, momentum=0.9),
    lambda: nl.optim.Adam(lr=0.02, amsgrad=True),
    lambda: nl.optim.NAdam(lr=0.02),
    lambda: nl.optim.Adagrad(lr=0.1, lr_decay=0.01),
], ids=["sgd_momentum", "adam_amsgrad", "nadam", "adagrad"])
def test_state_dict_round_trip_resumes_identically(make_opt, tmp_path):
    bs = batches(10)
    net, opt = make_net(), make_opt()
    trainer = nl.Trainer(net, opt, clip=("global_norm", 0.5), regularizer=("l2", 1e-3))
    for X, y in bs[:5]:
        trainer.step(X, y)
    sd = opt.state_dict()
    net.save(tmp_path / "mid.npz")
    for X, y in bs[5:]:
        trainer.step(X, y)

    fresh = make_net(seed=123)  # other initial weights, overwritten below
    fresh.set_params(nl.load(tmp_path / "mid.npz").params())
    opt2 = make_opt()
    opt2.load_state_dict(sd)
    resumed = nl.Trainer(fresh, opt2, clip=("global_norm", 0.5), regularizer=("l2", 1e-3))
    for X, y in bs[5:]:
        resumed.step(X, y)
    assert params_equal(net.params(), fresh.params())
    assert opt2.t == opt.t == 10
