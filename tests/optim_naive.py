"""Slow, obvious NumPy references of every optimizer, written from the formulas in the docstrings of
nnlab.optim (not from the kernels). ``NAIVE[name](**hyperparams)`` gives an object whose
``step(p, g)`` updates the float64 array ``p`` in place, one whole-array formula per line.

Also the case table shared by tests/test_optim.py and tests/test_optim_torch.py: ``CASES`` (every
optimizer with every option) and the changing gradients ``grad_of(p, t, k)``."""

import numpy as np


class _Naive:
    def __init__(self, lr, weight_decay=0.0, l1=0.0, maximize=False, **hp):
        self.lr, self.wd, self.l1, self.maximize = lr, weight_decay, l1, maximize
        self.hp = hp
        self.t = 0
        self.s = None

    def grad(self, p, g):
        g = -g if self.maximize else g.copy()
        if self.wd and not self.decoupled():
            g = g + self.wd * p
        if self.l1:
            g = g + self.l1 * np.sign(p)
        return g

    def decoupled(self):
        return False

    def step(self, p, g):
        self.t += 1
        g = self.grad(p, g)
        if self.wd and self.decoupled():
            p *= 1 - self.lr * self.wd
        if self.s is None:
            self.s = self.init(p)
        p -= self.delta(g, self.s)

    def init(self, p):
        return {}


class SGD(_Naive):
    def delta(self, g, s):
        mu = self.hp.get("momentum", 0.0)
        damp = self.hp.get("dampening", 0.0)
        nesterov = self.hp.get("nesterov", False)
        ema = self.hp.get("momentum_form", "torch") == "ema"
        if mu == 0:
            return self.lr * g
        if ema:
            s["m"] = mu * s.get("m", 0.0) + (1 - mu) * g
            d = (1 - mu) * g + mu * s["m"] if nesterov else s["m"]
        else:
            s["m"] = g.copy() if self.t == 1 else mu * s["m"] + (1 - damp) * g
            d = g + mu * s["m"] if nesterov else s["m"]
        return self.lr * d


class Adagrad(_Naive):
    def init(self, p):
        return {"sum": np.full_like(p, self.hp.get("initial_accumulator_value", 0.0))}

    def delta(self, g, s):
        eps = self.hp.get("eps", 1e-10)
        clr = self.lr / (1 + (self.t - 1) * self.hp.get("lr_decay", 0.0))
        s["sum"] = s["sum"] + g * g
        return clr * g / (np.sqrt(s["sum"]) + eps)


class Adadelta(_Naive):
    def delta(self, g, s):
        rho, eps = self.hp.get("rho", 0.9), self.hp.get("eps", 1e-6)
        s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
        d = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
        s["u"] = rho * s.get("u", 0.0) + (1 - rho) * d * d
        return self.lr * d


class RMSprop(_Naive):
    def delta(self, g, s):
        alpha, eps = self.hp.get("alpha", 0.99), self.hp.get("eps", 1e-8)
        mu, centered = self.hp.get("momentum", 0.0), self.hp.get("centered", False)
        s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
        if centered:
            s["gbar"] = alpha * s.get("gbar", 0.0) + (1 - alpha) * g
            a = np.sqrt(s["v"] - s["gbar"] ** 2) + eps
        else:
            a = np.sqrt(s["v"]) + eps
        if mu > 0:
            s["b"] = mu * s.get("b", 0.0) + g / a
            return self.lr * s["b"]
        return self.lr * g / a


class Adam(_Naive):
    def decoupled(self):
        return self.hp.get("decoupled_weight_decay", False)

    def delta(self, g, s):
        b1, b2 = self.hp.get("betas", (0.9, 0.999))
        eps = self.hp.get("eps", 1e-8)
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        vhat = s["v"]
        if self.hp.get("amsgrad", False):
            s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
            vhat = s["vmax"]
        if self.hp.get("bias_correction", True):
            c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        else:
            c1 = c2 = 1.0
        return (self.lr / c1) * s["m"] / (np.sqrt(vhat) / np.sqrt(c2) + eps)


class AdamW(Adam):
    def __init__(self, lr=1e-3, weight_decay=1e-2, **hp):
        super().__init__(lr, weight_decay=weight_decay, decoupled_weight_decay=True, **hp)


class NAdam(_Naive):
    def decoupled(self):
        return self.hp.get("decoupled_weight_decay", False)

    def delta(self, g, s):
        b1, b2 = self.hp.get("betas", (0.9, 0.999))
        eps, psi = self.hp.get("eps", 1e-8), self.hp.get("momentum_decay", 4e-3)
        t = self.t
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        s["prod"] = s.get("prod", 1.0) * mu
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        d = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
        return (self.lr * (1 - mu) / (1 - s["prod"]) * g / d
                + self.lr * mu_next / (1 - s["prod"] * mu_next) * s["m"] / d)


class Adamax(_Naive):
    def delta(self, g, s):
        b1, b2 = self.hp.get("betas", (0.9, 0.999))
        eps = self.hp.get("eps", 1e-8)
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g) + eps)
        return self.lr / (1 - b1 ** self.t) * s["m"] / s["u"]


class Rprop(_Naive):
    def init(self, p):
        return {"prev": np.zeros_like(p), "step": np.full_like(p, self.lr)}

    def delta(self, g, s):
        em, ep = self.hp.get("etas", (0.5, 1.2))
        smin, smax = self.hp.get("step_sizes", (1e-6, 50))
        prod = g * s["prev"]
        factor = np.where(prod > 0, ep, np.where(prod < 0, em, 1.0))
        s["step"] = np.clip(s["step"] * factor, smin, smax)
        g = np.where(prod < 0, 0.0, g)
        s["prev"] = g
        return np.sign(g) * s["step"]


class SMORMS3(_Naive):
    def init(self, p):
        return {"mem": np.ones_like(p), "g": np.zeros_like(p), "g2": np.zeros_like(p)}

    def delta(self, g, s):
        eps = self.hp.get("eps", 1e-16)
        r = 1 / (s["mem"] + 1)
        s["g"] = (1 - r) * s["g"] + r * g
        s["g2"] = (1 - r) * s["g2"] + r * g * g
        x = s["g"] ** 2 / (s["g2"] + eps)
        d = g * np.minimum(self.lr, x) / (np.sqrt(s["g2"]) + eps)
        s["mem"] = 1 + s["mem"] * (1 - x)
        return d


NAIVE = {"sgd": SGD, "adagrad": Adagrad, "adadelta": Adadelta, "rmsprop": RMSprop, "adam": Adam,
         "adamw": AdamW, "nadam": NAdam, "adamax": Adamax, "rprop": Rprop, "smorms3": SMORMS3}


# Every optimizer with every option (name, hyperparameters); all keywords are passed to both sides.
CASES = [
    ("sgd", dict(lr=0.05)),
    ("sgd", dict(lr=0.05, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("sgd", dict(lr=0.5, momentum=0.9, momentum_form="ema")),
    ("sgd", dict(lr=0.5, momentum=0.9, momentum_form="ema", nesterov=True, weight_decay=0.05)),
    ("sgd", dict(lr=0.05, maximize=True)),
    ("sgd", dict(lr=0.05, momentum=0.9, l1=0.01)),
    ("adagrad", dict(lr=0.1)),
    ("adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.01)),
    ("adadelta", dict(lr=1.0)),
    ("adadelta", dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1)),
    ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, centered=True)),
    ("rmsprop", dict(lr=0.01, momentum=0.9)),
    ("rmsprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1)),
    ("adam", dict(lr=0.01)),
    ("adam", dict(lr=0.01, amsgrad=True)),
    ("adam", dict(lr=0.01, bias_correction=False)),
    ("adam", dict(lr=0.01, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1)),
    ("adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    ("adam", dict(lr=0.01, maximize=True, l1=0.02)),
    ("adamw", dict(lr=0.01, weight_decay=0.1)),
    ("adamw", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("nadam", dict(lr=0.01)),
    ("nadam", dict(lr=0.01, weight_decay=0.1)),
    ("nadam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=0.0)),
    ("adamax", dict(lr=0.01)),
    ("adamax", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    ("rprop", dict(lr=0.01)),
    ("rprop", dict(lr=0.01, etas=(0.3, 1.5), step_sizes=(1e-3, 0.05))),
    ("smorms3", dict(lr=0.01)),
    ("smorms3", dict(lr=0.001, eps=1e-8, weight_decay=0.1)),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items())}" for n, h in CASES]
STEPS = 30


def make_params(dtype=np.float64):
    rng = np.random.default_rng(1)
    return [rng.normal(size=(3, 4)).astype(dtype), rng.normal(size=5).astype(dtype)]


def grad_of(p, t, k):
    """A gradient that depends on p and changes with t: scale, sign and offset all vary."""
    rng = np.random.default_rng(1000 * t + k)
    scale = 10.0 ** rng.uniform(-2, 1)
    return (scale * (np.asarray(p, dtype=np.float64) - 0.5 * k) + rng.normal(size=p.shape)).astype(p.dtype)
