"""Scalar activation math: forward, derivative and parameter derivatives, compiled by Numba.

Every function here is a module-level ``@njit`` scalar function with no Python objects, so the CPU
kernels inline it and a ``numba.cuda`` twin can call the same code as a device function.

Each activation θ takes a pre-activation ``z``, up to three hyperparameters ``p0, p1, p2`` (their
names and defaults live in the registry, :mod:`nnlab.activations`) and one noise sample ``u``
(used only by the randomised activations rrelu and noisy_relu; deterministic activations ignore
it). The integer-coded dispatchers :func:`act_f`, :func:`act_d` and :func:`act_dp` are what the
network kernels call, so one compiled kernel serves every activation. NaN in gives NaN out, and
infinite inputs give the mathematical limit.
"""

import math

from numba import njit

from .._config import JIT

# Integer codes. The registry (nnlab/activations/__init__.py) maps names to these.
IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
LEAKY_RELU = 4  # also prelu (same math, learnable alpha)
RRELU = 5
NOISY_RELU = 6
ELU = 7
SELU = 8
CELU = 9
GELU = 10
GELU_TANH = 11
SOFTPLUS = 12
SWISH = 13
MISH = 14
ACON_C = 15
SOFTSIGN = 16
HARD_SIGMOID = 17
HARD_SWISH = 18
GAUSSIAN = 19
N_BUILTIN = 20
CUSTOM_BASE = 100  # user-registered activations get CUSTOM_BASE + i

SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715


# ---------------------------------------------------------------- shared helpers
@njit(**JIT)
def sigm(x):
    """Logistic σ(x) without overflow for any x."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(**JIT)
def sigm_prime(x):
    """σ'(x) = σ(x)(1-σ(x)) written as e^{-|x|}/(1+e^{-|x|})², accurate in both tails."""
    e = math.exp(-abs(x))
    return e / ((1.0 + e) * (1.0 + e))


@njit(**JIT)
def x_sigm_prime(x):
    """x·σ'(x), with its limit 0 at ±inf."""
    if math.isinf(x):
        return 0.0
    return x * sigm_prime(x)


@njit(**JIT)
def y_sigm(y, x):
    """y·σ(x) for x = c·y (c of either sign): the limit 0 where σ underflows against y = ±inf, and
    y/2 where c = 0 (then x = 0·inf is NaN)."""
    if math.isinf(y):
        if x != x:
            return 0.5 * y
        return y if x > 0 else 0.0
    return y * sigm(x)


@njit(**JIT)
def acon_s(k, z):
    """lim σ(k·z) for z = ±inf: 1/2 if k = 0, else 1 or 0 by the sign of k·z."""
    if k == 0:
        return 0.5
    return 1.0 if k * z > 0 else 0.0


@njit(**JIT)
def softplus1(x):
    """log(1 + e^x) computed stably: max(x, 0) + log1p(e^{-|x|})."""
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


# ---------------------------------------------------------------- forward θ(z)
@njit(**JIT)
def act_f(code, z, p0, p1, p2, u):
    """θ(z) for the activation ``code`` with hyperparameters p0..p2 and noise sample u."""
    if z != z:
        return z
    if code == IDENTITY:
        return z
    if code == SIGMOID:  # p0 = slope alpha
        return sigm(p0 * z)
    if code == TANH:
        return math.tanh(z)
    if code == RELU:
        return 0.0 if z <= 0 else z
    if code == LEAKY_RELU:  # p0 = alpha (0·(-inf) is NaN: alpha = 0 gives 0)
        return z if z > 0 else (p0 * z if p0 != 0 else 0.0)
    if code == RRELU:  # p0 = lower, p1 = upper, u ~ U(0,1) in training, 0.5 in eval
        a = p0 + (p1 - p0) * u
        return z if z > 0 else (a * z if a != 0 else 0.0)
    if code == NOISY_RELU:  # p0 = sigma, u ~ N(0,1) in training, 0 in eval
        s = z + p0 * u
        return 0.0 if s <= 0 else s
    if code == ELU:  # p0 = alpha
        return z if z > 0 else p0 * math.expm1(z)
    if code == SELU:  # p0 = alpha, p1 = lambda
        return p1 * (z if z > 0 else p0 * math.expm1(z)) if p1 != 0 else 0.0
    if code == CELU:  # p0 = alpha
        return z if z > 0 else p0 * math.expm1(z / p0)
    if code == GELU:
        if math.isinf(z):
            return z if z > 0 else 0.0
        return z * 0.5 * math.erfc(-z / SQRT_2)
    if code == GELU_TANH:
        if abs(z) > 1e10:
            return z if z > 0 else 0.0
        return z * sigm(2.0 * GELU_K * (z + GELU_C * z * z * z))
    if code == SOFTPLUS:  # p0 = beta; max(z, 0) + log1p(e^{-|βz|})/β cannot overflow where f is finite
        return max(z, 0.0) + math.log1p(math.exp(-abs(p0 * z))) / p0
    if code == SWISH:  # p0 = beta
        return y_sigm(z, p0 * z)
    if code == MISH:
        if math.isinf(z):
            return z if z > 0 else 0.0
        return z * math.tanh(softplus1(z))
    if code == ACON_C:  # p0 = p1, p1 = p2, p2 = beta
        d = p0 - p1
        if math.isinf(z):  # f = z·(d·σ(x) + p2) → z·(d·s + p2): 0 where that factor vanishes
            c = d * acon_s(p2 * d, z) + p1
            return c * z if c != 0 else 0.0
        return y_sigm(d * z, p2 * d * z) + p1 * z
    if code == SOFTSIGN:
        if math.isinf(z):
            return 1.0 if z > 0 else -1.0
        return z / (1.0 + abs(z))
    if code == HARD_SIGMOID:
        if z <= -3.0:
            return 0.0
        if z >= 3.0:
            return 1.0
        return z / 6.0 + 0.5
    if code == HARD_SWISH:
        if z <= -3.0:
            return 0.0
        if z >= 3.0:
            return z
        return z * (z + 3.0) / 6.0
    if code == GAUSSIAN:
        return math.exp(-z * z)
    return math.nan


# ---------------------------------------------------------------- derivative dθ/dz
@njit(**JIT)
def act_d(code, z, p0, p1, p2, u):
    """dθ/dz. At kinks the one-sided value PyTorch uses (documented in the registry)."""
    if z != z:
        return z
    if code == IDENTITY:
        return 1.0
    if code == SIGMOID:
        return p0 * sigm_prime(p0 * z)
    if code == TANH:
        e = math.exp(-2.0 * abs(z))
        return 4.0 * e / ((1.0 + e) * (1.0 + e))
    if code == RELU:
        return 1.0 if z > 0 else 0.0
    if code == LEAKY_RELU:
        return 1.0 if z > 0 else p0
    if code == RRELU:
        return 1.0 if z > 0 else p0 + (p1 - p0) * u
    if code == NOISY_RELU:
        return 1.0 if z + p0 * u > 0 else 0.0
    if code == ELU:
        return 1.0 if z > 0 else p0 * math.exp(z)
    if code == SELU:
        return p1 * (1.0 if z > 0 else p0 * math.exp(z))
    if code == CELU:
        return 1.0 if z > 0 else math.exp(z / p0)
    if code == GELU:
        if math.isinf(z):
            return 1.0 if z > 0 else 0.0
        return 0.5 * math.erfc(-z / SQRT_2) + z * INV_SQRT_2PI * math.exp(-0.5 * z * z)
    if code == GELU_TANH:
        if abs(z) > 1e10:
            return 1.0 if z > 0 else 0.0
        v = 2.0 * GELU_K * (z + GELU_C * z * z * z)
        dv = 2.0 * GELU_K * (1.0 + 3.0 * GELU_C * z * z)
        return sigm(v) + z * sigm_prime(v) * dv
    if code == SOFTPLUS:
        return sigm(p0 * z)
    if code == SWISH:
        x = p0 * z
        if x != x:  # beta = 0 and z = ±inf: f = z/2
            return 0.5
        return sigm(x) + x_sigm_prime(x)
    if code == MISH:
        if math.isinf(z):
            return 1.0 if z > 0 else 0.0
        t = math.tanh(softplus1(z))
        return t + z * (1.0 - t * t) * sigm(z)
    if code == ACON_C:
        d = p0 - p1
        if math.isinf(z):
            return d * acon_s(p2 * d, z) + p1
        x = p2 * d * z
        return d * (sigm(x) + x_sigm_prime(x)) + p1
    if code == SOFTSIGN:
        a = 1.0 + abs(z)
        return 1.0 / (a * a)
    if code == HARD_SIGMOID:
        return 1.0 / 6.0 if -3.0 < z < 3.0 else 0.0
    if code == HARD_SWISH:  # PyTorch's kink values: 0 at z = -3, 1 at z = 3
        if z <= -3.0:
            return 0.0
        if z >= 3.0:
            return 1.0
        return (2.0 * z + 3.0) / 6.0
    if code == GAUSSIAN:
        if math.isinf(z):
            return 0.0
        return -2.0 * (z * math.exp(-z * z))  # z·0 first: -2z alone overflows near the largest doubles
    return math.nan


# ---------------------------------------------------------------- parameter derivatives dθ/dp_k
@njit(**JIT)
def act_dp(code, k, z, p0, p1, p2, u):
    """dθ/dp_k for hyperparameter slot k (0, 1 or 2); 0 for slots an activation does not use."""
    if z != z:
        return z
    if code == SIGMOID and k == 0:
        return x_sigm_prime(p0 * z) / p0 if p0 != 0 else (0.0 if math.isinf(z) else z * 0.25)
    if code == LEAKY_RELU and k == 0:
        return 0.0 if z > 0 else z
    if code == RRELU:
        if z > 0:
            return 0.0
        return z * (1.0 - u) if k == 0 else (z * u if k == 1 else 0.0)
    if code == NOISY_RELU and k == 0:
        return u if z + p0 * u > 0 else 0.0
    if code == ELU and k == 0:
        return 0.0 if z > 0 else math.expm1(z)
    if code == SELU:
        if k == 0:
            return 0.0 if z > 0 else p1 * math.expm1(z)
        if k == 1:
            return z if z > 0 else p0 * math.expm1(z)
        return 0.0
    if code == CELU and k == 0:
        if z > 0:
            return 0.0
        if math.isinf(z):
            return -1.0
        x = z / p0
        if math.isinf(x):
            return -1.0
        return math.expm1(x) - x * math.exp(x)
    if code == SOFTPLUS and k == 0:
        if math.isinf(z):
            return 0.0
        x = p0 * z
        if math.isinf(x):  # βz overflowed: the derivative has already decayed to 0
            return 0.0
        # x·σ(x) − softplus(x), x = βz, without cancellation: for x > 0 both terms are ≈ x and the
        # difference is −(x·σ(−x) + log1p(e^{−x})), a sum of two positive terms; for x <= 0 they
        # have opposite signs and nothing cancels.
        if x > 0.0:
            h = -(x * sigm(-x) + math.log1p(math.exp(-x)))
        else:
            h = x * sigm(x) - math.log1p(math.exp(x))
        return h / (p0 * p0)
    if code == SWISH and k == 0:
        # d/dβ z σ(βz) = z² σ'(βz), grouped so that z² cannot overflow against σ' = 0
        if math.isinf(z):
            return 0.0 if p0 != 0 else math.inf
        return z * (z * sigm_prime(p0 * z))
    if code == ACON_C:
        d = p0 - p1
        if math.isinf(z):  # σ(x) → s, x σ'(x) → 0, faster than z grows
            s = acon_s(p2 * d, z)
            if k == 0:
                return z * s if s != 0 else 0.0
            if k == 1:
                return z * (1.0 - s) if s != 1 else 0.0
            return math.inf if p2 == 0 and d != 0 else 0.0
        y = d * z
        x = p2 * y
        # σ(x) + xσ'(x) = σ(x)(1 + xσ(−x)) and its complement 1 − σ(x) − xσ'(x) = σ(−x)(1 − xσ(x)):
        # products with no cancellation in either tail (z − g lost digits as g → z at large x)
        if k == 0:
            sp = sigm(x)
            return 0.0 if sp == 0.0 else z * (sp * (1.0 + x * sigm(-x)))
        if k == 1:
            sn = sigm(-x)
            return 0.0 if sn == 0.0 else z * (sn * (1.0 - x * sigm(x)))
        return y * (y * sigm_prime(x))
    return 0.0
