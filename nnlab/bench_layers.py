"""The ``layers`` section of ``nnlab bench``: training steps of networks built from the remedy
layers, beside PyTorch eager on the same architecture and weights.

* ``lstm``: batch 64, T 50, 1 -> LSTM(128) -> Dense(1) (many-to-one), mse, Adam, float32;
* ``bn-dropout``: 784 -> Dense 256 -> BatchNorm -> relu -> Dropout(0.5) -> Dense 256 -> BatchNorm
  -> relu -> Dropout(0.5) -> Dense 10 (no bias in the dense layers before BatchNorm), batch 128, softmax cross-entropy, SGD-momentum and Adam,
  float32.

Before timing, one training step of each framework from the same weights is compared (loss,
every gradient, the updated weights; float32 tolerances): the dropout network is compared with
p = 0 (the same program without masks: both frameworks draw their own masks, which cannot be made
equal), then both are timed with p = 0.5 in training mode. A framework that disagrees is reported
and not timed. JAX has neither layer built in and is not run here. Goals: at least 1.0x PyTorch on
both rows, at least 2x on the LSTM. Numbers are measurements, never assertions.
"""

import numpy as np

from .benchmark import paired_ratio

LSTM_SHAPE = dict(batch=64, steps=50, n_in=1, hidden=128)
MLP_SHAPE = dict(batch=128, widths=(784, 256, 256, 10), p=0.5)
GOALS = (("lstm", "adam", 2.0), ("lstm", "adam", 1.0), ("bn-dropout", "sgd-momentum", 1.0),
         ("bn-dropout", "adam", 1.0))
RTOL = 2e-3  # float32: relative to each tensor's largest magnitude


def _nnlab_lstm(seed=0, shape=None):
    import nnlab as nl

    s = shape or LSTM_SHAPE
    return nl.Sequential([nl.LSTM(s["n_in"], s["hidden"]), nl.Dense(s["hidden"], 1)], loss="mse", seed=seed,
                         dtype="float32")


def _nnlab_mlp(p, seed=0):
    import nnlab as nl

    w = MLP_SHAPE["widths"]
    layers = []
    for a, b in zip(w[:-2], w[1:-1]):
        # (no bias before BatchNorm: its mean subtraction cancels it, as in torch practice)
        layers += [nl.Dense(a, b, init="he_normal", bias=False), nl.BatchNorm(b), nl.Activation("relu"),
                   nl.Dropout(p)]
    layers.append(nl.Dense(w[-2], w[-1], init="he_normal"))
    return nl.Sequential(layers, loss="softmax_cross_entropy", seed=seed, dtype="float32")


def _data(case, seed=0, shape=None):
    rng = np.random.default_rng(seed)
    if case == "lstm":
        s = shape or LSTM_SHAPE
        X = rng.standard_normal((s["batch"], s["steps"], s["n_in"])).astype(np.float32)
        return X, rng.standard_normal(s["batch"]).astype(np.float32)
    s = MLP_SHAPE
    X = rng.standard_normal((s["batch"], s["widths"][0])).astype(np.float32)
    return X, rng.integers(0, s["widths"][-1], s["batch"])


def _optimizer(nl, opt):
    return nl.optim.SGD(lr=0.01, momentum=0.9) if opt == "sgd-momentum" else nl.optim.Adam(lr=1e-3)


def _torch_model(torch, case, net, shape=None):
    """The torch module holding ``net``'s weights, and the order of its parameters as nnlab's
    (``shape``: the LSTM's, LSTM_SHAPE by default)."""
    P = {n: np.array(p) for n, p in zip(net.param_names(), net.params())}
    t = lambda a: torch.tensor(np.ascontiguousarray(a))  # noqa: E731
    if case == "lstm":
        s = shape or LSTM_SHAPE

        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(s["n_in"], s["hidden"], batch_first=True)
                self.out = torch.nn.Linear(s["hidden"], 1)

            def forward(self, x):
                return self.out(self.lstm(x)[0][:, -1])

        m = M()
        with torch.no_grad():
            m.lstm.weight_ih_l0.copy_(t(P["0.W_ih"].T))
            m.lstm.weight_hh_l0.copy_(t(P["0.W_hh"].T))
            m.lstm.bias_ih_l0.copy_(t(P["0.b"]))
            m.lstm.bias_hh_l0.zero_()
            m.out.weight.copy_(t(P["1.W"].T))
            m.out.bias.copy_(t(P["1.b"]))
        pairs = [("0.W_ih", m.lstm.weight_ih_l0, True), ("0.W_hh", m.lstm.weight_hh_l0, True),
                 ("0.b", m.lstm.bias_ih_l0, False), ("1.W", m.out.weight, True), ("1.b", m.out.bias, False)]
        return m, pairs
    mods, pairs = [], []
    for li, layer in enumerate(net.layers):
        kind = type(layer).__name__
        if kind == "Dense":
            lin = torch.nn.Linear(layer.n_in, layer.n_out, bias=layer.bias)
            with torch.no_grad():
                lin.weight.copy_(t(P[f"{li}.W"].T))
                if layer.bias:
                    lin.bias.copy_(t(P[f"{li}.b"]))
            mods.append(lin)
            pairs += [(f"{li}.W", lin.weight, True)] + ([(f"{li}.b", lin.bias, False)] if layer.bias else [])
        elif kind == "BatchNorm":
            bn = torch.nn.BatchNorm1d(layer.n_in)
            mods.append(bn)
            pairs += [(f"{li}.gamma", bn.weight, False), (f"{li}.beta", bn.bias, False)]
        elif kind == "Activation":
            mods.append(torch.nn.ReLU())
        else:
            mods.append(torch.nn.Dropout(layer.p))
    return torch.nn.Sequential(*mods), pairs


def _torch_step(torch, case, model, opt_obj, Xt, yt):
    opt_obj.zero_grad(set_to_none=True)
    out = model(Xt)
    if case == "lstm":
        loss = 0.5 * ((out[:, 0] - yt) ** 2).mean()
    else:
        loss = torch.nn.functional.cross_entropy(out, yt)
    loss.backward()
    opt_obj.step()
    return loss


def _torch_opt(torch, opt, params):
    if opt == "sgd-momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return torch.optim.Adam(params, lr=1e-3)


def check(case, opt, torch):
    """One training step of nnlab and torch from the same weights: (ok, worst relative error, text)."""
    import nnlab as nl

    net = _nnlab_lstm() if case == "lstm" else _nnlab_mlp(0.0)
    X, y = _data(case)
    model, pairs = _torch_model(torch, case, net)
    model.train()
    Xt = torch.tensor(X)
    yt = torch.tensor(y if case == "lstm" else y.astype(np.int64))
    t_opt = _torch_opt(torch, opt, model.parameters())
    loss_t = float(_torch_step(torch, case, model, t_opt, Xt, yt).detach())
    trainer = nl.Trainer(net, _optimizer(nl, opt))
    loss_n = trainer.step(X, y)
    grads = dict(zip(net.param_names(), trainer.grads))
    after = dict(zip(net.param_names(), net.params()))
    worst = abs(loss_n - loss_t) / max(abs(loss_t), 1e-30)
    # a tensor whose exact gradient is 0 holds rounding noise in both frameworks: its errors are
    # judged against 1e-3 of the largest gradient of the network
    scale = max(float(np.abs(p.grad.detach().numpy()).max()) for _, p, _ in pairs)
    for name, p, transposed in pairs:
        g = p.grad.detach().numpy()
        w = p.detach().numpy()
        g, w = (g.T, w.T) if transposed else (g, w)
        worst = max(worst, float(np.abs(grads[name] - g).max() / max(np.abs(g).max(), 1e-3 * scale)))
        worst = max(worst, float(np.abs(after[name] - w).max() / max(np.abs(w).max(), 1e-30)))
    return worst <= RTOL, worst


def _runners(case, opt, torch, threads):
    """{'nnlab': run(k), 'torch': run(k)} timing k training steps each (dropout p = 0.5)."""
    import nnlab as nl

    X, y = _data(case)
    net = _nnlab_lstm() if case == "lstm" else _nnlab_mlp(MLP_SHAPE["p"])
    trainer = nl.Trainer(net, _optimizer(nl, opt))
    runs = {}

    def run_nnlab(k):
        for _ in range(k):
            trainer.step(X, y)
    runs["nnlab"] = run_nnlab
    if torch is not None:
        model, _ = _torch_model(torch, case, net)
        model.train()
        Xt = torch.tensor(X)
        yt = torch.tensor(y if case == "lstm" else y.astype(np.int64))
        t_opt = _torch_opt(torch, opt, model.parameters())

        def run_torch(k):
            for _ in range(k):
                _torch_step(torch, case, model, t_opt, Xt, yt)
        runs["torch"] = run_torch
    return runs


# The LSTM row runs last: building an LSTM starts Numba's OpenMP threading layer
# (nnlab.kernels.recurrent), which a process that also runs PyTorch then shares with it, and every
# later step of both frameworks in that process ran slower (the bn-dropout rows after it: nnlab 1.4
# -> 2.8 ms, torch 2.7 -> 3.7 ms, and up to 80 ms per step inside the round-robin timing).
ROWS = (("bn-dropout", "sgd-momentum"), ("bn-dropout", "adam"), ("lstm", "adam"))


def run(repeat, target, time_round_robin, quick=False):
    """Check and time every row; returns a list of row dicts (JSON-able)."""
    try:
        import torch
    except ImportError:
        torch = None
    rows = []
    for case, opt in ROWS:
        row = {"case": case, "optimizer": opt}
        if torch is not None:
            ok, worst = check(case, opt, torch)
            row["torch_check"] = {"ok": ok, "worst_relative_error": worst}
        runs = _runners(case, opt, torch if torch is not None and row["torch_check"]["ok"] else None, None)
        timed = time_round_robin(runs, repeat if not quick else max(3, repeat // 5), target)
        row["time"] = timed
        row["median_s"] = medians = {k: v["median_s"] for k, v in timed.items()}
        if "torch" in medians:
            row["torch_over_nnlab"] = paired_ratio(timed, "torch")
        print(f"[layers] {case:<10} {opt:<13} nnlab {1e3 * medians['nnlab']:.2f} ms"
              + (f", torch {1e3 * medians['torch']:.2f} ms ({row['torch_over_nnlab']:.2f}x)" if "torch" in medians
                 else ", torch n/a"), flush=True)
        rows.append(row)
    return rows


def table(rows):
    """The section's table and its goals as text."""
    lines = [f"{'case':<12}{'optimizer':<15}{'nnlab ms':>10}{'torch ms':>10}{'torch/nnlab':>13}  check vs torch",
             "-" * 78]
    for r in rows:
        m = r["median_s"]
        chk = r.get("torch_check")
        lines.append(f"{r['case']:<12}{r['optimizer']:<15}{1e3 * m['nnlab']:>10.2f}"
                     f"{(1e3 * m['torch']) if 'torch' in m else float('nan'):>10.2f}"
                     f"{r.get('torch_over_nnlab', float('nan')):>12.2f}x  "
                     + ("n/a" if chk is None else f"{'ok' if chk['ok'] else 'DISAGREES'} "
                        f"(worst rel. err {chk['worst_relative_error']:.1e})"))
    lines.append("")
    lines.append("goal                                   measured  verdict")
    for case, opt, goal in GOALS:
        r = next((r for r in rows if r["case"] == case and r["optimizer"] == opt), None)
        v = None if r is None else r.get("torch_over_nnlab")
        if v is None:
            verdict = "n/a (torch not run)"
        elif v >= goal:
            verdict = f"MET (margin {v / goal:.2f}x)"
        else:
            verdict = f"MISSED by {goal / v:.2f}x"
        lines.append(f"{case} {opt}: torch/nnlab >= {goal:g}x".ljust(38)
                     + f"{'-' if v is None else f'{v:.2f}x':>9}  {verdict}")
    return "\n".join(lines)
