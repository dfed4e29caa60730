"""Optimizer updates on the device: the twins of :mod:`nnlab.kernels.optim_cpu`'s ``opt_update`` and
``opt_update_checked``.

One fused elementwise kernel per optimizer code (grid-stride over the flat buffer), one compiled
copy per dtype: the shared prologue (maximize, coupled L2, L1, decoupled decay; the CPU's
:func:`~nnlab.kernels.optim_cpu.prologue`) then the optimizer's rule, with the same formulas in
the same order of operations as the CPU rules. ``state`` is the CPU's (n_slots, p.size) array,
row for row. The host turns the float64 hyperparameter vector ``opt_hp`` into kernel scalars of
the buffer's dtype, complements such as 1 − β₁ computed in float64 first (as the CPU kernels do),
so a float32 buffer is updated in float32 arithmetic throughout (as torch does) and a float64
buffer gets the CPU's arithmetic.

The checked update never writes a non-finite value: when the CPU's bound
(:func:`~nnlab.kernels.optim_cpu.update_is_safe`, computed on the host from the gradient norm,
with a race-free device max |p| when there is a coupled decay) cannot vouch for the step, the
kernel first runs in a dry mode that writes nothing and raises an integer flag
(``cuda.atomic.max`` on an int32) wherever a new parameter or state entry would not be finite;
the update then runs only when no flag was raised.
"""

import math

import numpy as np
from numba import boolean, cuda, float32, float64, int32, int64

from .. import optim_cpu as K
from ._blocks import by_dtype
from .device import blocks, threads_per_block
from .reduce import max_abs

_dummy = {}


def _factory(dtype):
    """The update kernels of one dtype: {optimizer code: kernel}."""
    nbt = float32 if dtype == np.float32 else float64
    big = nbt(np.finfo(dtype).max)

    @cuda.jit(device=True)
    def sign(x):
        if x > nbt(0.0):
            return nbt(1.0)
        if x < nbt(0.0):
            return nbt(-1.0)
        return x * nbt(0.0)

    @cuda.jit(device=True)
    def prologue(p, g, mx, wd, l1, decay):
        """(p, g) after the shared options: g ← ±g + wd·p + l1·sign(p), p ← p·(1 − lr·dwd)."""
        if mx:
            g = -g
        if wd != nbt(0.0):
            g = g + wd * p
        if l1 != nbt(0.0):
            g = g + l1 * sign(p)
        if decay != nbt(1.0):
            p = p * decay
        return p, g

    @cuda.jit(device=True)
    def bad(x):
        return not (abs(x) <= big)

    # Every kernel: (p, g, state, flag, write, mx, lr, wd, l1, decay, a0..a7, f0, f1, f2). With
    # ``write`` False nothing is stored and flag[0] is raised where a new value is not finite.
    @cuda.jit
    def sgd(p, g, state, flag, write, mx, lr, wd, l1, decay, mu, omd, omm, a3, a4, a5, a6, a7, nesterov, ema, first):
        """torch form: m = g (first step), then μm + (1−dampening)g; EMA form: m = μm + (1−μ)g;
        d = g + μm / (1−μ)g + μm (Nesterov) or m; p ← p − lr·d."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            m = nbt(0.0)
            d = gi
            if mu != nbt(0.0):
                m = state[0, i]
                if ema:
                    m = mu * m + omm * gi
                    d = omm * gi + mu * m if nesterov else m
                else:
                    m = gi if first else mu * m + omd * gi
                    d = gi + mu * m if nesterov else m
            pi = pi - lr * d
            if write:
                p[i] = pi
                if mu != nbt(0.0):
                    state[0, i] = m
            elif bad(pi) or bad(m):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def adagrad(p, g, state, flag, write, mx, lr, wd, l1, decay, clr, eps, a2, a3, a4, a5, a6, a7, f0, f1, f2):
        """s = s + g², p ← p − clr·g/(√s + ε)."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            s = state[0, i] + gi * gi
            pi = pi - clr * (gi / (math.sqrt(s) + eps))
            if write:
                p[i] = pi
                state[0, i] = s
            elif bad(pi) or bad(s):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def adadelta(p, g, state, flag, write, mx, lr, wd, l1, decay, rho, omr, eps, a3, a4, a5, a6, a7, f0, f1, f2):
        """sq = ρsq + (1−ρ)g², d = √(acc+ε)/√(sq+ε)·g, acc = ρacc + (1−ρ)d², p ← p − lr·d."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            sq = rho * state[0, i] + omr * (gi * gi)
            acc = state[1, i]
            d = math.sqrt(acc + eps) / math.sqrt(sq + eps) * gi
            acc = rho * acc + omr * (d * d)
            pi = pi - lr * d
            if write:
                p[i] = pi
                state[0, i] = sq
                state[1, i] = acc
            elif bad(pi) or bad(sq) or bad(acc):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def rmsprop(p, g, state, flag, write, mx, lr, wd, l1, decay, alpha, oma, eps, mu, a4, a5, a6, a7,
                centered, f1, f2):
        """Rows: square_avg, grad_avg (centered), momentum_buffer (μ > 0, the last row)."""
        last = state.shape[0] - 1
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            sq = alpha * state[0, i] + oma * (gi * gi)
            ga = nbt(0.0)
            if centered:
                ga = alpha * state[1, i] + oma * gi
                a = math.sqrt(max(sq - ga * ga, nbt(0.0))) + eps
            else:
                a = math.sqrt(sq) + eps
            buf = nbt(0.0)
            if mu > nbt(0.0):
                buf = mu * state[last, i] + gi / a
                d = buf
            else:
                d = gi / a
            pi = pi - lr * d
            if write:
                p[i] = pi
                state[0, i] = sq
                if centered:
                    state[1, i] = ga
                if mu > nbt(0.0):
                    state[last, i] = buf
            elif bad(pi) or bad(sq) or bad(ga) or bad(buf):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def adam(p, g, state, flag, write, mx, lr, wd, l1, decay, b1, omb1, b2, omb2, eps, step_size, bc2_sqrt, a7,
             amsgrad, f1, f2):
        """m = β₁m + (1−β₁)g, v = β₂v + (1−β₂)g², v̂ = max(v̂, v) (AMSGrad) or v,
        p ← p − step_size·m/(√v̂/√bc₂ + ε)."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            m = b1 * state[0, i] + omb1 * gi
            v = b2 * state[1, i] + omb2 * (gi * gi)
            vmax = nbt(0.0)
            if amsgrad:
                vmax = max(state[2, i], v)
                denom = math.sqrt(vmax) / bc2_sqrt + eps
            else:
                denom = math.sqrt(v) / bc2_sqrt + eps
            pi = pi - step_size * (m / denom)
            if write:
                p[i] = pi
                state[0, i] = m
                state[1, i] = v
                if amsgrad:
                    state[2, i] = vmax
            elif bad(pi) or bad(m) or bad(v) or bad(vmax):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def nadam(p, g, state, flag, write, mx, lr, wd, l1, decay, b1, omb1, b2, omb2, eps, bc2, cg, cm, f0, f1, f2):
        """m, v as Adam; d = √(v/bc₂) + ε; p ← (p + cg·g/d) + cm·m/d."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            m = b1 * state[0, i] + omb1 * gi
            v = b2 * state[1, i] + omb2 * (gi * gi)
            d = math.sqrt(v / bc2) + eps
            pi = pi + cg * (gi / d)
            pi = pi + cm * (m / d)
            if write:
                p[i] = pi
                state[0, i] = m
                state[1, i] = v
            elif bad(pi) or bad(m) or bad(v):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def adamax(p, g, state, flag, write, mx, lr, wd, l1, decay, b1, omb1, b2, eps, clr, a5, a6, a7, f0, f1, f2):
        """m = β₁m + (1−β₁)g, u = max(β₂u, |g| + ε), p ← p − clr·m/u."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            m = b1 * state[0, i] + omb1 * gi
            u = max(b2 * state[1, i], abs(gi) + eps)
            pi = pi - clr * (m / u)
            if write:
                p[i] = pi
                state[0, i] = m
                state[1, i] = u
            elif bad(pi) or bad(m) or bad(u):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def rprop(p, g, state, flag, write, mx, lr, wd, l1, decay, em, ep, smin, smax, a4, a5, a6, a7, f0, f1, f2):
        """Rprop⁻: the step grows by η₊ while g·prev > 0, shrinks by η₋ (and g := 0) when < 0,
        clamped to [smin, smax]; p ← p − sign(g)·step; prev ← g."""
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            step = state[1, i]
            s = gi * state[0, i]
            if s > nbt(0.0):
                step = step * ep
            elif s < nbt(0.0):
                step = step * em
                gi = nbt(0.0)
            step = min(max(step, smin), smax)
            pi = pi - sign(gi) * step
            if write:
                p[i] = pi
                state[0, i] = gi
                state[1, i] = step
            elif bad(pi) or bad(gi) or bad(step):
                cuda.atomic.max(flag, 0, 1)

    @cuda.jit
    def smorms3(p, g, state, flag, write, mx, lr, wd, l1, decay, eps, a1, a2, a3, a4, a5, a6, a7, f0, f1, f2):
        """r = 1/(mem+1), gm = (1−r)gm + rg, g2 = (1−r)g2 + rg², x = gm²/(g2+ε),
        p ← p − g·min(lr, x)/(√g2 + ε), mem = 1 + mem(1 − x)."""
        one = nbt(1.0)
        for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
            pi, gi = prologue(p[i], g[i], mx, wd, l1, decay)
            mem = state[0, i]
            r = one / (mem + one)
            gm = (one - r) * state[1, i] + r * gi
            g2 = (one - r) * state[2, i] + r * (gi * gi)
            x = gm * gm / (g2 + eps)
            d = gi * min(lr, x) / (math.sqrt(g2) + eps)
            mem = one + mem * (one - x)
            pi = pi - d
            if write:
                p[i] = pi
                state[0, i] = mem
                state[1, i] = gm
                state[2, i] = g2
            elif bad(pi) or bad(mem) or bad(gm) or bad(g2):
                cuda.atomic.max(flag, 0, 1)

    return {K.SGD: sgd, K.ADAGRAD: adagrad, K.ADADELTA: adadelta, K.RMSPROP: rmsprop, K.ADAM: adam,
            K.NADAM: nadam, K.ADAMAX: adamax, K.RPROP: rprop, K.SMORMS3: smorms3}


kernels = by_dtype(_factory, "{optimizer code: update kernel} for float32 or float64 buffers "
                             "(compiled on first launch).")


def signature(dtype):
    """The argument types every update kernel is launched with (for ``cuda.compile_ptx``)."""
    t = float32 if np.dtype(dtype) == np.float32 else float64
    return (t[::1], t[::1], t[:, ::1], int32[::1], boolean, boolean) + (t,) * 12 + (int64,) * 3


def scalars(code, hp, t, dtype):
    """The kernel's scalars (mx, lr, wd, l1, decay, a0..a7, f0, f1, f2) from the CPU's float64 ``hp``
    at step ``t``: values of ``dtype``, complements (1 − β) and the decay 1 − lr·dwd formed in
    float64 as the CPU kernels form them."""
    hp = np.asarray(hp, np.float64)
    c = float(code)
    a = [0.0] * 8
    f = [0, 0, 0]
    h = hp[K.H_0:]
    if c == K.SGD:
        a[0], a[1], a[2] = h[0], 1.0 - h[1], 1.0 - h[0]
        f = [int(h[2] != 0.0), int(h[3] != 0.0), int(t == 1)]
    elif c == K.ADAGRAD:
        a[0], a[1] = h[0], h[1]
    elif c == K.ADADELTA:
        a[0], a[1], a[2] = h[0], 1.0 - h[0], h[1]
    elif c == K.RMSPROP:
        a[0], a[1], a[2], a[3] = h[0], 1.0 - h[0], h[1], h[2]
        f[0] = int(h[3] != 0.0)
    elif c == K.ADAM:
        a[:7] = [h[0], 1.0 - h[0], h[1], 1.0 - h[1], h[2], h[4], h[5]]
        f[0] = int(h[3] != 0.0)
    elif c == K.NADAM:
        a[:] = [h[0], 1.0 - h[0], h[1], 1.0 - h[1], h[2], h[3], h[4], h[5]]
    elif c == K.ADAMAX:
        a[:5] = [h[0], 1.0 - h[0], h[1], h[2], h[3]]
    elif c == K.RPROP:
        a[:4] = [h[0], h[1], h[2], h[3]]
    elif c == K.SMORMS3:
        a[0] = h[0]
    else:
        raise ValueError(f"unknown optimizer code {code}")
    cast = np.float32 if np.dtype(dtype) == np.float32 else np.float64
    decay = 1.0 - hp[K.H_LR] * hp[K.H_DWD]
    head = [cast(hp[K.H_LR]), cast(hp[K.H_WD]), cast(hp[K.H_L1]), cast(decay)]
    return (bool(hp[K.H_MAX] != 0.0),) + tuple(head) + tuple(cast(x) for x in a) + tuple(np.int64(x) for x in f)


def _launch(code, hp, t, P, grads, state, flag, write, stream):
    n = P.size
    if n == 0:
        return
    dtype = np.dtype(P.dtype)
    if state.shape[0] == 0:  # SGD without momentum: no state rows (a placeholder array for the kernel)
        st = _dummy.get(dtype)
        if st is None:
            st = _dummy[dtype] = cuda.device_array((1, 1), dtype)
        state = st
    tpb = threads_per_block()
    k = kernels(dtype)[int(code)]
    k[blocks(n, tpb), tpb, stream](P, grads, state, flag, write, *scalars(code, hp, t, dtype))


_flags = {}


def _flag(stream):
    f = _flags.get(id(stream))
    if f is None:
        f = _flags[id(stream)] = cuda.device_array(1, np.int32)
    return f


def opt_update(code, opt_hp, t, P, grads, state, stream=0):
    """One optimizer step over the flat device buffer ``P`` (in place) from ``grads``; ``state`` the
    (n_slots, P.size) device array; ``opt_hp`` the CPU's float64 hyperparameter vector for step
    ``t`` (:meth:`nnlab.optim.Optimizer.hyperparams_for_step`)."""
    _launch(code, opt_hp, t, P, grads, state, _flag(stream), True, stream)


def update_is_safe(hp, P, gnorm, stream=0):
    """:func:`nnlab.kernels.optim_cpu.update_is_safe` for a device buffer (max |P| reduced on the
    device, and only when there is a coupled decay)."""
    hp = np.asarray(hp, np.float64)
    lim = K.SAFE_F32 if np.dtype(P.dtype) == np.float32 else K.SAFE_F64
    lr = abs(hp[K.H_LR])
    wd = abs(hp[K.H_WD])
    if not (lr * abs(hp[K.H_DWD]) <= 1.0):
        return False
    g = float(gnorm) + abs(hp[K.H_L1])
    if wd != 0.0:
        g += wd * max_abs(P, stream)
    return g <= lim and lr <= lim and lr * g <= lim


def opt_update_checked(code, opt_hp, t, P, grads, state, norm, stream=0):
    """:func:`opt_update` that never leaves a non-finite parameter or state entry: when
    :func:`update_is_safe` cannot vouch for the step (``norm`` bounds every |g|), a dry run that
    writes nothing looks for a non-finite result first. Returns True when the update was applied,
    False when it was not (``P`` and ``state`` unchanged)."""
    if update_is_safe(opt_hp, P, norm, stream):
        opt_update(code, opt_hp, t, P, grads, state, stream)
        return True
    flag = _flag(stream)
    host = np.zeros(1, np.int32)
    flag.copy_to_device(host, stream=stream)
    _launch(code, opt_hp, t, P, grads, state, flag, False, stream)
    flag.copy_to_host(host, stream=stream)
    if not isinstance(stream, int):
        stream.synchronize()
    if host[0] != 0:
        return False
    _launch(code, opt_hp, t, P, grads, state, flag, True, stream)
    return True
