"""Checkpoints: a run stopped anywhere and resumed from its checkpoint gives the same bits as a
run that never stopped (every optimizer, float32 and float64, mid-epoch, noisy activations,
Dropout and BatchNorm); saves survive SIGKILL without leaving temporary files; malformed files
give a ModelFileError naming the problem."""

import json
import multiprocessing
import os
import random
import signal
import time
import zipfile

import numpy as np
import pytest

import nnlab as nl
from nnlab import _files
from nnlab.errors import HyperparameterError, ModelFileError

X, Y = nl.datasets.load("moons", n=50, seed=3)
FIT = dict(epochs=3, batch_size=8, validation_split=0.2, seed=5)  # 40 training rows: 5 batches an epoch


def _trainer(opt="adam", dtype="float64", clip=None, seed=0):
    net = nl.Sequential([nl.Dense(2, 8, activation="rrelu"), nl.BatchNorm(8), nl.Dropout(0.25),
                         nl.Dense(8, 6, activation="tanh"), nl.Dense(6, 2)],
                        loss="softmax_cross_entropy", seed=seed, dtype=dtype)
    return nl.Trainer(net, opt, clip=clip)


def _optimizer_state(opt):
    sd = opt.state_dict()
    return sd["step"], sd["scalars"], sd["hyperparams"], sd["state"]


HISTORY = ("loss", "grad_norm", "epoch_loss", "accuracy", "val_loss", "val_accuracy")


def _assert_same(a, ha, b, hb):
    """Bit-identical trainers and histories (the wall times aside)."""
    assert np.array_equal(a.net._store, b.net._store)  # parameters and BatchNorm running statistics
    assert a.net._store.dtype == b.net._store.dtype
    assert a.net.rng.bit_generator.state == b.net.rng.bit_generator.state  # the noise stream
    sa, sb = _optimizer_state(a.optimizer), _optimizer_state(b.optimizer)
    assert sa[:3] == sb[:3]
    assert len(sa[3]) == len(sb[3]) and all(np.array_equal(x, y) for x, y in zip(sa[3], sb[3]))
    for name in HISTORY:
        assert np.array_equal(getattr(ha, name), getattr(hb, name)), name
    assert len(hb.epoch_time) == len(ha.epoch_time) and len(hb.step_time) == len(ha.step_time)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("opt", nl.optim.names())
def test_resume_mid_epoch_equals_uninterrupted(tmp_path, opt, dtype):
    full = _trainer(opt, dtype)
    h_full = full.fit(X, Y, **FIT)
    assert len(h_full.loss) == 15 and not h_full.stopped
    path = tmp_path / "run.npz"
    part = _trainer(opt, dtype)
    h_part = part.fit(X, Y, **FIT, max_steps=7, checkpoint=path, checkpoint_every=3)
    assert h_part.stopped.startswith("reached max_steps=7") and len(h_part.loss) == 7  # epoch 2, batch 2 of 5
    assert not np.array_equal(part.net._store, full.net._store)
    resumed = nl.load_checkpoint(path)
    assert resumed.optimizer.name == opt and resumed.net.dtype == np.dtype(dtype)
    h = resumed.fit(X, Y, **FIT)
    _assert_same(full, h_full, resumed, h)
    assert os.listdir(tmp_path) == ["run.npz"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_killed_per_step_run_resumes_from_its_last_checkpoint(tmp_path, dtype):
    """The per-step loop (a step_callback), interrupted by an exception between checkpoints: the
    resumed run repeats the steps after the last checkpoint and ends on the same bits."""
    full = _trainer("nadam", dtype, clip=("global_norm", 0.5))
    seen = []
    h_full = full.fit(X, Y, **FIT, step_callback=lambda e, s, loss: seen.append(s))
    path = tmp_path / "run.npz"
    part = _trainer("nadam", dtype, clip=("global_norm", 0.5))

    def die(epoch, step, loss):
        if step == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        part.fit(X, Y, **FIT, step_callback=die, checkpoint=path, checkpoint_every=4)
    resumed = nl.Trainer.from_checkpoint(path)
    assert resumed.clip_kind == full.clip_kind and resumed.clip_value == 0.5
    steps = []
    h = resumed.fit(X, Y, **FIT, step_callback=lambda e, s, loss: steps.append(s))
    assert steps == seen[8:]  # continues after step 8, the last checkpoint
    _assert_same(full, h_full, resumed, h)


def test_resume_across_several_stops_and_past_the_end(tmp_path):
    full = _trainer("rmsprop")
    h_full = full.fit(X, Y, **{**FIT, "epochs": 5})
    path = tmp_path / "run.npz"
    t = _trainer("rmsprop")
    t.fit(X, Y, **FIT, max_steps=2, checkpoint=path)  # stop in epoch 1, resume, stop again ...
    for stop in (6, 13):
        t = nl.load_checkpoint(path)
        assert t.fit(X, Y, **FIT, max_steps=stop, checkpoint=path).stopped
    t = nl.load_checkpoint(path)
    t.fit(X, Y, **FIT, checkpoint=path)  # ... to the end of the 3 epochs, then on to 5
    t = nl.load_checkpoint(path)
    h = t.fit(X, Y, **{**FIT, "epochs": 5})
    _assert_same(full, h_full, t, h)


def test_fit_continues_only_the_same_run(tmp_path):
    path = tmp_path / "run.npz"
    _trainer().fit(X, Y, **FIT, max_steps=4, checkpoint=path)
    t = nl.load_checkpoint(path)
    with pytest.raises(HyperparameterError, match="batch_size"):
        t.fit(X, Y, **{**FIT, "batch_size": 4})
    with pytest.raises(HyperparameterError, match="training data"):
        t.fit(X[::-1], Y[::-1], **FIT)
    with pytest.raises(HyperparameterError, match="seed"):
        t.fit(X, Y, **{**FIT, "seed": 6})
    h = t.fit(X, Y, **FIT, resume=False)  # a new run from the saved weights
    assert len(h.loss) == 15
    with pytest.raises(HyperparameterError, match="resume=True"):
        t.fit(X, Y, **FIT, resume=True)
    with pytest.raises(HyperparameterError, match="checkpoint_every needs checkpoint"):
        t.fit(X, Y, **FIT, checkpoint_every=2)
    with pytest.raises(HyperparameterError, match="max_steps"):
        t.fit(X, Y, **FIT, max_steps=0)
    with pytest.raises(ModelFileError, match="no such directory"):
        t.fit(X, Y, **FIT, checkpoint=tmp_path / "missing" / "c.npz")


def test_checkpoint_holds_the_whole_trainer(tmp_path):
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=1)
    mon = nl.GradientMonitor(net, saturation_ratio=0.2)
    t = nl.Trainer(net, nl.optim.AdamW(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1), clip=("value", 0.3),
                   regularizer=("l1", 1e-3), on_nonfinite="raise", monitor=mon)
    t.fit(X, Y, epochs=1, batch_size=10)
    path = tmp_path / "c.npz"
    nl.save_checkpoint(path, t)
    t2 = nl.load_checkpoint(path)
    assert t2.optimizer.hyperparams() == t.optimizer.hyperparams() and t2.optimizer.t == 5
    assert (t2.clip_kind, t2.clip_value, t2.regularizer, t2.on_nonfinite) == (t.clip_kind, 0.3, t.regularizer, "raise")
    assert t2.monitor is not None and t2.monitor.net is t2.net and t2.monitor.saturation_ratio == 0.2
    with np.load(path, allow_pickle=False) as data:
        head = json.loads(bytes(data["checkpoint"]).decode())
    assert head["nnlab_version"] == nl.__version__ and head["format"] == "nnlab-checkpoint"
    assert np.array_equal(nl.load(path)._store, net._store)  # a checkpoint is a model file too
    # a model file is not a checkpoint
    net.save(tmp_path / "m.npz")
    with pytest.raises(ModelFileError, match="nnlab.load"):
        nl.load_checkpoint(tmp_path / "m.npz")
    with pytest.raises(nl.NnlabError, match="Trainer"):
        nl.save_checkpoint(tmp_path / "x.npz", net)


# ---------------------------------------------------------------- kills
def _saver(path, kind, t, pipe):
    """Save again and again, each time with every parameter (and optimizer state) set to the
    save's number: a file that loads is one complete save if all its values are equal."""
    k = 0
    while True:
        k += 1
        t.net._flat[:] = k
        t.optimizer._state[0][:] = k
        if kind == "checkpoint":
            t.save_checkpoint(path)
        else:
            t.net.save(path)
        if k == 1:
            pipe.send("ready")


def _uniform(arr):
    return arr.size > 0 and bool(np.all(arr == arr.reshape(-1)[0]))


def _kill_at_random(ctx, target, args, delay, *more):
    """Start ``target(*args, pipe, *more)`` in a forked process, wait for its "ready", SIGKILL it
    ``delay`` seconds later; the joined process."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child, *more))
    proc.start()
    assert parent.recv() == "ready"
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    return proc


@pytest.mark.parametrize("kind", ["checkpoint", "model"])
def test_sigkill_during_save_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, kind):
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / f"{kind}.npz")
    net = nl.Sequential([nl.Dense(300, 400), nl.Dense(400, 10)], seed=0)  # 124k parameters, 3 MB with Adam's state
    t = nl.Trainer(net, "adam")
    t.step(np.ones((2, 300)), np.ones((2, 10)))
    rng = random.Random(0)
    kills, intact, mid_write = 20, 0, 0
    for _ in range(kills):
        proc = _kill_at_random(ctx, _saver, (path, kind, t), rng.uniform(0.0, 0.03))
        assert proc.exitcode == -signal.SIGKILL
        mid_write += any(_files.TMP_TAG in f for f in os.listdir(tmp_path))
        if kind == "checkpoint":
            t2 = nl.load_checkpoint(path)  # also removes the dead process's temporary file
            ok = _uniform(t2.net._flat) and _uniform(t2.optimizer._state[0])
            ok = ok and t2.net._flat[0] == t2.optimizer._state[0][0, 0]
        else:
            ok = _uniform(nl.load(path)._flat)
        intact += ok
        assert [f for f in os.listdir(tmp_path) if _files.TMP_TAG in f] == []
    print(f"{kind}: {kills} kills, {intact} intact, {mid_write} mid-write, 0 temporary files left")
    assert intact == kills
    assert mid_write >= 1  # the kills did land inside saves
    net.save(path)
    assert os.listdir(tmp_path) == [os.path.basename(path)]


def _train_on(path, t, pipe, epochs):
    pipe.send("ready")
    t.fit(X, Y, **{**FIT, "epochs": epochs}, checkpoint=path, checkpoint_every=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sigkilled_training_resumes_to_the_uninterrupted_result(tmp_path, dtype):
    """A training process killed (SIGKILL) at random moments, each time continued by a new process
    from the checkpoint the killed one left: the final weights, optimizer state, noise generator and
    history are those of one uninterrupted run."""
    epochs = 20  # 100 steps, a checkpoint after each
    full = _trainer("adamax", dtype)
    h_full = full.fit(X, Y, **{**FIT, "epochs": epochs})
    ctx = multiprocessing.get_context("fork")
    path = str(tmp_path / "run.npz")
    rng = random.Random(1)
    t, positions = _trainer("adamax", dtype), []
    for _ in range(4):
        _kill_at_random(ctx, _train_on, (path, t), rng.uniform(0.02, 0.2), epochs)
        if os.path.exists(path):
            t = nl.load_checkpoint(path)
            positions.append(len(t._run.history.loss))
    assert any(0 < p < 5 * epochs for p in positions), positions  # killed mid-run at least once
    h = t.fit(X, Y, **{**FIT, "epochs": epochs})
    _assert_same(full, h_full, t, h)
    assert [f for f in os.listdir(tmp_path) if _files.TMP_TAG in f] == []
    print(f"{dtype}: killed at steps {positions}, resumed to {len(h.loss)} steps, bit-identical")


def test_stale_temporary_files_of_live_processes_and_other_paths_are_kept(tmp_path):
    path = tmp_path / "m.npz"
    mine = tmp_path / f".m.npz{_files.TMP_TAG}{os.getpid()}-99"
    other = tmp_path / f".other.npz{_files.TMP_TAG}999999999-0"
    dead = tmp_path / f".m.npz{_files.TMP_TAG}999999999-0"
    for f in (mine, other, dead):
        f.write_bytes(b"partial")
    nl.Sequential([nl.Dense(2, 1)]).save(path)
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", mine.name, other.name])


# ---------------------------------------------------------------- malformed files
def _rewrite(src, dst, drop=(), **replace):
    with np.load(src, allow_pickle=False) as data:
        members = {k: data[k] for k in data.files if k not in drop}
    members.update(replace)
    with open(dst, "wb") as fh:
        np.savez(fh, **members)
    return dst


def _header(src):
    with np.load(src, allow_pickle=False) as data:
        return json.loads(bytes(data["checkpoint"]).decode())


def _json(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def test_malformed_checkpoints_raise_model_file_error(tmp_path):
    good = tmp_path / "good.npz"
    t = _trainer("adam")
    t.fit(X, Y, **FIT, max_steps=7)
    t.save_checkpoint(good)
    head = _header(good)
    with np.load(good) as d:
        state = d["optimizer.state.0"]
        params = d["params"]

    def edit(**changes):
        h = json.loads(json.dumps(head))
        for key, value in changes.items():
            section, _, field = key.partition("__")
            if field:
                h[section][field] = value
            else:
                h[section] = value
        return _json(h)

    nan_state = state.copy()
    nan_state[0, 0] = np.nan
    inf_params = params.copy()
    inf_params[3] = np.inf
    big = dict(json.loads(bytes(np.load(good)["config"]).decode()))
    big["layers"] = [{"type": "Dense", "n_in": 100000, "n_out": 100000}]
    cases = {
        "no header": (dict(drop=("checkpoint",)), "checkpoint"),
        "header not JSON": (dict(checkpoint=np.frombuffer(b"{oops", np.uint8)), "checkpoint"),
        "wrong format": (dict(checkpoint=edit(format="other")), "not an nnlab checkpoint"),
        "newer version": (dict(checkpoint=edit(version=99)), "newer"),
        "unknown optimizer": (dict(checkpoint=edit(optimizer__name="adamx")), "adamx"),
        "missing state": (dict(drop=("optimizer.state.0",)), "optimizer.state.0"),
        "NaN state": (dict(**{"optimizer.state.0": nan_state}), "optimizer.state.0"),
        "short state": (dict(**{"optimizer.state.0": state[:, :-1]}), "optimizer.state.0"),
        "inf params": (dict(params=inf_params), "params"),
        "bad rng": (dict(checkpoint=edit(network__rng={"bit_generator": "os.system"})), "network.rng"),
        "bad run position": (dict(checkpoint=edit(run__batch=99)), "run position"),
        "order not a permutation": (dict(**{"run.order": np.zeros(40, np.int64)}), "permutation"),
        "no order mid-epoch": (dict(drop=("run.order",)), "run.order"),
        "huge architecture": (dict(config=_json(big)), "do not match"),
        "pickled history": (dict(**{"history.loss": np.array([{"a": 1}], dtype=object)}), "history.loss"),
        "bad clip": (dict(checkpoint=edit(trainer__clip=["sideways", 1.0])), "trainer"),
        "bad on_nonfinite": (dict(checkpoint=edit(trainer__on_nonfinite=3)), "on_nonfinite"),
    }
    for label, (change, needle) in cases.items():
        kw = dict(change)
        drop = kw.pop("drop", ())
        path = _rewrite(good, tmp_path / f"{label.replace(' ', '_')}.npz", drop=drop, **kw)
        with pytest.raises(ModelFileError) as info:
            nl.load_checkpoint(path)
        msg = str(info.value)
        assert needle in msg and str(path) in msg and "\n" not in msg, (label, msg)
    for label, content in {"empty": b"", "text": b"hello", "truncated": good.read_bytes()[:3000]}.items():
        path = tmp_path / f"{label}.npz"
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match="checkpoint"):
            nl.load_checkpoint(path)
    with pytest.raises(ModelFileError, match="no such"):
        nl.load_checkpoint(tmp_path / "missing.npz")


def _lying_member(path, name, shape, dtype="<f8"):
    """Replace member ``name`` of ``path`` by a .npy header declaring ``shape`` with no data."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path) as zf:
        others = {i.filename: zf.read(i) for i in zf.infolist() if i.filename != name + ".npy"}
    with zipfile.ZipFile(path, "w") as zf:
        for fname, data in others.items():
            zf.writestr(fname, data)
        zf.writestr(name + ".npy", buf.getvalue())


def test_tiny_file_declaring_a_huge_network_allocates_nothing(tmp_path):
    import tracemalloc

    net = nl.Sequential([nl.Dense(2, 3)], seed=0)
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path) as d:
        meta = json.loads(bytes(d["config"]).decode())
    meta["layers"] = [{"type": "Dense", "n_in": 50000, "n_out": 50000}]  # 2.5e9 parameters: 20 GB
    huge = tmp_path / "huge.npz"
    _rewrite(path, huge, config=_json(meta))
    lying = tmp_path / "lying.npz"
    _rewrite(path, lying, config=_json(meta))
    _lying_member(lying, "params", (50000 * 50000 + 50000,))  # the header agrees; the data are not there
    assert os.path.getsize(huge) < 10_000 and os.path.getsize(lying) < 10_000
    for p, needle in ((huge, "do not match"), (lying, "archive holds")):
        tracemalloc.start()
        try:
            with pytest.raises(ModelFileError, match=needle):
                nl.load(p)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 50 << 20, peak


def test_non_finite_parameters_are_refused(tmp_path):
    net = nl.Sequential([nl.Dense(2, 3), nl.BatchNorm(3)], seed=0)
    path = tmp_path / "m.npz"
    net.save(path)
    with np.load(path) as d:
        params, buffers = d["params"].copy(), d["buffers"].copy()
    params[1] = np.nan
    with pytest.raises(ModelFileError, match="parameters .*non-finite"):
        nl.load(_rewrite(path, tmp_path / "p.npz", params=params))
    buffers[0] = -np.inf
    with pytest.raises(ModelFileError, match="buffers .*non-finite"):
        nl.load(_rewrite(path, tmp_path / "b.npz", buffers=buffers))


@pytest.mark.parametrize("tbptt", [None, 3])
def test_recurrent_run_resumes_bit_identically(tmp_path, tbptt):
    """An LSTM sequence model, plain and with truncated BPTT (3 windows a batch): a run stopped
    inside an epoch continues to the same bits."""
    rng = np.random.default_rng(0)
    Xs, Ys = rng.normal(size=(10, 7, 2)), rng.normal(size=(10, 7, 1))

    def make():
        net = nl.Sequential([nl.LSTM(2, 4, return_sequences=True), nl.Dense(4, 1)], loss="mse", seed=2)
        return nl.Trainer(net, nl.optim.Adam(lr=0.01))

    fit = dict(epochs=3, batch_size=4, seed=1, tbptt=tbptt)  # 3 batches an epoch
    full = make()
    h_full = full.fit(Xs, Ys, **fit)
    path = tmp_path / "lstm.npz"
    stop = 4 if tbptt is None else 11  # mid-epoch 2 (with tbptt: after the batch that reaches step 11)
    h_part = make().fit(Xs, Ys, **fit, max_steps=stop, checkpoint=path, checkpoint_every=2)
    assert h_part.stopped.startswith("reached max_steps") and "epoch 2" in h_part.stopped
    resumed = nl.load_checkpoint(path)
    h = resumed.fit(Xs, Ys, **fit)
    _assert_same(full, h_full, resumed, h)
    with pytest.raises(HyperparameterError, match="tbptt"):
        nl.load_checkpoint(path).fit(Xs, Ys, **{**fit, "tbptt": 2})
