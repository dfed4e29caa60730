"""The gradient-health monitor's per-layer statistics on the device: twins of
:func:`nnlab.kernels.cpu.grad_stats` and :func:`nnlab.kernels.cpu.update_stats`.

For every op with weights (``F_LEVEL`` >= 0) the statistics of its blocks of the parameter
store, of ``grads`` and of its Z, A and E tensors (:mod:`nnlab.kernels.layout`'s ``S_*``
columns) are reduced on the device without floating-point atomics -- per-block float64 partials
in shared memory, added on the host, counts carried as exact float64 integers -- and the host
fills the row of ``stats``. Everything accumulates in float64, as on the CPU (the monitor
compares magnitudes across many orders, so its sums are float64 for either dtype); norms whose
float64 sum of squares over- or underflows are recomputed with the CPU's power-of-two scaling.

Dead and saturated units of a dense op need the activation derivative θ'(z) -- the device ``act_d``
of :func:`nnlab.kernels.cuda.activations.device_set` (the CPU's scalar code, user-registered
activations included): one thread per unit walks the unit's rows (race-free, no shared flag),
with the same decisions as the CPU (``sat``: saturating flag, threshold on |a·θ'(z)|, z_sat).
"""

import math

import numpy as np
from numba import boolean, cuda, float32, float64, int64

from .. import optim_cpu as K
from ..layout import (
    F_A,
    F_ACT,
    F_AMASK,
    F_AP,
    F_B,
    F_BN,
    F_KIND,
    F_LEVEL,
    F_NOISE,
    F_NOUT,
    F_T,
    F_W,
    F_WN,
    F_Z,
    FLT_MIN,
    KIND_DENSE,
    S_A_MEAN,
    S_A_STD,
    S_B_GRAD_NORM,
    S_DEAD,
    S_ERR_NORM,
    S_GRAD_NORM,
    S_N_GRAD,
    S_NONFINITE,
    S_SATURATED,
    S_SUBNORMAL,
    S_UPDATE_NORM,
    S_W_NORM,
    S_Z_MEAN,
    S_Z_STD,
    S_ZERO_GRAD,
)
from .device import MAX_BLOCKS, blocks, threads_per_block
from .reduce import MAXT, block_max, block_sum, partials, to_host, tree_sum

DBL_MAX = K.DBL_MAX

_kernels = {}


def _factory(dtype, act_d):
    @cuda.jit
    def sq_count(x, part):
        """Per block: Σx² (float64), then the counts of non-finite, float32-subnormal and zero entries."""
        sh = cuda.shared.array((4, MAXT), float64)
        s = float64(0.0)
        bad = float64(0.0)
        sub = float64(0.0)
        zero = float64(0.0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = float64(x[i])
            s += v * v
            a = abs(v)
            if not (a <= DBL_MAX):
                bad += 1.0
            if a == 0.0:
                zero += 1.0
            if a < FLT_MIN and a > 0.0:
                sub += 1.0
        tid = cuda.threadIdx.x
        sh[0, tid] = s
        sh[1, tid] = bad
        sh[2, tid] = sub
        sh[3, tid] = zero
        tree_sum(sh, 4)
        if tid == 0:
            for r in range(4):
                part[r, cuda.blockIdx.x] = sh[r, 0]

    @cuda.jit
    def sq_diff(x, y, hasy, part):
        """Per block: Σx² and Σ(x − y)² (float64; y ignored unless ``hasy``)."""
        sh = cuda.shared.array((2, MAXT), float64)
        s = float64(0.0)
        d = float64(0.0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = float64(x[i])
            dv = v - (float64(y[i]) if hasy else 0.0)
            s += v * v
            d += dv * dv
        tid = cuda.threadIdx.x
        sh[0, tid] = s
        sh[1, tid] = d
        tree_sum(sh, 2)
        if tid == 0:
            part[0, cuda.blockIdx.x] = sh[0, 0]
            part[1, cuda.blockIdx.x] = sh[1, 0]

    @cuda.jit
    def diff_max(x, y, hasy, part):
        """Per block: max |x − y| (float64)."""
        sh = cuda.shared.array(MAXT, float64)
        m = float64(0.0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = abs(float64(x[i]) - (float64(y[i]) if hasy else 0.0))
            if v > m:
                m = v
        t = block_max(sh, m)
        if cuda.threadIdx.x == 0:
            part[0, cuda.blockIdx.x] = t

    @cuda.jit
    def diff_scaled_sq(x, y, hasy, s1, s2, part):
        """Per block: Σ (((x − y)·s1)·s2)² (float64; s1, s2 powers of two)."""
        sh = cuda.shared.array(MAXT, float64)
        s = float64(0.0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = ((float64(x[i]) - (float64(y[i]) if hasy else 0.0)) * s1) * s2
            s += v * v
        t = block_sum(sh, s)
        if cuda.threadIdx.x == 0:
            part[0, cuda.blockIdx.x] = t

    @cuda.jit
    def first_finite(x, y, part):
        """Per block: −(the smallest index k where x[k] and y[k] are both finite), −inf if none."""
        sh = cuda.shared.array(MAXT, float64)
        m = -math.inf
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            if abs(float64(x[i])) <= DBL_MAX and abs(float64(y[i])) <= DBL_MAX:
                m = max(m, -float64(i))
        t = block_max(sh, m)
        if cuda.threadIdx.x == 0:
            part[0, cuda.blockIdx.x] = t

    @cuda.jit
    def flat_moments(x, k, part):
        """Per block: Σ(v − k), Σ(v − k)² and the count over the finite entries v of x."""
        sh = cuda.shared.array((3, MAXT), float64)
        s = float64(0.0)
        sq = float64(0.0)
        cnt = float64(0.0)
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = float64(x[i])
            if abs(v) <= DBL_MAX:
                d = v - k
                s += d
                sq += d * d
                cnt += 1.0
        tid = cuda.threadIdx.x
        sh[0, tid] = s
        sh[1, tid] = sq
        sh[2, tid] = cnt
        tree_sum(sh, 3)
        if tid == 0:
            for r in range(3):
                part[r, cuda.blockIdx.x] = sh[r, 0]

    @cuda.jit
    def act_pass(Z, A, U, has_noise, nout, kz, ka, zs, thr, saturating, code, p0, p1, p2, a, out):
        """One thread per unit j of a dense op's (rows, nout) Z and A (flat): out[:, j] = Σ(z−kz),
        Σ(z−kz)², Σ(a−ka), Σ(a−ka)² over the rows where z and a are finite, that count, the
        saturated count and 1.0 if the unit is alive (the CPU's ``_activation_pass`` and the
        derivative loops of ``grad_stats``)."""
        rows = Z.size // nout
        by_z = zs > 0.0
        for j in range(cuda.grid(1), nout, cuda.gridsize(1)):
            zsum = 0.0
            zsq = 0.0
            asum = 0.0
            asq = 0.0
            cnt = 0.0
            n_sat = 0.0
            alive = False
            for r in range(rows):
                z = float64(Z[r * nout + j])
                av = float64(A[r * nout + j])
                ok = abs(z) <= DBL_MAX and abs(av) <= DBL_MAX
                if ok:
                    dz = z - kz
                    da = av - ka
                    zsum += dz
                    zsq += dz * dz
                    asum += da
                    asq += da * da
                    cnt += 1.0
                far = abs(z) > zs
                if ok and far and by_z:
                    n_sat += 1.0
                if (not ok) or (by_z and not far):
                    alive = True
            if saturating and zs <= 0.0:  # the derivative itself decides saturation: every entry
                for r in range(rows):
                    zr = Z[r * nout + j]
                    if not (abs(float64(zr)) <= DBL_MAX and abs(float64(A[r * nout + j])) <= DBL_MAX):
                        continue
                    u = U[r * nout + j] if has_noise else 0.0
                    d = abs(a * act_d(code, zr, p0, p1, p2, u))
                    if d < thr:
                        n_sat += 1.0
                    if d != 0.0:
                        alive = True
            elif not alive:  # alive at its first row with a non-zero derivative
                for r in range(rows):
                    zr = Z[r * nout + j]
                    u = U[r * nout + j] if has_noise else 0.0
                    if a * act_d(code, zr, p0, p1, p2, u) != 0.0:
                        alive = True
                        break
            out[0, j] = zsum
            out[1, j] = zsq
            out[2, j] = asum
            out[3, j] = asq
            out[4, j] = cnt
            out[5, j] = n_sat
            out[6, j] = 1.0 if alive else 0.0

    return {"sq_count": sq_count, "sq_diff": sq_diff, "diff_max": diff_max, "diff_scaled_sq": diff_scaled_sq,
            "first_finite": first_finite, "flat_moments": flat_moments, "act_pass": act_pass}


def kernels(dtype):
    """{name: kernel} of the statistics kernels for float32 or float64 buffers (built again when an
    activation is registered: the activation pass calls the registry's device ``act_d``)."""
    from .activations import device_set

    ds = device_set()
    key = (np.dtype(dtype), ds.version)
    k = _kernels.get(key)
    if k is None:
        k = _kernels[key] = _factory(key[0], ds.act_d)
    return k


def signatures(dtype):
    """{name: argument types} of :func:`kernels` (for ``cuda.compile_ptx``)."""
    t = float32 if np.dtype(dtype) == np.float32 else float64
    x, part, f = t[::1], float64[:, ::1], float64
    return {"sq_count": (x, part), "sq_diff": (x, x, boolean, part), "diff_max": (x, x, boolean, part),
            "diff_scaled_sq": (x, x, boolean, f, f, part), "first_finite": (x, x, part),
            "flat_moments": (x, f, part),
            "act_pass": (x, x, x, boolean, int64, f, f, f, f, boolean, int64, f, f, f, f, part)}


def _reduce(name, rows, x, *args, stream=0, how="sum"):
    """Launch reduction ``name`` over x (grid-stride, per-block partials) and combine the partials."""
    tpb = threads_per_block()
    nb = max(1, min(MAX_BLOCKS, (x.size + tpb - 1) // tpb))
    part = partials(rows, nb, stream)
    kernels(x.dtype)[name][nb, tpb, stream](x, *args, part)
    p = to_host(part, stream)
    return p.max(axis=1) if how == "max" else p.sum(axis=1)


def _norm(s, x, y=None, stream=0):
    """√s for s = Σ(x − y)² (y None: Σx²), recomputed with scaling when the float64 sum overflowed
    or underflowed (``cpu._norm``)."""
    if K.SQ_LO <= s <= DBL_MAX:
        return math.sqrt(s)
    if s != s:
        return s
    if x.size == 0:
        return 0.0
    yy = x if y is None else y
    big = float(_reduce("diff_max", 1, x, yy, y is not None, stream=stream, how="max")[0])
    if not big <= DBL_MAX:
        return abs(big)
    if big == 0.0:
        return 0.0
    s1, s2, e = K.norm_scales(big)
    t = float(_reduce("diff_scaled_sq", 1, x, yy, y is not None, s1, s2, stream=stream)[0])
    return math.ldexp(math.sqrt(t), e)


def _sq_count(x, stream):
    if x.size == 0:
        return 0.0, 0, 0, 0
    s, bad, sub, zero = _reduce("sq_count", 4, x, stream=stream)
    return float(s), int(bad), int(sub), int(zero)


def _first_finite(x, y, stream):
    """The flat index of the first entry where x and y are both finite, or -1."""
    if x.size == 0:
        return -1
    m = float(_reduce("first_finite", 1, x, y, stream=stream, how="max")[0])
    return -1 if m == -math.inf else int(-m)


def _moments(s, sq, cnt, shift):
    if cnt == 0:
        return np.nan, np.nan
    m = s / cnt
    return shift + m, math.sqrt(max(sq / cnt - m * m, 0.0))


def _flat_moments(x, stream):
    """(Σ(v−k), Σ(v−k)², count, shift k, non-finite count) over the finite entries of x."""
    i = _first_finite(x, x, stream)
    k = float(to_host(x[i:i + 1], stream)[0]) if i >= 0 else 0.0
    if x.size == 0:
        return 0.0, 0.0, 0, k, 0
    s, sq, cnt = _reduce("flat_moments", 3, x, k, stream=stream)
    return float(s), float(sq), int(cnt), k, x.size - int(cnt)


def _act_slots(prog, i):
    """(p0, p1, p2, a) of op i (``common.act_slots``): learnable slots read from the device store."""
    ops, hp = prog.ops, prog.hp
    mask = int(ops[i, F_AMASK])
    vals = [float(hp[i, k]) for k in range(4)]
    if mask:
        ap = int(ops[i, F_AP])
        nlearn = bin(mask & 15).count("1")
        learn = to_host(prog.params[ap:ap + nlearn], prog.stream)
        j = 0
        for k in range(4):
            if mask & (1 << k):
                vals[k] = float(learn[j])
                j += 1
    return vals


def grad_stats(prog, n, sat, stats):
    """Fill the gradient columns of the host array ``stats`` (row ``F_LEVEL`` of every op with
    weights) from the last backward pass of ``prog`` (a :class:`DeviceProgram`) on an ``n``-row
    batch; ``sat`` the host (n_ops, 3) saturation table of :func:`nnlab.kernels.cpu.grad_stats`."""
    ops, st = prog.ops, prog.stream
    params, grads = prog.params, prog.grads
    for i in range(ops.shape[0]):
        lv = int(ops[i, F_LEVEL])
        if lv < 0:
            continue
        w, wn = int(ops[i, F_W]), int(ops[i, F_WN])
        gw = grads[w:w + wn]
        gs, gbad, gsub, gzero = _sq_count(gw, st)
        Ef = prog.flat(prog.dws, int(ops[i, F_Z]), n)
        es, ebad, esub, _ = _sq_count(Ef, st)
        wbad = _sq_count(params[w:w + wn], st)[1]
        b, bn = int(ops[i, F_B]), int(ops[i, F_BN])
        bs = _sq_count(grads[b:b + bn], st)[0] if b >= 0 else 0.0
        Zf = prog.flat(prog.ws, int(ops[i, F_Z]), n)
        Af = prog.flat(prog.ws, int(ops[i, F_A]), n)
        if int(ops[i, F_KIND]) == KIND_DENSE:
            nout = int(ops[i, F_NOUT])
            rows = n * int(ops[i, F_T])
            saturating = bool(sat[i, 0] > 0)
            thr = float(sat[i, 1])
            zs = float(sat[i, 2]) if saturating else 0.0
            k = _first_finite(Zf, Af, st)
            if k >= 0:
                kz = float(to_host(Zf[k:k + 1], st)[0])
                ka = float(to_host(Af[k:k + 1], st)[0])
            else:
                kz = ka = 0.0
            has_noise = int(ops[i, F_NOISE]) >= 0
            U = prog.flat(prog.ws, int(ops[i, F_NOISE]), n) if has_noise else Zf
            p0, p1, p2, a = _act_slots(prog, i)
            out = cuda.device_array((7, nout), np.float64, stream=st)
            tpb = threads_per_block()
            kernels(Zf.dtype)["act_pass"][blocks(nout, tpb), tpb, st](
                Zf, Af, U, has_noise, np.int64(nout), kz, ka, zs, thr, saturating, np.int64(ops[i, F_ACT]),
                p0, p1, p2, a, out)
            o = to_host(out, st)
            zsum, zsq, asum, asq = (float(v) for v in o[:4].sum(axis=1))
            cnt = int(o[4].sum())
            n_sat = int(o[5].sum())
            dead = int(nout - o[6].sum())
            zbad = rows * nout - cnt
            stats[lv, S_DEAD] = dead / nout
            stats[lv, S_Z_MEAN], stats[lv, S_Z_STD] = _moments(zsum, zsq, cnt, kz)
            stats[lv, S_A_MEAN], stats[lv, S_A_STD] = _moments(asum, asq, cnt, ka)
            stats[lv, S_SATURATED] = n_sat / (rows * nout) if saturating else 0.0
        else:
            zsum, zsq, cnt, kz, zbad = _flat_moments(Zf, st)
            asum, asq, acnt, ka, abad = _flat_moments(Af, st)
            zbad += abad
            stats[lv, S_DEAD] = 0.0
            stats[lv, S_SATURATED] = 0.0
            stats[lv, S_Z_MEAN], stats[lv, S_Z_STD] = _moments(zsum, zsq, cnt, kz)
            stats[lv, S_A_MEAN], stats[lv, S_A_STD] = _moments(asum, asq, acnt, ka)
        stats[lv, S_GRAD_NORM] = _norm(gs, gw, None, st)
        stats[lv, S_ERR_NORM] = _norm(es, Ef, None, st)
        stats[lv, S_B_GRAD_NORM] = _norm(bs, grads[b:b + bn], None, st) if b >= 0 else 0.0
        stats[lv, S_NONFINITE] = gbad + ebad + wbad + zbad
        stats[lv, S_SUBNORMAL] = gsub + esub
        stats[lv, S_ZERO_GRAD] = gzero
        stats[lv, S_N_GRAD] = wn + Ef.size


def update_stats(prog, prev, stats):
    """Fill ‖W_l‖ and ‖W_l − W_l(prev)‖ of every op with weights (``prev`` a device copy of the
    parameters before the update)."""
    ops, params, st = prog.ops, prog.params, prog.stream
    for i in range(ops.shape[0]):
        lv = int(ops[i, F_LEVEL])
        if lv < 0:
            continue
        w, m = int(ops[i, F_W]), int(ops[i, F_WN])
        x, y = params[w:w + m], prev[w:w + m]
        s, d = (float(v) for v in _reduce("sq_diff", 2, x, y, True, stream=st)) if m else (0.0, 0.0)
        stats[lv, S_W_NORM] = _norm(s, x, None, st)
        stats[lv, S_UPDATE_NORM] = _norm(d, x, y, st)
