"""save / load: exact round trips, .npz without pickle, atomic writes, and a
ModelFileError for anything that is not an nnlab model file."""

import json
import os
import re
import zipfile

import numpy as np
import pytest

import nnlab as nl
from nnlab import activations
from nnlab.errors import ModelFileError, NnlabError


def _net(dtype="float64", seed=0):
    return nl.Sequential([
        nl.Dense(4, 6, activation="prelu", init="he_normal", bias_init=0.1),
        nl.Dense(6, 6, activation=activations.get("scaled", base="tanh", a=1.7159, learnable=True)),
        nl.Dense(6, 5, activation=activations.get("acon_c", p1=1.1)),
        nl.Dense(5, 5, activation=activations.get("gelu", approximate="tanh"), bias=False),
        nl.Dense(5, 4, activation=activations.get("rrelu", lower=0.05, upper=0.2)),
        nl.Dense(4, 3, activation="swish", init="orthogonal"),
    ], loss="softmax_cross_entropy", seed=seed, dtype=dtype)


def _edit_like_training(net):
    """Change every parameter, learnable activation values included, the way training would."""
    rng = np.random.default_rng(5)
    net.set_params([p + 0.1 * rng.normal(size=p.shape) for p in net.params()])
    named = dict(zip(net.param_names(), net.params()))
    named["2.act.beta"][0] = 1.9  # a live edit, not through set_params
    return net


X = np.random.default_rng(1).normal(size=(9, 4))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_round_trip_is_exact(tmp_path, dtype):
    net = _edit_like_training(_net(dtype)).eval()
    path = tmp_path / "model.npz"
    net.save(path)
    net2 = nl.load(path)
    assert net2.dtype == np.dtype(dtype)
    assert net2.param_names() == net.param_names()
    for name, a, b in zip(net.param_names(), net.params(), net2.params()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b, err_msg=name)
    net2.eval()
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))
    y = np.arange(9) % 3
    l1, g1 = net.loss_and_grads(X, y)
    l2, g2 = net2.loss_and_grads(X, y)
    assert l1 == l2
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    # architecture and hyperparameters survive, the learned activation values included
    assert net2.config() == net.config()
    acts = [layer.activation for layer in net2.layers]
    assert acts[0].hyperparams["alpha"] == net.params()[2][0]
    assert acts[2].hyperparams["beta"] == np.float64(np.asarray(1.9, dtype=dtype))
    assert acts[3].variant == {"approximate": "tanh"}
    assert acts[4].hyperparams == {"lower": 0.05, "upper": 0.2}
    assert acts[1].scale_learnable and "a" in acts[1].param_names
    assert [layer.bias for layer in net2.layers] == [True, True, True, False, True, True]
    assert net2.loss_name == "softmax_cross_entropy"


def test_loaded_network_is_independent(tmp_path):
    net = _net()
    path = tmp_path / "m.npz"
    net.save(path)
    net2 = nl.load(path)
    net2.params()[0][...] = 0.0
    assert not np.all(net.params()[0] == 0.0)
    assert not np.all(nl.load(path).params()[0] == 0.0)


def test_file_is_plain_npz_without_pickle(tmp_path):
    net = _net()
    path = tmp_path / "m.npz"
    net.save(str(path))  # str and PathLike both work
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"params", "config"}
        for key in data.files:
            assert data[key].dtype != object
        meta = json.loads(bytes(data["config"]).decode("utf-8"))
        np.testing.assert_array_equal(data["params"], np.concatenate([p.reshape(-1) for p in net.params()]))
    assert meta["format"] == "nnlab-model" and meta["version"] == nl.network.FORMAT_VERSION == 2
    assert meta["dtype"] == "float64" and len(meta["layers"]) == 6


def test_atomic_write_leaves_no_temp_files_and_overwrites(tmp_path):
    path = tmp_path / "m.npz"
    a, b = _net(seed=1), _net(seed=2)
    a.save(path)
    b.save(path)  # overwriting an existing file works
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    for p, q in zip(nl.load(path).params(), b.params()):
        np.testing.assert_array_equal(p, q)


def test_saved_file_has_ordinary_permissions(tmp_path):
    path = tmp_path / "m.npz"
    old = os.umask(0o022)
    try:
        _net().save(path)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600
    os.chmod(path, 0o640)
    _net().save(path)  # replacing a file keeps its permissions
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    a = _net(seed=1)
    a.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(ModelFileError, match=f"cannot save {re.escape(str(path))}: disk full"):
        _net(seed=2).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


# ---------------------------------------------------------------- not a model file
def _write(path, content):
    path.write_bytes(content)
    return path


def _npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _config(text):
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _garbage_files(tmp_path):
    good = tmp_path / "good.npz"
    _net().save(good)
    with np.load(good) as d:
        params, meta = d["params"], json.loads(bytes(d["config"]).decode())
    files = {
        "empty": _write(tmp_path / "empty.npz", b""),
        "text": _write(tmp_path / "text.npz", b"hello, world\n"),
        "truncated zip": _write(tmp_path / "trunc.npz", good.read_bytes()[:200]),
        "zip header only": _write(tmp_path / "pk.npz", b"PK\x03\x04" + b"\0" * 40),
        "npy": tmp_path / "arr.npy",
        "other npz": _npz(tmp_path / "other.npz", weights=np.arange(4.0)),
        "pickled member": tmp_path / "pickled.npz",
        "bad json": _npz(tmp_path / "badjson.npz", params=params, config=_config("{not json")),
        "json list": _npz(tmp_path / "list.npz", params=params, config=_config("[1, 2]")),
        "wrong format": _npz(tmp_path / "fmt.npz", params=params, config=_config(json.dumps({**meta, "format": "x"}))),
        "newer version": _npz(tmp_path / "ver.npz", params=params, config=_config(json.dumps({**meta, "version": 99}))),
        "string version": _npz(tmp_path / "sver.npz", params=params,
                               config=_config(json.dumps({**meta, "version": "1"}))),
        "no layers": _npz(tmp_path / "nolayers.npz", params=params,
                          config=_config(json.dumps({"format": "nnlab-model", "version": 1}))),
        "bad layer": _npz(tmp_path / "badlayer.npz", params=params,
                          config=_config(json.dumps({**meta, "layers": [{"type": "Dense"}]}))),
        "too few params": _npz(tmp_path / "few.npz", params=params[:-1], config=_config(json.dumps(meta))),
        "int params": _npz(tmp_path / "int.npz", params=params.astype(np.int64), config=_config(json.dumps(meta))),
        "directory": tmp_path,
        "missing": tmp_path / "does-not-exist.npz",
    }
    np.save(files["npy"], np.arange(3.0))
    np.savez(files["pickled member"], params=np.array([{"a": 1}], dtype=object), config=_config(json.dumps(meta)))
    return files


def test_loading_garbage_raises_model_file_error(tmp_path):
    for label, path in _garbage_files(tmp_path).items():
        with pytest.raises(ModelFileError) as info:
            nl.load(path)
        assert isinstance(info.value, NnlabError), label
        assert str(path) in str(info.value), label
        assert "\n" not in str(info.value), label  # one-line message


def test_unknown_layer_type_or_activation_names_the_problem(tmp_path):
    good = tmp_path / "good.npz"
    _net().save(good)
    with np.load(good) as d:
        params, meta = d["params"], json.loads(bytes(d["config"]).decode())
    layers = [dict(meta["layers"][0], type="Conv2D")] + meta["layers"][1:]
    p = _npz(tmp_path / "conv.npz", params=params, config=_config(json.dumps({**meta, "layers": layers})))
    with pytest.raises(nl.errors.UnknownNameError, match="Conv2D"):
        nl.load(p)
    layers = [dict(meta["layers"][0], activation=dict(meta["layers"][0]["activation"], name="nnlab_no_such_act"))]
    p = _npz(tmp_path / "act.npz", params=params,
             config=_config(json.dumps({**meta, "layers": layers + meta["layers"][1:]})))
    with pytest.raises(nl.errors.UnknownNameError, match="nnlab_no_such_act"):
        nl.load(p)


def test_save_into_a_missing_directory_is_a_model_file_error(tmp_path):
    net = nl.Sequential([nl.Dense(2, 1)], seed=0)
    with pytest.raises(ModelFileError, match="no such directory"):
        net.save(tmp_path / "missing" / "model.npz")
    with pytest.raises(ModelFileError, match="is a directory"):
        net.save(tmp_path)


def test_learned_values_outside_the_user_range_load_back(tmp_path):
    """Training may drive a learnable hyperparameter where get() refuses a user's value (softplus
    beta < 0): the model still saves and loads to the same network; a fixed one stays validated."""
    net = nl.Sequential([nl.Dense(3, 4, activation=activations.get("softplus", learnable=True)),
                         nl.Dense(4, 2)], loss="mse", seed=0)
    with pytest.raises(nl.errors.HyperparameterError):
        activations.get("softplus", beta=-0.5)
    named = dict(zip(net.param_names(), net.params()))
    named["0.act.beta"][0] = -0.5  # as an optimizer step could leave it
    path = tmp_path / "m.npz"
    net.save(path)
    net2 = nl.load(path)
    assert net2.layers[0].activation.hyperparams["beta"] == -0.5
    Xs = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(net2.forward(Xs), net.forward(Xs))
    cfg = net.layers[0].activation.config()
    bad = dict(cfg, values={"beta": float("nan")})
    with pytest.raises(nl.errors.HyperparameterError, match="not finite"):
        activations.from_config(bad)
    fixed = dict(cfg, learnable=[], values={"beta": -0.5})  # a fixed value is a user's value
    with pytest.raises(nl.errors.HyperparameterError):
        activations.from_config(fixed)
