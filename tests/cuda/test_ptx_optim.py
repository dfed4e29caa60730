"""Every optimizer, clipping, reduction and statistics kernel compiles to PTX (``cuda.compile_ptx``,
cc 8.0) at the signatures it is launched with, float32 and float64; float32 kernels do float32
arithmetic except where float64 accumulation is the design on the CPU too.

The compilation runs in a child process without the simulator (tests/cuda/ptx_opcodes.py), so this
test runs in the simulator's process and in a plain one alike."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# float64 instructions a float32 reduction may contain: widening the float32 data (cvt.f64.f32),
# accumulating, comparing and selecting in float64, the shared-memory tree and the float64
# partials it stores, float64 scalars passed in (shift, power-of-two scales)
ACCUMULATE = {"mov.f64", "cvt.f64.f32", "cvt.rn.f64.s64", "fma.rn.f64", "add.f64", "sub.f64", "mul.f64",
              "abs.f64", "neg.f64", "max.f64", "selp.f64", "st.shared.f64", "ld.shared.f64", "st.global.f64",
              "ld.param.f64"}


@pytest.fixture(scope="module")
def opcodes():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, os.path.join(HERE, "ptx_opcodes.py")], capture_output=True, text=True,
                       env=env, timeout=900)
    if r.returncode == 3:
        pytest.skip(r.stderr.strip())
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def f64_ops(ops):
    return {op for op in ops if "f64" in op}


def kernels(opcodes, dtype, prefix):
    """{kernel name without the prefix: opcode counts} of the kernels whose name starts with prefix."""
    head = f"{dtype}:{prefix}"
    return {k[len(head):]: v for k, v in opcodes.items() if k.startswith(head)}


def test_every_kernel_compiles_for_both_dtypes(opcodes):
    names32 = {k.split(":", 1)[1] for k in opcodes if k.startswith("float32:")}
    names64 = {k.split(":", 1)[1] for k in opcodes if k.startswith("float64:")}
    assert names32 == names64
    assert sum(n.startswith("optim.") for n in names32) == 9
    assert {"clip.clamp", "clip.seg_scale", "reduce.seg_sq", "reduce.seg_max", "reduce.seg_scaled_sq",
            "stats.act_pass", "stats.sq_count", "stats.sq_diff"} <= names32


def test_float32_updates_and_clipping_have_no_float64(opcodes):
    for prefix in ("optim.", "clip."):
        for name, ops in kernels(opcodes, "float32", prefix).items():
            assert not f64_ops(ops), (name, f64_ops(ops))
            assert any(op.startswith("ld.global") and op.endswith(".f32") for op in ops), name
    # and the float64 kernels do their arithmetic in float64
    for name, ops in kernels(opcodes, "float64", "optim.").items():
        assert not any(op.endswith(".f32") for op in ops), name


def test_float32_reductions_accumulate_in_float64_only(opcodes):
    """The sums of squares and moments add in float64 (as the CPU's reductions, on purpose: the
    monitor and the clipping norms compare magnitudes across the whole float32 range); the data
    is read as float32 and nothing computed in float64 is narrowed back."""
    red = {**kernels(opcodes, "float32", "reduce."), **kernels(opcodes, "float32", "stats.")}
    red.pop("act_pass")
    for name, ops in red.items():
        extra = {op for op in f64_ops(ops) if op not in ACCUMULATE and not op.startswith("setp.")}
        extra.discard("ld.global.f64")
        assert not extra, (name, extra)
        assert any(op.startswith("ld.global") and op.endswith(".f32") for op in ops), name
        assert "cvt.rn.f32.f64" not in ops, name
        # the one float64 array a float32 reduction reads: the per-segment power-of-two scales
        assert ops.get("ld.global.f64", 0) == (2 if name == "seg_scaled_sq" else 0), (name, ops)


def test_float32_activation_pass_reads_float32_writes_float64(opcodes):
    """The dead/saturated pass evaluates a·θ'(z) with the float64 hyperparameters, as the CPU's
    grad_stats does (z float32, p and a float64); it reads float32 and stores only float64 sums."""
    ops = opcodes["float32:stats.act_pass"]
    assert any(op.startswith("ld.global") and op.endswith(".f32") for op in ops)
    assert not any(op.startswith("st.global") and op.endswith(".f32") for op in ops)
    assert ops.get("st.global.f64", 0) > 0
