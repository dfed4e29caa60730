"""Branch-free scalar math that LLVM can vectorise: exp, and σ / tanh together with their derivatives.

Numba lowers ``math.exp`` and ``math.tanh`` to calls into the C library, one element at a time,
because this llvmlite has no vector math library (SVML). The functions here are written with
arithmetic, comparisons (selects) and integer bit tricks only, so a loop that calls them is
vectorised (8 float64 lanes with AVX-512). They are used by the specialised elementwise loops of
the dense layer (:mod:`nnlab.kernels.cpu`); the registry's reference math in
:mod:`nnlab.activations._math` keeps the C library.

Accuracy (asserted in ``tests/test_fastmath_kernels.py`` over dense grids and edge cases):

* :func:`exp` -- fdlibm's algorithm (Cody-Waite reduction by ln 2 with a two-part constant, a
  degree-5 Remez rational for e^r on |r| <= ln2/2): within 1 ulp of ``math.exp`` for every
  float64 input, subnormal results included; +inf above 709.78, +0 below -745.13; exp(-inf) = 0,
  exp(+inf) = inf, NaN in gives NaN out.
* :func:`tanh_d` -- Cephes' rational for |x| < 0.625, 1 − 2e/(1+e) with e = exp(−2|x|) above:
  within 2 ulp of ``math.tanh``; odd (tanh(−0) = −0), ±1 at ±inf. The derivative is
  4e/(1+e)², the formula of ``_math.act_d`` for tanh.
* :func:`sigmoid_d` -- the formulas of ``_math.sigm`` and ``_math.sigm_prime`` on one shared
  e = exp(−|x|), so σ and σ' cost one exponential.

All arithmetic is float64 (a float32 network converts on load and rounds once on store), which
keeps a float32 result correctly rounded in all but rare ties.
"""


import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._config import JIT

# inline="always": Numba inlines these into the caller's IR, so the loop that calls them is one
# basic block LLVM can vectorise (left to LLVM's own inliner, tanh_d exceeds its size threshold
# and the loop keeps a scalar call).
VJIT = dict(JIT, inline="always")


@intrinsic
def _f64_from_bits(typingctx, bits):
    """The float64 whose IEEE bit pattern is the int64 ``bits`` (an LLVM bitcast)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(v, ir.DoubleType())

    return types.float64(bits), codegen


@njit(**VJIT)
def pow2(k):
    """2.0**k for an integer -1022 <= k <= 1023 (built from its exponent bits)."""
    return _f64_from_bits((k + 1023) << 52)


_SHIFT = 6755399441055744.0          # 1.5·2^52: (v + _SHIFT) − _SHIFT rounds v to the nearest integer
_INVLN2 = 1.44269504088896338700e+00
_LN2HI = 6.93147180369123816490e-01  # 32 trailing zero bits: k·_LN2HI is exact for |k| < 2^20
_LN2LO = 1.90821492927058770002e-10
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08
_XMAX = 710.0                        # above the overflow threshold 709.78...
_XMIN = -746.0                       # below the underflow threshold -745.13...


@njit(**VJIT)
def exp(x):
    """e^x in float64, vectorisable (fdlibm's e_exp.c without its branches)."""
    x = float(x)
    xc = x if x < _XMAX else _XMAX          # NaN goes to _XMAX here and is restored at the end
    xc = xc if xc > _XMIN else _XMIN
    kf = (xc * _INVLN2 + _SHIFT) - _SHIFT   # round(x / ln 2)
    hi = xc - kf * _LN2HI
    lo = kf * _LN2LO
    r = hi - lo
    t = r * r
    c = r - t * (_P1 + t * (_P2 + t * (_P3 + t * (_P4 + t * _P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    k = int(kf)
    k1 = k >> 1                             # y·2^k as y·2^k1·2^k2: both factors are normal, and the
    y = y * pow2(k1) * pow2(k - k1)         # only rounding is the last product (subnormal / inf)
    return y if x == x else x


@njit(**VJIT)
def sigmoid_d(x):
    """(σ(x), σ'(x)) from one e = exp(−|x|) and one division q = 1/(1+e): σ = q (x >= 0) or
    e·q (= e/(1+e)), σ' = e·q² (= e/(1+e)²), the formulas of _math.sigm and sigm_prime."""
    e = exp(-abs(x))
    q = 1.0 / (1.0 + e)
    return (q if x >= 0 else e * q), e * q * q


_TP0 = -9.64399179425052238628e-1
_TP1 = -9.92877231001918586564e1
_TP2 = -1.61468768441708447952e3
_TQ0 = 1.12811678491632931402e2
_TQ1 = 2.23548839060100448583e3
_TQ2 = 4.84406305325125486048e3


@njit(**VJIT)
def tanh_d(x):
    """(tanh x, 1 − tanh² x) with e = exp(−2|x|), q = 1/(1+e): tanh |x| = 1 − 2e·q above 0.625,
    Cephes' rational below; the derivative 4e·q² (= 4e/(1+e)², the formula of _math.act_d)."""
    x = float(x)
    e = exp(-2.0 * abs(x))
    q = 1.0 / (1.0 + e)
    big = 1.0 - 2.0 * e * q
    big = big if x >= 0 else -big
    s = x * x
    small = x + x * s * (((_TP0 * s + _TP1) * s + _TP2) / (((s + _TQ0) * s + _TQ1) * s + _TQ2))
    t = big if abs(x) >= 0.625 else small
    t = t if x != 0.0 else x                # tanh(±0) = ±0 (x + x·s·R gives +0 for x = −0)
    return t, 4.0 * e * q * q


# ---------------------------------------------------------------- float32 variants (float32 networks)
@intrinsic
def _f32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the int32 ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


_f32 = np.float32
_SHIFT32 = _f32(12582912.0)          # 1.5·2^23
_INVLN2_32 = _f32(1.44269504088896341)
_C1_32 = _f32(0.693359375)           # ln 2 = _C1_32 + _C2_32, _C1_32 with 9 significant bits
_C2_32 = _f32(-2.12194440e-4)
_E0 = _f32(1.9875691500e-4)          # Cephes expf: e^r ≈ 1 + r + r²·P(r) on |r| <= ln2/2
_E1 = _f32(1.3981999507e-3)
_E2 = _f32(8.3334519073e-3)
_E3 = _f32(4.1665795894e-2)
_E4 = _f32(1.6666665459e-1)
_E5 = _f32(5.0000001201e-1)
_ONE32 = _f32(1.0)
_TWO32 = _f32(2.0)
_FOUR32 = _f32(4.0)
_XMAX32 = _f32(89.0)                 # above the float32 overflow threshold 88.72...
_XMIN32 = _f32(-104.0)               # below the float32 underflow threshold -103.97...
_T0 = _f32(-5.70498872745e-3)        # Cephes tanhf: tanh x ≈ x + x³·T(x²) on |x| < 0.625
_T1 = _f32(2.06390887954e-2)
_T2 = _f32(-5.37397155531e-2)
_T3 = _f32(1.33314422036e-1)
_T4 = _f32(-3.33332819422e-1)
_TSMALL32 = _f32(0.625)
_ZERO32 = _f32(0.0)


@njit(**VJIT)
def pow2_32(k):
    """2.0**k as float32 for an integer -126 <= k <= 127."""
    return _f32_from_bits(np.int32((k + 127) << 23))


@njit(**VJIT)
def exp32(x):
    """e^x in float32 arithmetic, vectorisable (Cephes expf's reduction and polynomial): within
    2 ulp (float32) of the correctly rounded value; subnormal results, ±inf and NaN as exp."""
    x = np.float32(x)
    xc = x if x < _XMAX32 else _XMAX32
    xc = xc if xc > _XMIN32 else _XMIN32
    kf = (xc * _INVLN2_32 + _SHIFT32) - _SHIFT32
    r = (xc - kf * _C1_32) - kf * _C2_32
    p = ((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5
    y = (p * (r * r) + r) + _ONE32
    k = np.int32(kf)
    k1 = k >> 1
    y = y * pow2_32(k1) * pow2_32(k - k1)
    return y if x == x else x


@njit(**VJIT)
def sigmoid32_d(x):
    """(σ(x), σ'(x)) in float32 from one e = exp32(−|x|) and one division q = 1/(1+e):
    σ = q (x >= 0) or e·q, σ' = e·q²."""
    x = np.float32(x)
    e = exp32(-abs(x))
    q = _ONE32 / (_ONE32 + e)
    return (q if x >= _ZERO32 else e * q), e * q * q


@njit(**VJIT)
def tanh32_d(x):
    """(tanh x, 1 − tanh² x) in float32: Cephes tanhf's odd polynomial for |x| < 0.625, else
    1 − 2e·q with e = exp32(−2|x|), q = 1/(1+e); the derivative 4e·q² (1 − t² below 0.625)."""
    x = np.float32(x)
    e = exp32(-_TWO32 * abs(x))
    q = _ONE32 / (_ONE32 + e)
    big = _ONE32 - _TWO32 * e * q
    big = big if x >= _ZERO32 else -big
    s = x * x
    small = x + x * s * ((((_T0 * s + _T1) * s + _T2) * s + _T3) * s + _T4)
    is_small = abs(x) < _TSMALL32
    t = small if is_small else big
    t = t if x != _ZERO32 else x              # tanh(±0) = ±0
    d = _ONE32 - t * t if is_small else _FOUR32 * e * q * q
    return t, d
