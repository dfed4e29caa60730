"""A slow, plain-NumPy reference of forward, loss and backprop for nnlab's Dense MLPs.

It shares nothing with nnlab's compiled executor except the elementwise activation math
(``Activation.forward/derivative/param_derivative``, which the activation tests check against
finite differences separately). Everything else -- the affine maps, the losses, their gradients, the
error recurrence and the parameter gradients -- is written out here from the equations of docs/backprop.md:

    Z_l = A_{l-1} W_l + b_l,  A_l = f_l(Z_l)
    E_L = dL/dZ_L,  E_l = (E_{l+1} W_{l+1}^T) * f_l'(Z_l),  dW_l = A_{l-1}^T E_l,  db_l = sum_rows E_l

Only deterministic forward passes are modelled (eval mode for rrelu/noisy_relu).
"""

import numpy as np

from nnlab import activations


def layer_activations(net):
    """Fresh Activation objects carrying the network's *current* hyperparameter values.

    Learnable values are read from ``net.params()`` (not from the layer's Activation object), so the
    reference sees exactly what the kernels see.
    """
    params = dict(zip(net.param_names(), net.params()))
    acts = []
    for li, layer in enumerate(net.layers):
        act = activations.from_config(layer.activation.config())
        for name in act.param_names:
            act.set_value(name, float(params[f"{li}.act.{name}"][0]))
        acts.append(act)
    return acts


def unpack(net):
    """Per layer: (W, b or None, {act param name: value}) as float64 copies."""
    params = dict(zip(net.param_names(), net.params()))
    out = []
    for li, layer in enumerate(net.layers):
        W = np.array(params[f"{li}.W"], dtype=np.float64)
        b = np.array(params[f"{li}.b"], dtype=np.float64) if layer.bias else None
        out.append((W, b))
    return out


def loss_and_dout(loss, Yhat, y):
    """(L, dL/dYhat) in float64 for nnlab's three losses, written from their definitions."""
    Yhat = np.asarray(Yhat, dtype=np.float64)
    n, k = Yhat.shape
    if loss == "mse":
        Y = np.asarray(y, dtype=np.float64).reshape(n, k)
        diff = Yhat - Y
        return float((diff ** 2).sum() / (2 * n)), diff / n
    if loss == "softmax_cross_entropy":
        labels = np.asarray(y).reshape(-1).astype(np.int64)
        m = Yhat.max(axis=1, keepdims=True)
        ex = np.exp(Yhat - m)
        s = ex.sum(axis=1)
        # log-sum-exp minus the label's logit, as (m - logit) + log s: no rounding at the scale of m
        L = float(((m[:, 0] - Yhat[np.arange(n), labels]) + np.log(s)).mean())
        P = ex / s[:, None]
        P[np.arange(n), labels] -= 1.0
        return L, P / n
    if loss == "bce":
        Y = np.asarray(y, dtype=np.float64).reshape(n, k)
        X = Yhat
        L = np.maximum(X, 0) - X * Y + np.log1p(np.exp(-np.abs(X)))
        sig = np.where(X >= 0, 1 / (1 + np.exp(-np.abs(X))), np.exp(-np.abs(X)) / (1 + np.exp(-np.abs(X))))
        return float(L.mean()), (sig - Y) / (n * k)
    raise ValueError(loss)


def forward(net, X):
    """Per layer (A_prev, Z, A) and the output, in float64, eval mode."""
    acts = layer_activations(net)
    A = np.asarray(X, dtype=np.float64)
    cache = []
    for (W, b), act in zip(unpack(net), acts):
        Z = A @ W
        if b is not None:
            Z = Z + b
        An = np.asarray(act.forward(Z), dtype=np.float64)
        cache.append((A, Z, An))
        A = An
    return cache, A


def loss_and_grads(net, X, y):
    """(loss, grads aligned with net.params(), layer errors E_l, cache) from the definitions."""
    acts = layer_activations(net)
    layers = unpack(net)
    cache, out = forward(net, X)
    L, dA = loss_and_dout(net.loss_name, out, y)
    errors = [None] * len(layers)
    per_layer = [None] * len(layers)
    for li in range(len(layers) - 1, -1, -1):
        A_prev, Z, _ = cache[li]
        W, b = layers[li]
        act = acts[li]
        E = dA * act.derivative(Z)
        errors[li] = E
        g = [A_prev.T @ E]
        if b is not None:
            g.append(E.sum(axis=0))
        for pname in act.param_names:
            g.append(np.array([(dA * act.param_derivative(Z, pname)).sum()]))
        per_layer[li] = g
        dA = E @ W.T
    grads = [g for layer_grads in per_layer for g in layer_grads]
    return L, grads, errors, cache
