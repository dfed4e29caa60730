"""CPU kernels (Numba ``@njit``) for the optimizers, gradient clipping and the EWA.

One compiled call updates a whole flat buffer: :func:`opt_update` dispatches on an integer
optimizer code to one loop per optimizer (``adam_update``, ...), whose body is the shared
:func:`prologue` (maximize, L2, L1, decoupled decay) and a small scalar rule (``adam_rule``, ...).
The rules take and return plain floats, so a ``numba.cuda`` twin can call the very same functions
from a grid-stride loop.

Arguments shared by every update kernel:

* ``code``  the optimizer code (``SGD`` ... ``SMORMS3`` below);
* ``hp``    float64 vector of length ``NHP`` with the hyperparameters *for this step*: the common
  slots ``H_LR`` .. ``H_MAX`` and the optimizer's own slots from ``H_0`` on (step-dependent
  scalars such as Adam's bias corrections are computed on the host once per step; see
  :meth:`nnlab.optim.Optimizer.hyperparams_for_step`);
* ``t``     the 1-based number of this step;
* ``p``, ``g``  1-D float32 or float64 arrays of the same dtype; ``p`` is updated in place;
* ``state`` 2-D array (n_slots, p.size), same dtype as ``p``, updated in place (its rows are
  listed per optimizer in :mod:`nnlab.optim`).

Reductions (squared norms) accumulate in float64 whatever the array dtype.
"""

import math

import numpy as np
from numba import njit

from .._config import JIT
from .common import assign1, assign2

# ---------------------------------------------------------------- optimizer codes
SGD = 0
ADAGRAD = 1
ADADELTA = 2
RMSPROP = 3
ADAM = 4
NADAM = 5
ADAMAX = 6
RPROP = 7
SMORMS3 = 8

# ---------------------------------------------------------------- hyperparameter slots
H_LR = 0    # learning rate
H_WD = 1    # coupled L2 weight decay: g += wd * p
H_L1 = 2    # L1 penalty: g += l1 * sign(p)
H_DWD = 3   # decoupled weight decay: p *= 1 - lr * dwd (before the rule)
H_MAX = 4   # 1.0: maximize (g = -g first)
H_0 = 5     # first optimizer-specific slot
NHP = 16


# ---------------------------------------------------------------- scalar helpers
# The small functions of the clipping and norm kernels are inlined into their callers at the Numba IR level:
# each would otherwise be a compiled function of its own (a fixed cost per function on a cold cache,
# see docs/performance.md, "Cold start") for a few lines of code.
INLINE = dict(JIT, inline="always")


@njit(**JIT)
def sign(x):
    """sign(x) with sign(0) = 0 (and NaN for NaN)."""
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return x * 0.0


@njit(**JIT)
def effective_grad(g, p, maximize, wd, l1):
    """g' = ±g + wd·p + l1·sign(p): maximisation, coupled L2 and L1 folded into the gradient."""
    if maximize:
        g = -g
    if wd != 0.0:
        g = g + wd * p
    if l1 != 0.0:
        g = g + l1 * sign(p)
    return g


# ---------------------------------------------------------------- the rules, one element each
@njit(**JIT)
def sgd_rule(g, m, mu, damp, nesterov, ema, first):
    """(d, m'): the step direction d (p -= lr·d) and the new momentum buffer.

    torch form: m = g on the first step, then m = μm + (1−dampening)g; d = g + μm (Nesterov) or m.
    EMA form:   m = βm + (1−β)g from m₀ = 0;                 d = (1−β)g + βm (Nesterov) or m.
    """
    if mu == 0.0:
        return g, m
    if ema:
        m = mu * m + (1.0 - mu) * g
        if nesterov:
            return (1.0 - mu) * g + mu * m, m
        return m, m
    if first:
        m = g
    else:
        m = mu * m + (1.0 - damp) * g
    if nesterov:
        return g + mu * m, m
    return m, m


@njit(**JIT)
def adagrad_rule(g, s, clr, eps):
    """(Δ, s'): s = s + g², Δ = clr·g/(√s + ε)."""
    s = s + g * g
    return clr * (g / (math.sqrt(s) + eps)), s


@njit(**JIT)
def adadelta_rule(g, sq, acc, rho, eps):
    """(d, sq', acc'): sq = ρsq + (1−ρ)g², d = √(acc+ε)/√(sq+ε)·g, acc = ρacc + (1−ρ)d²."""
    sq = rho * sq + (1.0 - rho) * (g * g)
    d = math.sqrt(acc + eps) / math.sqrt(sq + eps) * g
    acc = rho * acc + (1.0 - rho) * (d * d)
    return d, sq, acc


@njit(**JIT)
def rmsprop_rule(g, sq, ga, buf, alpha, eps, mu, centered):
    """(d, sq', ga', buf'): sq = αsq + (1−α)g²; ga = αga + (1−α)g (centered);
    a = √(sq − ga²) + ε (centered, clamped at 0 under the root) or √sq + ε;
    d = g/a, or with momentum buf = μbuf + g/a and d = buf."""
    sq = alpha * sq + (1.0 - alpha) * (g * g)
    if centered:
        ga = alpha * ga + (1.0 - alpha) * g
        a = math.sqrt(max(sq - ga * ga, 0.0)) + eps
    else:
        a = math.sqrt(sq) + eps
    if mu > 0.0:
        buf = mu * buf + g / a
        return buf, sq, ga, buf
    return g / a, sq, ga, buf


@njit(**JIT)
def adam_rule(g, m, v, vmax, b1, b2, eps, amsgrad, step_size, bc2_sqrt):
    """(Δ, m', v', vmax'): m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², vmax = max(vmax, v) (AMSGrad),
    Δ = step_size·m/(√v̂/√bc₂ + ε) with step_size = lr/bc₁ (bc = 1 without bias correction)."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * (g * g)
    if amsgrad:
        vmax = max(vmax, v)
        denom = math.sqrt(vmax) / bc2_sqrt + eps
    else:
        denom = math.sqrt(v) / bc2_sqrt + eps
    return step_size * (m / denom), m, v, vmax


@njit(**JIT)
def sqrt32(v):
    """√v of a float64 v in float32 arithmetic (one float32 square root: twice the vector lanes of a
    float64 one, and cheaper per lane). Beyond 2^±100, v is first scaled by an exact even power of
    two into float32's normal range and the root scaled back, so the result is √v rounded to
    float32 within one float32 ulp for every v >= 0 (0 where √v is below float32's smallest
    subnormal, inf where it exceeds float32's largest number); NaN gives NaN."""
    big = v >= 2.0 ** 100
    small = v < 2.0 ** -100
    x = v * (2.0 ** -128 if big else (2.0 ** 200 if small else 1.0))
    return np.sqrt(np.float32(x)) * np.float32(2.0 ** 64 if big else (2.0 ** -100 if small else 1.0))


@njit(**JIT)
def inv_root32(w, c, eps):
    """1/(c·√w + ε) computed in float32 arithmetic, returned as a float64 -- the costly part of the
    adaptive rules' step (Adagrad, RMSprop, Adam) on a float32 buffer; the caller multiplies it
    with the gradient or moment in float64. A root below float32's normal range (w < 2^-252) is
    taken as 0: it would be a subnormal number, whose float32 arithmetic runs through microcode
    assists, and beside ε >= 2^-100 (the condition under which the update kernels use this) it
    changes the denominator by less than 2^-26 of itself. The denominator is then a normal float32
    number >= ε, so no subnormal ever enters float32 arithmetic here."""
    root = sqrt32(w) if w >= 2.0 ** -252 else np.float32(0.0)
    return np.float64(np.float32(1.0) / (root * np.float32(c) + np.float32(eps)))


@njit(**JIT)
def adagrad_rule32(g, s, clr, eps):
    """:func:`adagrad_rule` for a float32 buffer: s as there, Δ = clr·g·inv_root32(s, 1, ε)."""
    s = s + g * g
    return clr * (g * inv_root32(s, 1.0, eps)), s


@njit(**JIT)
def rmsprop_rule32(g, sq, ga, buf, alpha, eps, mu, centered):
    """:func:`rmsprop_rule` for a float32 buffer: the averages as there, 1/a by :func:`inv_root32`."""
    sq = alpha * sq + (1.0 - alpha) * (g * g)
    if centered:
        ga = alpha * ga + (1.0 - alpha) * g
        inv = inv_root32(max(sq - ga * ga, 0.0), 1.0, eps)
    else:
        inv = inv_root32(sq, 1.0, eps)
    if mu > 0.0:
        buf = mu * buf + g * inv
        return buf, sq, ga, buf
    return g * inv, sq, ga, buf


@njit(**JIT)
def adam_rule32(g, m, v, vmax, b1, b2, eps, amsgrad, step_size, bc2_sqrt):
    """:func:`adam_rule` for a float32 buffer: m, v and vmax exactly as there (float64, then stored
    in float32), the square root and the reciprocal of the step Δ = step_size·m/(√v̂/√bc₂ + ε) in
    float32 arithmetic, the products with m and step_size in float64. The float64 square root and
    two divisions made Adam's update twice as slow (270k parameters: 546 vs 271 µs); the step
    differs by float32 rounding of 1/(√v̂/√bc₂ + ε) only, far below the rounding of p itself (30
    steps of 270k float32 weights against an all-float64 run: mean error 8.729e-8, 8.730e-8 with
    the float64 step; maximum 1.467e-6 both)."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * (g * g)
    w = max(vmax, v) if amsgrad else v
    if amsgrad:
        vmax = w
    # the products with m and step_size in float64: no float32 arithmetic on the subnormal moments
    # of vanishing gradients (dividing the float32-cast moment made deep-narrow's Adam step 3.0 ms
    # instead of 2.1 ms)
    return step_size * (m * inv_root32(w, 1.0 / bc2_sqrt, eps)), m, v, vmax


@njit(**JIT)
def nadam_rule(g, m, v, b1, b2, eps, bc2, cg, cm):
    """(Δg, Δm, m', v'): p += Δg then p += Δm, with Δg = cg·g/d, Δm = cm·m/d, d = √(v/bc₂) + ε."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * (g * g)
    d = math.sqrt(v / bc2) + eps
    return cg * (g / d), cm * (m / d), m, v


@njit(**JIT)
def adamax_rule(g, m, u, b1, b2, eps, clr):
    """(Δ, m', u'): m = β₁m + (1−β₁)g, u = max(β₂u, |g| + ε), Δ = clr·m/u."""
    m = b1 * m + (1.0 - b1) * g
    u = max(b2 * u, abs(g) + eps)
    return clr * (m / u), m, u


@njit(**JIT)
def rprop_rule(g, prev, step, eta_minus, eta_plus, smin, smax):
    """(Δ, prev', step'): the step grows by η₊ while sign(g·prev) > 0, shrinks by η₋ (and that
    step is skipped, g := 0) when it is < 0; clamped to [smin, smax]; Δ = sign(g)·step."""
    s = g * prev
    if s > 0.0:
        step = step * eta_plus
    elif s < 0.0:
        step = step * eta_minus
        g = 0.0
    step = min(max(step, smin), smax)
    return sign(g) * step, g, step


@njit(**JIT)
def smorms3_rule(g, mem, gm, g2, lr, eps):
    """(Δ, mem', gm', g2') after Simon Funk: r = 1/(mem+1), gm = (1−r)gm + rg, g2 = (1−r)g2 + rg²,
    x = gm²/(g2+ε), Δ = g·min(lr, x)/(√g2 + ε), mem = 1 + mem(1 − x)."""
    r = 1.0 / (mem + 1.0)
    gm = (1.0 - r) * gm + r * g
    g2 = (1.0 - r) * g2 + r * (g * g)
    x = gm * gm / (g2 + eps)
    d = g * min(lr, x) / (math.sqrt(g2) + eps)
    mem = 1.0 + mem * (1.0 - x)
    return d, mem, gm, g2


# ---------------------------------------------------------------- one loop per optimizer
@njit(**JIT)
def common(hp):
    """The shared options as scalars: (maximize, wd, l1, decay) with decay = 1 − lr·dwd.

    Per-element helpers take scalars only: an array argument to a function that is not inlined
    costs a reference-count round trip per call.
    """
    return hp[H_MAX] != 0.0, hp[H_WD], hp[H_L1], 1.0 - hp[H_LR] * hp[H_DWD]


@njit(**JIT)
def prologue(p, g, maximize, wd, l1, decay):
    """(p, g) after the shared options: g ← ±g + wd·p + l1·sign(p), then p ← p·(1 − lr·dwd)."""
    g = effective_grad(g, p, maximize, wd, l1)
    if decay != 1.0:
        p = p * decay
    return p, g


@njit(**JIT)
def is_plain(maximize, wd, l1, decay):
    """True when the shared options do nothing (the common case): the update loops then skip the
    prologue, and LLVM vectorises them (a loop with the prologue's per-element branches does not)."""
    return not maximize and wd == 0.0 and l1 == 0.0 and decay == 1.0


# Every update below has a *plain* loop, taken when ``is_plain``: the same rule on
# (float64(p[i]), float64(g[i])) -- exactly the values the prologue returns when it does nothing --
# with every state row read and written unconditionally, so LLVM vectorises it (results are
# bit-identical to the general loop). The general loop keeps the prologue and the optional rows.
@njit(**JIT)
def sgd_update(hp, t, p, g, state):
    lr, mu, damp = hp[H_LR], hp[H_0], hp[H_0 + 1]
    nesterov, ema = hp[H_0 + 2] != 0.0, hp[H_0 + 3] != 0.0
    mx, wd, l1, decay = common(hp)
    first = t == 1
    if is_plain(mx, wd, l1, decay):
        if mu == 0.0:
            for i in range(p.size):
                p[i] = np.float64(p[i]) - lr * np.float64(g[i])
        elif not (ema or nesterov or first):
            # torch's momentum after the first step, sgd_rule's branches taken outside the loop: the
            # same arithmetic, a third faster (270k float32 parameters: 93 against 153 us)
            buf = state[0]
            for i in range(p.size):
                m = mu * buf[i] + (1.0 - damp) * np.float64(g[i])
                buf[i] = m
                p[i] = np.float64(p[i]) - lr * m
        else:
            buf = state[0]
            for i in range(p.size):
                d, buf[i] = sgd_rule(np.float64(g[i]), buf[i], mu, damp, nesterov, ema, first)
                p[i] = np.float64(p[i]) - lr * d
        return
    if not mx and l1 == 0.0 and decay == 1.0 and mu != 0.0:
        # coupled L2 only (SGD(momentum=..., weight_decay=...)): the prologue's arithmetic inline,
        # so the loop vectorises (the general loop's branches keep it scalar: 5x slower)
        buf = state[0]
        if not (ema or nesterov or first):
            for i in range(p.size):
                pi = np.float64(p[i])
                m = mu * buf[i] + (1.0 - damp) * (np.float64(g[i]) + wd * pi)
                buf[i] = m
                p[i] = pi - lr * m
            return
        for i in range(p.size):
            pi = np.float64(p[i])
            d, buf[i] = sgd_rule(np.float64(g[i]) + wd * pi, buf[i], mu, damp, nesterov, ema, first)
            p[i] = pi - lr * d
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        m = state[0, i] if mu != 0.0 else 0.0
        d, m = sgd_rule(gi, m, mu, damp, nesterov, ema, first)
        if mu != 0.0:
            state[0, i] = m
        p[i] = pi - lr * d


@njit(**JIT)
def adagrad_update(hp, t, p, g, state):
    clr, eps = hp[H_0], hp[H_0 + 1]
    mx, wd, l1, decay = common(hp)
    f32 = p.itemsize == 4 and eps >= 2.0 ** -100  # plain loop, float32 buffer: adagrad_rule32 (see adam_update)
    if is_plain(mx, wd, l1, decay):
        s0 = state[0]
        if f32:
            for i in range(p.size):
                delta, s0[i] = adagrad_rule32(np.float64(g[i]), s0[i], clr, eps)
                p[i] = np.float64(p[i]) - delta
        else:
            for i in range(p.size):
                delta, s0[i] = adagrad_rule(np.float64(g[i]), s0[i], clr, eps)
                p[i] = np.float64(p[i]) - delta
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        delta, state[0, i] = adagrad_rule(gi, state[0, i], clr, eps)
        p[i] = pi - delta


@njit(**JIT)
def adadelta_update(hp, t, p, g, state):
    lr, rho, eps = hp[H_LR], hp[H_0], hp[H_0 + 1]
    mx, wd, l1, decay = common(hp)
    if is_plain(mx, wd, l1, decay):
        s0, s1 = state[0], state[1]
        for i in range(p.size):
            d, s0[i], s1[i] = adadelta_rule(np.float64(g[i]), s0[i], s1[i], rho, eps)
            p[i] = np.float64(p[i]) - lr * d
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        d, state[0, i], state[1, i] = adadelta_rule(gi, state[0, i], state[1, i], rho, eps)
        p[i] = pi - lr * d


@njit(**JIT)
def rmsprop_update(hp, t, p, g, state):
    """State rows: square_avg, grad_avg (centered), momentum_buffer (momentum > 0, last row)."""
    lr, alpha, eps, mu = hp[H_LR], hp[H_0], hp[H_0 + 1], hp[H_0 + 2]
    centered = hp[H_0 + 3] != 0.0
    last = state.shape[0] - 1
    mx, wd, l1, decay = common(hp)
    f32 = p.itemsize == 4 and eps >= 2.0 ** -100  # plain loop, float32 buffer: rmsprop_rule32 (see adam_update)
    if is_plain(mx, wd, l1, decay) and not centered and not mu > 0.0:
        s0 = state[0]
        if f32:
            for i in range(p.size):
                d, s0[i], _, _ = rmsprop_rule32(np.float64(g[i]), s0[i], 0.0, 0.0, alpha, eps, mu, False)
                p[i] = np.float64(p[i]) - lr * d
        else:
            for i in range(p.size):
                d, s0[i], _, _ = rmsprop_rule(np.float64(g[i]), s0[i], 0.0, 0.0, alpha, eps, mu, False)
                p[i] = np.float64(p[i]) - lr * d
        return
    if is_plain(mx, wd, l1, decay):
        # centered and/or momentum with plain options: the optional rows as 1-D views and one loop
        # per combination (the general loop's conditional stores keep it scalar: 3-4x slower);
        # float64 rule, the general loop's bits
        s0, sb = state[0], state[last]
        if centered and mu > 0.0:
            s1 = state[1]
            for i in range(p.size):
                d, s0[i], s1[i], sb[i] = rmsprop_rule(np.float64(g[i]), s0[i], s1[i], sb[i], alpha, eps, mu, True)
                p[i] = np.float64(p[i]) - lr * d
        elif centered:
            s1 = state[1]
            for i in range(p.size):
                d, s0[i], s1[i], _ = rmsprop_rule(np.float64(g[i]), s0[i], s1[i], 0.0, alpha, eps, mu, True)
                p[i] = np.float64(p[i]) - lr * d
        else:
            for i in range(p.size):
                d, s0[i], _, sb[i] = rmsprop_rule(np.float64(g[i]), s0[i], 0.0, sb[i], alpha, eps, mu, False)
                p[i] = np.float64(p[i]) - lr * d
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        ga = state[1, i] if centered else 0.0
        buf = state[last, i] if mu > 0.0 else 0.0
        d, state[0, i], ga, buf = rmsprop_rule(gi, state[0, i], ga, buf, alpha, eps, mu, centered)
        if centered:
            state[1, i] = ga
        if mu > 0.0:
            state[last, i] = buf
        p[i] = pi - lr * d


@njit(**JIT)
def adam_update(hp, t, p, g, state):
    """State rows: exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)."""
    b1, b2, eps = hp[H_0], hp[H_0 + 1], hp[H_0 + 2]
    amsgrad = hp[H_0 + 3] != 0.0
    step_size, bc2_sqrt = hp[H_0 + 4], hp[H_0 + 5]
    mx, wd, l1, decay = common(hp)
    # a float32 buffer: the step in float32 arithmetic (adam_rule32) -- in the plain, vectorised loops
    # only: in the scalar general loop float32 costs more instructions than it saves (AdamW's update
    # took 3.2 ms instead of 1.3 ms for 270k parameters)
    f32 = p.itemsize == 4 and eps >= 2.0 ** -100
    if is_plain(mx, wd, l1, decay):
        s0, s1 = state[0], state[1]
        if amsgrad:
            s2 = state[2]
            for i in range(p.size):
                if f32:
                    delta, s0[i], s1[i], s2[i] = adam_rule32(np.float64(g[i]), s0[i], s1[i], s2[i], b1, b2, eps,
                                                             True, step_size, bc2_sqrt)
                else:
                    delta, s0[i], s1[i], s2[i] = adam_rule(np.float64(g[i]), s0[i], s1[i], s2[i], b1, b2, eps,
                                                           True, step_size, bc2_sqrt)
                p[i] = np.float64(p[i]) - delta
        elif f32:
            for i in range(p.size):
                delta, s0[i], s1[i], _ = adam_rule32(np.float64(g[i]), s0[i], s1[i], 0.0, b1, b2, eps,
                                                     False, step_size, bc2_sqrt)
                p[i] = np.float64(p[i]) - delta
        else:
            for i in range(p.size):
                delta, s0[i], s1[i], _ = adam_rule(np.float64(g[i]), s0[i], s1[i], 0.0, b1, b2, eps,
                                                   False, step_size, bc2_sqrt)
                p[i] = np.float64(p[i]) - delta
        return
    if not mx and l1 == 0.0 and wd == 0.0 and not amsgrad:
        # decoupled decay only (AdamW): the prologue's p·(1 − lr·dwd) inline, so the loop vectorises
        # (the general loop's branches keep it scalar: 1.3 ms against 0.28 ms for 270k parameters)
        s0, s1 = state[0], state[1]
        if f32:
            for i in range(p.size):
                pi = np.float64(p[i]) * decay
                delta, s0[i], s1[i], _ = adam_rule32(np.float64(g[i]), s0[i], s1[i], 0.0, b1, b2, eps,
                                                     False, step_size, bc2_sqrt)
                p[i] = pi - delta
        else:
            for i in range(p.size):
                pi = np.float64(p[i]) * decay
                delta, s0[i], s1[i], _ = adam_rule(np.float64(g[i]), s0[i], s1[i], 0.0, b1, b2, eps,
                                                   False, step_size, bc2_sqrt)
                p[i] = pi - delta
        return
    if not mx and l1 == 0.0 and decay == 1.0 and not amsgrad:
        # coupled L2 only (Adam(weight_decay=...)): g + wd·p inline, vectorised as above
        s0, s1 = state[0], state[1]
        if f32:
            for i in range(p.size):
                pi = np.float64(p[i])
                delta, s0[i], s1[i], _ = adam_rule32(np.float64(g[i]) + wd * pi, s0[i], s1[i], 0.0, b1, b2, eps,
                                                     False, step_size, bc2_sqrt)
                p[i] = pi - delta
        else:
            for i in range(p.size):
                pi = np.float64(p[i])
                delta, s0[i], s1[i], _ = adam_rule(np.float64(g[i]) + wd * pi, s0[i], s1[i], 0.0, b1, b2, eps,
                                                   False, step_size, bc2_sqrt)
                p[i] = pi - delta
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        vmax = state[2, i] if amsgrad else 0.0
        delta, state[0, i], state[1, i], vmax = adam_rule(gi, state[0, i], state[1, i], vmax, b1, b2, eps,
                                                          amsgrad, step_size, bc2_sqrt)
        if amsgrad:
            state[2, i] = vmax
        p[i] = pi - delta


@njit(**JIT)
def nadam_update(hp, t, p, g, state):
    b1, b2, eps, bc2, cg, cm = hp[H_0], hp[H_0 + 1], hp[H_0 + 2], hp[H_0 + 3], hp[H_0 + 4], hp[H_0 + 5]
    mx, wd, l1, decay = common(hp)
    if is_plain(mx, wd, l1, decay):
        s0, s1 = state[0], state[1]
        for i in range(p.size):
            dg, dm, s0[i], s1[i] = nadam_rule(np.float64(g[i]), s0[i], s1[i], b1, b2, eps, bc2, cg, cm)
            pi = np.float64(p[i]) + dg
            p[i] = pi + dm
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        dg, dm, state[0, i], state[1, i] = nadam_rule(gi, state[0, i], state[1, i], b1, b2, eps, bc2, cg, cm)
        pi = pi + dg
        p[i] = pi + dm


@njit(**JIT)
def adamax_update(hp, t, p, g, state):
    b1, b2, eps, clr = hp[H_0], hp[H_0 + 1], hp[H_0 + 2], hp[H_0 + 3]
    mx, wd, l1, decay = common(hp)
    if is_plain(mx, wd, l1, decay):
        s0, s1 = state[0], state[1]
        for i in range(p.size):
            delta, s0[i], s1[i] = adamax_rule(np.float64(g[i]), s0[i], s1[i], b1, b2, eps, clr)
            p[i] = np.float64(p[i]) - delta
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        delta, state[0, i], state[1, i] = adamax_rule(gi, state[0, i], state[1, i], b1, b2, eps, clr)
        p[i] = pi - delta


@njit(**JIT)
def rprop_update(hp, t, p, g, state):
    em, ep, smin, smax = hp[H_0], hp[H_0 + 1], hp[H_0 + 2], hp[H_0 + 3]
    mx, wd, l1, decay = common(hp)
    if is_plain(mx, wd, l1, decay):
        s0, s1 = state[0], state[1]
        for i in range(p.size):
            delta, s0[i], s1[i] = rprop_rule(np.float64(g[i]), s0[i], s1[i], em, ep, smin, smax)
            p[i] = np.float64(p[i]) - delta
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        delta, state[0, i], state[1, i] = rprop_rule(gi, state[0, i], state[1, i], em, ep, smin, smax)
        p[i] = pi - delta


@njit(**JIT)
def smorms3_update(hp, t, p, g, state):
    lr, eps = hp[H_LR], hp[H_0]
    mx, wd, l1, decay = common(hp)
    if is_plain(mx, wd, l1, decay):
        s0, s1, s2 = state[0], state[1], state[2]
        for i in range(p.size):
            delta, s0[i], s1[i], s2[i] = smorms3_rule(np.float64(g[i]), s0[i], s1[i], s2[i], lr, eps)
            p[i] = np.float64(p[i]) - delta
        return
    for i in range(p.size):
        pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
        delta, state[0, i], state[1, i], state[2, i] = smorms3_rule(gi, state[0, i], state[1, i], state[2, i],
                                                                    lr, eps)
        p[i] = pi - delta


@njit(**INLINE)  # (a dispatch only: its callers link the update rules without a compiled level between)
def opt_update(code, hp, t, p, g, state):
    """One optimizer step over a whole flat buffer: p, g 1-D; state (n_slots, p.size)."""
    if code == SGD:
        sgd_update(hp, t, p, g, state)
    elif code == ADAGRAD:
        adagrad_update(hp, t, p, g, state)
    elif code == ADADELTA:
        adadelta_update(hp, t, p, g, state)
    elif code == RMSPROP:
        rmsprop_update(hp, t, p, g, state)
    elif code == ADAM:
        adam_update(hp, t, p, g, state)
    elif code == NADAM:
        nadam_update(hp, t, p, g, state)
    elif code == ADAMAX:
        adamax_update(hp, t, p, g, state)
    elif code == RPROP:
        rprop_update(hp, t, p, g, state)
    elif code == SMORMS3:
        smorms3_update(hp, t, p, g, state)


# Non-finite optimizer state from finite gradients: a gradient near sqrt(max) of the state's dtype
# overflows g² in the second-moment rows (Adagrad, Adadelta, RMSprop, Adam/AdamW, NAdam, SMORMS3),
# after which those parameters never move again; a huge lr·g overflows the parameters themselves.
# Below these bounds on the gradient norm (an upper bound of every |g_i|), on lr and on lr·norm no
# rule can overflow in one step, with a margin of 2^70 (float32) / 2^540 (float64) for momentum and
# accumulated state; above them the update runs with a copy kept and is checked, and undone if any
# parameter or state entry came out non-finite.
SAFE_F32 = 2.0 ** 28
SAFE_F64 = 2.0 ** 240


@njit(**JIT)
def update_is_safe(hp, p, gnorm):
    """True when one update of ``p`` with a gradient of norm ``gnorm`` cannot overflow (see above):
    the effective gradient g + wd·p + l1·sign(p) is bounded by gnorm + wd·max|p| + l1 (max|p| is
    read only when there is a coupled decay), and the decoupled decay factor 1 − lr·dwd by 1."""
    lim = SAFE_F32 if p.itemsize == 4 else SAFE_F64
    lr = abs(hp[H_LR])
    wd = abs(hp[H_WD])
    if not (lr * abs(hp[H_DWD]) <= 1.0):
        return False
    g = gnorm + abs(hp[H_L1])
    if wd != 0.0:
        g += wd * max_abs(p)
    return g <= lim and lr <= lim and lr * g <= lim


@njit(**JIT)
def opt_update_checked(code, hp, t, p, g, state, gnorm):
    """:func:`opt_update` that never leaves a non-finite parameter or state entry behind: when
    :func:`update_is_safe` cannot vouch for the step it runs on kept copies and is undone if the
    result is not finite. Returns True when the update was applied, False when it was undone."""
    if update_is_safe(hp, p, gnorm):
        opt_update(code, hp, t, p, g, state)
        return True
    p0 = p.copy()
    s0 = state.copy()
    opt_update(code, hp, t, p, g, state)
    if all_finite(p) and all_finite(state.reshape(-1)):
        return True
    assign1(p, p0)  # (loops, not slice assignments: see nnlab.kernels.common.assign1)
    assign2(state, s0)
    return False


# ---------------------------------------------------------------- reductions and clipping
# The reductions may reassociate their float64 sums ("reassoc" only; NaN and inf keep their IEEE
# meaning), so LLVM vectorises them: the result is the float64 sum of the same terms up to the
# order of addition. The sequential sum is latency-bound (one dependent add per element), about
# 6x slower on a 270k-element buffer.
RED_JIT = dict(JIT, fastmath=set(JIT["fastmath"]) | {"reassoc"})


@njit(**RED_JIT)
def sq_norm(x):
    """Σ x², accumulated in float64 (plain squares: may overflow or underflow; see :func:`norm2`)."""
    s = 0.0
    for i in range(x.size):
        v = np.float64(x[i])
        s += v * v
    return s


# The 2-norm without overflow or underflow (as BLAS nrm2): the plain float64 Σx² is exact to rounding
# when it lies in [SQ_LO, DBL_MAX] -- squares lost to underflow are then below 2^-1074 each, under
# n·2^-174 of the sum -- which float32 data always satisfies unless it is all zero. Otherwise a
# second pass takes m = max|x| and sums (x·2^-e)² with 2^e ≈ m, an exact power-of-two scaling.
DBL_MAX = np.finfo(np.float64).max
SQ_LO = 2.0 ** -900


@njit(**RED_JIT)
def max_abs(x):
    """max |x| in float64 (NaN entries are passed over; callers test for NaN first)."""
    m = 0.0
    for i in range(x.size):
        a = abs(np.float64(x[i]))
        m = a if a > m else m
    return m


@njit(**JIT)
def scaled_sq(x, s1, s2):
    """Σ ((x·s1)·s2)², float64 (s1, s2 powers of two: the scaling itself is exact). Not reassociated:
    s1·s2 alone may overflow (a subnormal max), and the rare path this serves needs no speed."""
    s = 0.0
    for i in range(x.size):
        v = (np.float64(x[i]) * s1) * s2
        s += v * v
    return s


@njit(**INLINE)
def norm_scales(big):
    """(s1, s2, e) with s1·s2 = 2^-e and big·2^-e in [0.5, 1): the scaling of :func:`scaled_sq`,
    split in two factors so that neither overflows for a subnormal ``big``."""
    e = math.frexp(big)[1]
    h = (-e) // 2
    return math.ldexp(1.0, h), math.ldexp(1.0, -e - h), e


@njit(**INLINE)
def sq_in_range(s):
    """True when a plain Σx² can be trusted (neither overflowed nor underflowed)."""
    return SQ_LO <= s <= DBL_MAX


@njit(**JIT)
def norm_from_sq(s, x):
    """‖x‖₂ given s = sq_norm(x): √s when s is in range, else recomputed with scaling. The norm is
    inf only for an infinite entry, NaN for a NaN entry, 0 only for an all-zero x."""
    if sq_in_range(s):
        return math.sqrt(s)
    if s != s:
        return s
    big = max_abs(x)
    if big == 0.0 or not big <= DBL_MAX:
        return big
    s1, s2, e = norm_scales(big)
    return math.ldexp(math.sqrt(scaled_sq(x, s1, s2)), e)


@njit(**JIT)
def norm2(x):
    """‖x‖₂ of a 1-D array, accumulated in float64, without overflow or underflow."""
    return norm_from_sq(sq_norm(x), x)


@njit(**RED_JIT)
def all_finite(x):
    """True when no element of the 1-D array ``x`` is NaN or ±inf (branch-free: Σ 0·x is 0 exactly
    when every x is finite, NaN otherwise)."""
    s = 0.0
    for i in range(x.size):
        s += np.float64(x[i]) * 0.0
    return s == 0.0


@njit(**INLINE)
def scale_inplace(x, c):
    """x *= c."""
    for i in range(x.size):
        x[i] = x[i] * c


@njit(**INLINE)
def clamp_inplace(x, c):
    """x = clip(x, −c, c); NaN stays NaN (every element is stored, so the loop vectorises)."""
    for i in range(x.size):
        v = x[i]
        x[i] = c if v > c else (-c if v < -c else v)


CLIP_EPS = 1e-6  # PyTorch's clip_grad_norm_: coef = max_norm / (norm + 1e-6)

CLIP_NONE = 0
CLIP_VALUE = 1
CLIP_NORM = 2
CLIP_GLOBAL_NORM = 3


@njit(**INLINE)
def clip_coef(norm, max_norm):
    """The factor a tensor of norm ``norm`` is multiplied by: min(1, max_norm/(norm + 1e-6));
    1 when the norm is not finite (the caller decides what to do with such a gradient)."""
    if not math.isfinite(norm):
        return 1.0
    c = max_norm / (norm + CLIP_EPS)
    return c if c < 1.0 else 1.0


@njit(**JIT)
def global_from_sq(total, g, offsets):
    """The global norm of the tensors g[offsets[k]:offsets[k+1]] given total = Σ_k sq_norm(g_k):
    √total when in range, else the scaled sum Σ_k scaled_sq(g_k) (as :func:`norm_from_sq`)."""
    if sq_in_range(total):
        return math.sqrt(total)
    if total != total:
        return total
    big = 0.0
    for k in range(offsets.size - 1):
        big = max(big, max_abs(g[offsets[k]:offsets[k + 1]]))
    if big == 0.0 or not big <= DBL_MAX:
        return big
    s1, s2, e = norm_scales(big)
    t = 0.0
    for k in range(offsets.size - 1):
        t += scaled_sq(g[offsets[k]:offsets[k + 1]], s1, s2)
    return math.ldexp(math.sqrt(t), e)


@njit(**JIT)
def clip_flat(kind, c, g, offsets):
    """Clip a flat gradient buffer whose tensors are g[offsets[k]:offsets[k+1]] in place.

    kind: CLIP_NONE, CLIP_VALUE (clamp to [−c, c]), CLIP_NORM (each tensor to norm ≤ c),
    CLIP_GLOBAL_NORM (the whole buffer to norm ≤ c). Returns the pre-clip global L2 norm, computed
    without overflow or underflow (:func:`global_from_sq`).
    """
    # the total is Σ_k ‖g_k‖² tensor by tensor, as nnlab.clip.global_norm sums it (same bits)
    total = 0.0
    fold = 0.0
    for k in range(offsets.size - 1):
        seg = g[offsets[k]:offsets[k + 1]]
        sq = sq_norm(seg)
        total += sq
        if kind == CLIP_NORM:
            n = norm_from_sq(sq, seg)
            fold = math.hypot(fold, n)  # the pre-clip total when Σ sq is out of range (the data is clipped now)
            s = clip_coef(n, c)
            if s < 1.0:
                scale_inplace(seg, s)
    if kind == CLIP_NORM:
        return math.sqrt(total) if sq_in_range(total) else (total if total != total else fold)
    norm = global_from_sq(total, g, offsets)
    if kind == CLIP_VALUE:
        clamp_inplace(g, c)
    elif kind == CLIP_GLOBAL_NORM:
        s = clip_coef(norm, c)
        if s < 1.0:
            scale_inplace(g, s)
    return norm


# ---------------------------------------------------------------- exponentially weighted average
@njit(**JIT)
def ewa_series(x, beta, v0, t0, correct, out):
    """out[k] = V_{t0+k+1} for the rows x[k] of a (T, n) array, V_t = βV_{t−1} + (1−β)x_t from
    V_{t0} = v0 (n,); divided by 1 − β^t when ``correct``. Returns the last raw V (n,)."""
    v = v0.copy()
    for k in range(x.shape[0]):
        t = t0 + k + 1
        bc = 1.0 - beta ** t if correct else 1.0
        for j in range(x.shape[1]):
            v[j] = beta * v[j] + (1.0 - beta) * x[k, j]
            out[k, j] = v[j] / bc
    return v
