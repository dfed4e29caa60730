"""``--device cuda`` on the command line, on the simulated device: the same results as on the CPU."""

import os

import pytest
from click.testing import CliRunner

import nnlab as nl
from nnlab_cli.main import cli


@pytest.fixture
def invoke():
    runner = CliRunner()
    before = nl.backend.get_device()
    env_before = os.environ.get("NNLAB_DEVICE")
    yield lambda *args: runner.invoke(cli, ["--quiet", *args])
    nl.backend.set_device(before)
    if env_before is None:
        os.environ.pop("NNLAB_DEVICE", None)
    else:
        os.environ["NNLAB_DEVICE"] = env_before


def _result_lines(out):
    return [ln for ln in out.splitlines() if ln.startswith(("test accuracy", "epoch"))]


def test_train_on_the_device_matches_the_cpu(invoke):
    args = ["train", "--data", "xor", "--samples", "24", "--layers", "4", "--epochs", "2", "--batch-size", "8",
            "--optimizer", "sgd"]
    cpu = invoke(*args)
    assert cpu.exit_code == 0, cpu.output
    dev = invoke(*args, "--device", "cuda")
    assert dev.exit_code == 0, dev.output
    assert nl.backend.get_device() == "cuda"
    strip = [ln.rsplit("  ", 1)[0] for ln in _result_lines(cpu.output)]  # (the epoch lines end with a time)
    assert len(strip) == 3
    assert [ln.rsplit("  ", 1)[0] for ln in _result_lines(dev.output)] == strip


def test_bench_refuses_the_simulator(invoke):
    res = invoke("bench", "--quick", "--device", "cuda")
    assert res.exit_code != 0
    assert "simulator" in res.output and len(res.output.strip().splitlines()) == 1


@pytest.fixture
def pretend_gpu(monkeypatch):
    """The command's path past the simulator refusal: info() names a GPU and the device benchmark
    records the arguments it is given instead of measuring."""
    from nnlab import bench_cuda

    real_info = nl.backend.info
    monkeypatch.setattr(nl.backend, "info", lambda: {**real_info(), "cuda": {"gpu": "a GPU"}})
    calls = []
    monkeypatch.setattr(bench_cuda, "main", lambda argv: calls.append(argv) or {"rows": []})
    return calls


def test_bench_on_the_gpu_passes_its_options_on(invoke, pretend_gpu):
    res = invoke("bench", "--device", "cuda", "--quick", "--configs", "tiny,wide", "--optimizers", "adam",
                 "--repeat", "2", "--skip", "layers,fit")
    assert res.exit_code == 0, res.output
    assert pretend_gpu == [["--quick", "--configs", "tiny,wide", "--optimizers", "adam", "--repeat", "2",
                            "--no-lstm"]]


@pytest.mark.parametrize("option", [("--cold", "step"), ("--wait-quiet", "5")])
def test_bench_on_the_gpu_refuses_cpu_only_options(invoke, pretend_gpu, option):
    res = invoke("bench", "--device", "cuda", *option)
    assert res.exit_code == 2 and option[0] in res.output and "--device cuda" in res.output
    assert pretend_gpu == []
