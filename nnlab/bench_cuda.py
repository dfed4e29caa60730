"""``nnlab bench --device cuda``: training steps of nnlab on the GPU beside PyTorch CUDA.

The rows: the four configurations of :mod:`nnlab.benchmark` (tiny, mnist, wide, deep-narrow;
float32, SGD-momentum and Adam) and the LSTM row of :mod:`nnlab.bench_layers` (batch 64, T 50,
1 -> LSTM(128) -> Dense(1), Adam). For every row:

* a check: nnlab's first step on the GPU against the float64 NumPy reference of
  :func:`nnlab.benchmark.check` (the LSTM: against nnlab's own CPU step from the same weights),
  and PyTorch's first step on the GPU the same way; a framework that disagrees is not timed;
* the time per step (median of round-robin blocks, :func:`nnlab.benchmark.time_round_robin`;
  each block ends with a device synchronisation, ``torch.cuda.synchronize()`` for PyTorch):
  ``nnlab`` is the step with the batch already on the device (as ``fit`` runs it),
  ``nnlab+copy`` is ``Trainer.step`` given the NumPy batch (one host-to-device copy a step),
  ``torch`` is PyTorch eager with the model and batch on the GPU;
* the kernel launches of one nnlab step (:func:`nnlab.kernels.cuda.launches.count_launches`) and
  which matrix product ran (cuBLAS through CuPy or nnlab's tiled kernel: ``nl.backend.info()``).

PyTorch is optional: where it is missing or has no CUDA, its column is empty with the reason.
Everything here needs a real GPU when run from the command line (the CLI refuses the simulator);
the functions run under the simulator too, which is how their structure is tested. Numbers are
measurements, never assertions.
"""

import argparse
import json
import time

import numpy as np

from . import bench_layers as BL
from . import benchmark as B

CONFIGS = ("tiny", "mnist", "wide", "deep-narrow")
OPTIMIZERS = B.OPTIMIZERS
LSTM_OPTIMIZER = "adam"


def torch_cuda():
    """(torch, None) where PyTorch runs on a CUDA GPU here, else (None, the reason)."""
    try:
        import torch
    except ImportError:
        return None, "PyTorch is not installed"
    try:
        ok = bool(torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001 - the reason is reported, never raised
        return None, f"torch.cuda failed: {type(exc).__name__}: {exc}"
    if not ok:
        return None, f"this PyTorch ({torch.__version__}, CUDA build {torch.version.cuda}) has no usable CUDA GPU"
    return torch, None


def _sync():
    from numba import cuda

    cuda.synchronize()


def _launches(step):
    """(launches of one call of ``step``, {kernel: launches})."""
    from .kernels.cuda.launches import count_launches

    with count_launches() as c:
        step()
    _sync()
    return c.total, dict(sorted(c.by_kernel.items()))


def _on_device(net, trainer, X, y):
    """The batch of (X, y) held on the device of ``net``, and a step that trains on it there."""
    Xp, Yp = net._prepare(X, y)
    net._dev.hold(Xp, Yp)
    dX, dY = net._dev.held(Xp), net._dev.held(Yp)
    return lambda: trainer._step(dX, dY)


def _nnlab_runs(trainer, X, y, device_step):
    X, y = X.copy(), y.copy()  # (arrays of their own: never the copy held on the device)

    def run_device(k):
        for _ in range(k):
            device_step()
        _sync()

    def run_copy(k):
        for _ in range(k):
            trainer.step(X, y)
        _sync()

    return {"nnlab": run_device, "nnlab+copy": run_copy}


class _TorchCuda(B.TorchRunner):
    """:class:`nnlab.benchmark.TorchRunner` with the model and the batch on the GPU."""

    name = "torch"

    def __init__(self, spec, opt, params, X, y):
        super().__init__(spec, opt, params, X, y)
        self.model.to("cuda")
        self.X, self.y = self.X.to("cuda"), self.y.to("cuda")

    def first_step(self):
        loss = float(self._step().detach().cpu())
        grads, after = [], []
        for lin in self.linears:
            grads += [lin.weight.grad.cpu().numpy().T.copy(), lin.bias.grad.cpu().numpy().copy()]
            after += [lin.weight.detach().cpu().numpy().T.copy(), lin.bias.detach().cpu().numpy().copy()]
        return loss, grads, after

    def run(self, k):
        for _ in range(k):
            self._step()
        self.torch.cuda.synchronize()


def _gemm_name():
    from .backend import info

    return info().get("cuda", {}).get("gemm", "?")


def mlp_row(spec, opt, repeat, target, torch=None, torch_reason=None):
    """One configuration x optimizer (see the module docstring); a JSON-able dict."""
    import nnlab as nl

    net = B.build_nnlab(spec).to("cuda")
    params0 = [p.copy() for p in net.params()]
    X, y = B.make_data(spec)
    masks = [z > 0 for _, z, _ in net.layer_inputs(X)[:-1]] if spec.act == "relu" else None
    trainer = nl.Trainer(net, B.nnlab_optimizer(opt))
    t0 = time.perf_counter()
    loss = trainer.step(X, y)
    first = time.perf_counter() - t0
    rep = B.check(B.reference(spec, opt, params0, X, y, masks), params0,
                  (float(loss), [g.copy() for g in trainer.grads], [p.copy() for p in net.params()]), opt)
    rep["first_call_s"] = first
    row = {"config": spec.name, "optimizer": opt, "shape": spec.describe(), "check": {"nnlab": rep}}
    runs = {}
    try:
        step = _on_device(net, trainer, X, y)
        row["launches_per_step"], row["launches_by_kernel"] = _launches(step)
        if rep["agree"]:
            runs.update(_nnlab_runs(trainer, X, y, step))
        if torch is not None:
            tr = _TorchCuda(spec, opt, params0, X, y)
            tmasks = tr.relu_masks() if spec.act == "relu" else None
            t0 = time.perf_counter()
            trep = B.check(B.reference(spec, opt, params0, X, y, tmasks), params0, tr.first_step(), opt)
            trep["first_call_s"] = time.perf_counter() - t0
            row["check"]["torch"] = trep
            if trep["agree"]:
                runs["torch"] = tr.run
        else:
            row["torch_skipped"] = torch_reason
        _time(row, runs, repeat, target, B.flops_per_step(spec))
    finally:
        net._dev.release()
    return row


def _time(row, runs, repeat, target, flops=None):
    row["gemm"] = _gemm_name()
    if not runs:
        row["median_s"] = {}
        return
    timed = B.time_round_robin(runs, repeat, target)
    row["time"] = timed
    row["median_s"] = med = {k: v["median_s"] for k, v in timed.items()}
    if "torch" in med and "nnlab" in med:
        row["torch_over_nnlab"] = B.paired_ratio(timed, "torch")
    if flops and "nnlab" in med:
        row["gflops"] = flops / med["nnlab"] / 1e9


def _worst(loss_a, grads_a, after_a, loss_b, grads_b, after_b):
    """Largest relative difference of two first steps: the loss, and per tensor the gradient and
    the weights after (relative to the tensor's largest magnitude)."""
    worst = abs(loss_a - loss_b) / max(abs(loss_b), 1e-30)
    for a, b in zip(list(grads_a) + list(after_a), list(grads_b) + list(after_b)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        worst = max(worst, float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)))
    return worst


def lstm_row(repeat, target, torch=None, torch_reason=None, shape=None):
    """The LSTM row (``shape``: :data:`nnlab.bench_layers.LSTM_SHAPE` by default)."""
    import nnlab as nl

    opt = LSTM_OPTIMIZER
    cpu = BL._nnlab_lstm(shape=shape).to("cpu")
    net = BL._nnlab_lstm(shape=shape).to("cuda")
    X, y = BL._data("lstm", shape=shape)
    model = None
    if torch is not None:
        model, pairs = BL._torch_model(torch, "lstm", cpu, shape=shape)  # (the initial weights)
    ref_tr = nl.Trainer(cpu, BL._optimizer(nl, opt))
    ref_loss = ref_tr.step(X, y)
    ref = (ref_loss, [g.copy() for g in ref_tr.grads], [p.copy() for p in cpu.params()])
    trainer = nl.Trainer(net, BL._optimizer(nl, opt))
    t0 = time.perf_counter()
    loss = trainer.step(X, y)
    first = time.perf_counter() - t0
    worst = _worst(loss, trainer.grads, net.params(), *ref)
    s = shape or BL.LSTM_SHAPE
    row = {"config": "lstm", "optimizer": opt,
           "shape": f"batch {s['batch']}, T {s['steps']}, {s['n_in']} -> LSTM({s['hidden']}) -> Dense(1), mse, float32",
           "check": {"nnlab": {"agree": worst <= BL.RTOL, "worst_relative_error_vs_cpu": worst,
                               "first_call_s": first}}}
    runs = {}
    try:
        step = _on_device(net, trainer, X, y)
        row["launches_per_step"], row["launches_by_kernel"] = _launches(step)
        if worst <= BL.RTOL:
            runs.update(_nnlab_runs(trainer, X, y, step))
        if model is not None:
            model.to("cuda")
            model.train()
            Xt = torch.tensor(X).to("cuda")
            yt = torch.tensor(y).to("cuda")
            t_opt = BL._torch_opt(torch, opt, model.parameters())
            t_loss = float(BL._torch_step(torch, "lstm", model, t_opt, Xt, yt).detach().cpu())
            names = [n for n, _, _ in pairs]
            tg = [(p.grad.detach().cpu().numpy().T if tr else p.grad.detach().cpu().numpy()) for _, p, tr in pairs]
            tw = [(p.detach().cpu().numpy().T if tr else p.detach().cpu().numpy()) for _, p, tr in pairs]
            order = dict(zip(cpu.param_names(), range(len(ref[1]))))
            tworst = _worst(t_loss, tg, tw, ref[0], [ref[1][order[n]] for n in names], [ref[2][order[n]] for n in names])
            row["check"]["torch"] = {"agree": tworst <= BL.RTOL, "worst_relative_error_vs_nnlab_cpu": tworst}
            if tworst <= BL.RTOL:
                def run_torch(k):
                    for _ in range(k):
                        BL._torch_step(torch, "lstm", model, t_opt, Xt, yt)
                    torch.cuda.synchronize()
                runs["torch"] = run_torch
        else:
            row["torch_skipped"] = torch_reason
        _time(row, runs, repeat, target)
    finally:
        net._dev.release()
    return row


def run(configs=CONFIGS, optimizers=OPTIMIZERS, repeat=15, target=0.2, lstm=True, specs=None, lstm_shape=None,
        quiet=False):
    """Every row (see the module docstring) on the current CUDA device; returns a JSON-able dict
    ``{"device", "gemm", "torch", "rows"}``. ``specs`` replaces configurations by name (smaller
    shapes), ``lstm_shape`` the LSTM's."""
    from .backend import info
    from .kernels.cuda.device import cuda

    cuda()  # DeviceError naming what is missing
    torch, reason = torch_cuda()
    specs = {**B.CONFIGS, **(specs or {})}
    rows = []
    for name in configs:
        for opt in optimizers:
            rows.append(mlp_row(specs[name], opt, repeat, target, torch, reason))
            if not quiet:
                print(row_line(rows[-1]), flush=True)
    if lstm:
        rows.append(lstm_row(repeat, target, torch, reason, lstm_shape))
        if not quiet:
            print(row_line(rows[-1]), flush=True)
    inf = info()["cuda"]
    return {"device": inf["gpu"], "gemm": inf["gemm"], "torch": "cuda" if torch is not None else reason,
            "rows": rows}


def _ms(row, col):
    v = row.get("median_s", {}).get(col)
    return "-" if v is None else f"{1e3 * v:.3f}"


def row_line(row):
    return (f"[cuda] {row['config']:<12} {row['optimizer']:<13} nnlab {_ms(row, 'nnlab')} ms, "
            f"nnlab+copy {_ms(row, 'nnlab+copy')} ms, torch {_ms(row, 'torch')} ms, "
            f"{row['launches_per_step']} launches/step")


def table(results):
    """The results of :func:`run` as a text table."""
    head = (f"{'config':<12} {'optimizer':<13} {'nnlab ms':>9} {'+copy ms':>9} {'torch ms':>9} {'torch/nnlab':>11} "
            f"{'GFLOP/s':>8} {'launches':>8}  check")
    lines = [f"device: {results['device']}; matrix products: {results['gemm']}", head, "-" * len(head)]
    for r in results["rows"]:
        ok = {k: ("ok" if v["agree"] else "DISAGREES") for k, v in r["check"].items()}
        ratio = r.get("torch_over_nnlab")
        gf = r.get("gflops")
        lines.append(f"{r['config']:<12} {r['optimizer']:<13} {_ms(r, 'nnlab'):>9} {_ms(r, 'nnlab+copy'):>9} "
                     f"{_ms(r, 'torch'):>9} {'-' if ratio is None else f'{ratio:.2f}x':>11} "
                     f"{'-' if gf is None else f'{gf:.1f}':>8} {r['launches_per_step']:>8}  "
                     f"nnlab {ok.get('nnlab', '-')}, torch {ok.get('torch', '-')}")
    skipped = {r["torch_skipped"] for r in results["rows"] if r.get("torch_skipped")}
    for why in sorted(skipped):
        lines.append(f"torch column empty: {why}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="nnlab bench --device cuda", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter timed blocks")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--repeat", type=int, default=None, help="timed blocks per framework (default 15, quick 3)")
    ap.add_argument("--no-lstm", action="store_true", help="leave the LSTM row out")
    ap.add_argument("--json", default=None, help="write every number to this file")
    args = ap.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 15)
    results = run([c for c in args.configs.split(",") if c], [o for o in args.optimizers.split(",") if o],
                  repeat=repeat, target=0.05 if args.quick else 0.2, lstm=not args.no_lstm)
    print()
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return results
