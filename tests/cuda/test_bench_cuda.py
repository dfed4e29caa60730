"""The structure of ``nnlab bench --device cuda`` (:mod:`nnlab.bench_cuda`), called as a library
function under the simulator with tiny shapes and one timed block. The numbers themselves mean
nothing here; the command refuses the simulator (tests/cuda/test_cli_device.py)."""

import json

import numpy as np
import pytest

from nnlab import bench_cuda
from nnlab import benchmark as B
from nnlab.kernels.layout import F_KIND, KIND_DENSE

TINY = {"tiny": B.Spec("tiny", (3, 4, 2), 4, "tanh", "mse", "xavier_normal"),
        "mnist": B.Spec("mnist", (5, 4, 3), 4, "relu", "softmax_cross_entropy", "he_normal")}
LSTM = dict(batch=2, steps=3, n_in=1, hidden=2)


@pytest.fixture(scope="module")
def results():
    return bench_cuda.run(["tiny", "mnist"], ["sgd-momentum", "adam"], repeat=1, target=1e-4, specs=TINY,
                          lstm_shape=LSTM, quiet=True)


def test_rows_and_their_checks(results):
    rows = results["rows"]
    assert [(r["config"], r["optimizer"]) for r in rows] == [
        ("tiny", "sgd-momentum"), ("tiny", "adam"), ("mnist", "sgd-momentum"), ("mnist", "adam"), ("lstm", "adam")]
    assert results["device"] == "simulator"
    for r in rows:
        assert r["check"]["nnlab"]["agree"], r["check"]
        med = r["median_s"]
        assert {"nnlab", "nnlab+copy"} <= set(med) and all(v > 0 for v in med.values())
        assert r["gemm"] == results["gemm"]
    assert rows[0]["shape"] == TINY["tiny"].describe()
    assert rows[-1]["check"]["nnlab"]["worst_relative_error_vs_cpu"] < 1e-3


def test_launches_per_step_follow_the_network(results):
    """The tiny and mnist rows have two dense layers each: 3 products per layer less one (the
    input needs no error); the optimizer changes no launch count (one update kernel either way)."""
    by = {(r["config"], r["optimizer"]): r for r in results["rows"]}
    dense = 2
    for opt in ("sgd-momentum", "adam"):
        for config in ("tiny", "mnist"):
            r = by[(config, opt)]
            k = r["launches_by_kernel"]
            assert sum(k.values()) == r["launches_per_step"] > 0
            assert k.get("tiled", 0) + k.get("cublas_gemm", 0) == 3 * dense - 1
    assert by[("tiny", "adam")]["launches_per_step"] == by[("tiny", "sgd-momentum")]["launches_per_step"]
    assert by[("lstm", "adam")]["launches_per_step"] > 0
    net = B.build_nnlab(TINY["tiny"])
    assert int(np.sum(net._program(1).ops[:, F_KIND] == KIND_DENSE)) == dense


def test_torch_column_is_timed_or_states_why_not(results):
    torch, reason = bench_cuda.torch_cuda()
    if torch is None:  # (the simulator, or a PyTorch without CUDA)
        assert reason and results["torch"] == reason
        for r in results["rows"]:
            assert r["torch_skipped"] == reason and "torch" not in r["median_s"] and "torch_over_nnlab" not in r
    else:
        assert results["torch"] == "cuda"
        for r in results["rows"]:
            assert "torch_skipped" not in r and "torch" in r["check"]
            if r["check"]["torch"]["agree"]:
                assert r["torch_over_nnlab"] == B.paired_ratio(r["time"], "torch")


def test_table_and_json(results):
    text = bench_cuda.table(results)
    assert "matrix products: " + results["gemm"] in text
    lines = text.splitlines()
    for r in results["rows"]:
        assert any(ln.startswith(f"{r['config']:<12} {r['optimizer']:<13}") and str(r["launches_per_step"]) in ln
                   for ln in lines)
    assert (f"torch column empty: {results['torch']}" in text) == (results["torch"] != "cuda")
    assert json.loads(json.dumps(results, default=str))["rows"][0]["config"] == "tiny"
