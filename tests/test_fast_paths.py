"""The per-step fast paths keep the guarantees of the full paths they shortcut.

* ``Trainer.fit`` runs an epoch's steps in one compiled call: the same bits as one ``step`` per
  batch (parameters, optimizer state and scalars, losses, norms, noise stream, stopping).
* ``Trainer.step`` checks a batch already in the network's dtype with one compiled pass; every
  bad input still raises the error the full validation raises, before any kernel runs.
* ``Optimizer.begin_flat`` skips re-validating unchanged hyperparameters; any change (a new
  value, a new attribute, an in-place edit of a list) is validated again.
"""

import numpy as np
import pytest

import nnlab as nl
from nnlab.errors import HyperparameterError, NonFiniteError, ShapeError


def _fit(compiled, act="tanh", opt="adam", dtype="float64", clip=None, reg=None, lr=0.05, X=None,
         loss="softmax_cross_entropy", on_nonfinite="stop", epochs=3):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(203, 5)) if X is None else X  # 203 rows: a ragged last batch of 11
    y = rng.integers(0, 3, 203) if loss == "softmax_cross_entropy" else rng.uniform(size=(203, 3))
    net = nl.Sequential([nl.Dense(5, 7, activation=act), nl.Dense(7, 3)], loss=loss, seed=1, dtype=dtype)
    o = nl.optim.get(opt, lr=lr)
    tr = nl.Trainer(net, o, clip=clip, regularizer=reg, on_nonfinite=on_nonfinite)
    tr.compiled_epochs = compiled
    h = tr.fit(X, y, epochs=epochs, batch_size=16, seed=4, validation_split=0.1)
    return net, o, h, tr


def _same(a, b):
    (na, oa, ha, ta), (nb, ob, hb, tb) = a, b
    assert np.array_equal(na._flat, nb._flat)
    for k in ("loss", "grad_norm", "epoch_loss", "accuracy", "val_loss", "val_accuracy"):
        assert np.array_equal(getattr(ha, k), getattr(hb, k), equal_nan=True), k
    assert ha.stopped == hb.stopped
    assert len(ha.step_time) == len(hb.step_time) and all(t >= 0 for t in ha.step_time)
    sa, sb = oa.state_dict(), ob.state_dict()
    assert sa["step"] == sb["step"] and sa["scalars"] == sb["scalars"]
    assert all(np.array_equal(x, y) for x, y in zip(sa["state"] or [], sb["state"] or []))
    assert na.rng.bit_generator.state == nb.rng.bit_generator.state
    assert np.array_equal(tuple(ta.last.__dict__.values()), tuple(tb.last.__dict__.values()), equal_nan=True)
    assert np.array_equal(ta._grads, tb._grads, equal_nan=True)


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid", "rrelu", "noisy_relu", "elu"])
@pytest.mark.parametrize("opt", ["sgd", "adam", "nadam", "adagrad"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_epochs_bit_identical(act, opt, dtype):
    _same(_fit(True, act, opt, dtype), _fit(False, act, opt, dtype))


@pytest.mark.parametrize("clip,reg", [(("global_norm", 0.1), ("l2", 0.01)), (("value", 0.01), ("decoupled", 0.1)),
                                      (("norm", 0.05), ("l1", 0.001))])
def test_compiled_epochs_with_clipping_and_regularizers(clip, reg):
    _same(_fit(True, clip=clip, reg=reg), _fit(False, clip=clip, reg=reg))


def test_compiled_epochs_mse_and_bce():
    _same(_fit(True, loss="mse"), _fit(False, loss="mse"))
    _same(_fit(True, loss="bce"), _fit(False, loss="bce"))


def test_compiled_epochs_stop_on_nonfinite():
    X = np.random.default_rng(3).normal(size=(203, 5)) * 1e3
    a, b = _fit(True, "relu", "sgd", lr=1e30, X=X), _fit(False, "relu", "sgd", lr=1e30, X=X)
    _same(a, b)
    assert a[2].stopped.startswith("non-finite")
    with pytest.raises(NonFiniteError):
        _fit(True, "relu", "sgd", lr=1e30, X=X, on_nonfinite="raise")


def test_fit_falls_back_to_per_step_with_callbacks_and_monitor():
    """A step_callback or a monitor needs control after every step: the per-step loop runs."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 3)), rng.integers(0, 2, 40)
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
    seen = []
    tr.fit(X, y, epochs=1, batch_size=8, step_callback=lambda e, s, loss: seen.append(s))
    assert seen == [1, 2, 3, 4, 5]
    mon = nl.diagnostics.GradientMonitor(net)
    nl.Trainer(net, nl.optim.SGD(lr=0.1), monitor=mon).fit(X, y, epochs=1, batch_size=8)
    assert len(mon.loss) == 5


# ---------------------------------------------------------------- Trainer.step's quick batch check
def _trainer(loss="softmax_cross_entropy", dtype="float32", n_out=3):
    net = nl.Sequential([nl.Dense(4, 5, activation="relu"), nl.Dense(5, n_out)], loss=loss, seed=0, dtype=dtype)
    return nl.Trainer(net, nl.optim.SGD(lr=0.1, momentum=0.9))


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_quick_batch_equals_full_validation(loss, dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 4)).astype(dtype)
    y = rng.integers(0, 3, 9) if loss == "softmax_cross_entropy" else rng.uniform(size=(9, 3)).astype(dtype)
    a, b = _trainer(loss, dtype), _trainer(loss, dtype)
    XY = a._quick_batch(X, y)
    assert XY is not None
    ref = b.net._prepare(X, y)
    for got, want in zip(XY, ref):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    for _ in range(3):
        assert a.step(X, y) == b._step(*b.net._prepare(X, y))
    assert np.array_equal(a.net._flat, b.net._flat)


def test_quick_batch_rejects_what_validation_rejects():
    tr = _trainer()
    X = np.ones((4, 4), np.float32)
    before = tr.net._flat.copy()
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(NonFiniteError):
        tr.step(bad, np.array([0, 1, 2, 0]))
    with pytest.raises(ShapeError):
        tr.step(X, np.array([0, 1, 3, 0]))  # label out of range
    with pytest.raises(ShapeError):
        tr.step(X, np.array([0, -1, 2, 0]))
    with pytest.raises(ShapeError):
        tr.step(X, np.array([0, 1, 2]))
    with pytest.raises(ShapeError):
        tr.step(np.ones((4, 3), np.float32), np.array([0, 1, 2, 0]))
    assert np.array_equal(tr.net._flat, before) and tr.optimizer.t == 0
    # other layouts and dtypes take the full path and still train
    tr.step(np.asfortranarray(X), [0, 1, 2, 0])
    tr.step(X.astype(np.float64), np.array([0, 1, 2, 0], np.uint8))
    assert tr.optimizer.t == 2
    reg = _trainer("bce")
    with pytest.raises(ShapeError):
        reg.step(X, np.full((4, 3), 1.5, np.float32))
    with pytest.raises(NonFiniteError):
        reg.step(X, np.full((4, 3), np.inf, np.float32))


# ---------------------------------------------------------------- validated hyperparameters are re-checked on change
def _stepper(opt):
    net = nl.Sequential([nl.Dense(3, 2)], loss="mse", seed=0)
    tr = nl.Trainer(net, opt)
    X, y = np.ones((4, 3)), np.zeros((4, 2))
    tr.step(X, y)
    return tr, X, y


def test_changed_hyperparameters_are_validated_again():
    tr, X, y = _stepper(nl.optim.Adam(lr=0.01))
    opt = tr.optimizer
    opt.lr = -1.0
    with pytest.raises(HyperparameterError):
        tr.step(X, y)
    opt.lr = 0.02
    tr.step(X, y)
    opt.betas = [0.9, 0.99]  # a list is validated at every step, so an in-place edit is caught
    tr.step(X, y)
    opt.betas[1] = 1.5
    with pytest.raises(HyperparameterError):
        tr.step(X, y)
    opt.betas = (0.9, 0.999)
    opt.eps = float("nan")
    with pytest.raises(HyperparameterError):
        tr.step(X, y)
    opt.eps = 1e-8
    opt.amsgrad = 1  # same value as True but not a bool: the type is part of the check
    with pytest.raises(HyperparameterError):
        tr.step(X, y)
    opt.amsgrad = False
    tr.step(X, y)
    assert opt.t == 4  # one step in _stepper, three here


def test_new_attribute_is_validated():
    tr, X, y = _stepper(nl.optim.Rprop(lr=0.01))
    tr.optimizer.weight_decay = -1.0  # not a Rprop hyperparameter, but read by the shared options
    with pytest.raises(HyperparameterError):
        tr.step(X, y)


def test_validation_cache_gives_same_updates():
    """begin_flat's hyperparameters (validation skipped) = the always-validating path's, step by
    step, for an optimizer with step-dependent slots and scalar state (NAdam)."""
    tr, X, y = _stepper(nl.optim.NAdam(lr=0.01))
    opt = tr.optimizer
    for _ in range(5):
        code, hp, t, state = opt.begin_flat(tr.net._flat)
        assert opt._valid is not None  # the cached verdict was used
        assert np.array_equal(hp, opt.hyperparams_for_step(t))
        tr.step(X, y)


def test_workspace_reused_for_smaller_batch_only_nearby():
    net = nl.Sequential([nl.Dense(3, 2)], loss="mse", seed=0)
    ws64 = net._workspace(64)
    assert net._workspace(40) is ws64 and net._workspace(64) is ws64
    big = net._workspace(5000)
    assert big is not ws64
    assert net._workspace(64) is not big  # a large evaluation does not pin its memory


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "mse", "bce"])
def test_chunked_epoch_evaluation(loss):
    """fit's per-epoch evaluation in chunks = the loss and accuracy of one pass over all rows."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(53, 4))
    y = rng.integers(0, 3, 53) if loss == "softmax_cross_entropy" else rng.uniform(size=(53, 3))
    net = nl.Sequential([nl.Dense(4, 6, activation="tanh"), nl.Dense(6, 3)], loss=loss, seed=0)
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
    Xp, Yp = net._prepare(X, y)
    whole = tr._eval_arrays(Xp, Yp)
    assert whole == tr.evaluate(X, y)  # one pass: the same bits as evaluate
    tr.eval_chunk = 7
    loss_c, acc_c = tr._eval_arrays(Xp, Yp)
    assert loss_c == pytest.approx(whole[0], rel=1e-13) and acc_c == whole[1]


def test_evaluate_is_one_eval_mode_pass_in_chunks():
    """evaluate: eval mode (dropout off, BatchNorm's running statistics read and left alone) over
    a set larger than eval_chunk, equal to net.loss and the accuracy of net.forward in eval mode;
    the network stays in training mode."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(53, 4))
    y = rng.integers(0, 3, 53)
    net = nl.Sequential([nl.Dense(4, 6), nl.BatchNorm(6), nl.Activation("tanh"), nl.Dropout(0.5),
                         nl.Dense(6, 3)], loss="softmax_cross_entropy", seed=0)
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
    tr.step(X, y)
    tr.eval_chunk = 7
    buffers = [b.copy() for b in net.buffers()]
    loss, acc = tr.evaluate(X, y)
    assert net.training
    assert all(np.array_equal(a, b) for a, b in zip(buffers, net.buffers()))
    net.eval()
    assert loss == pytest.approx(net.loss(X, y), rel=1e-12)
    assert acc == np.mean(np.argmax(net.forward(X), axis=1) == y)
