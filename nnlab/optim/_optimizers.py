"""The optimizers, in order of increasing complexity. Each docstring gives the exact update rule.

Notation: p parameter, g gradient, t the 1-based step, γ = lr. Every rule first forms the
*effective gradient*

    g ← −g (maximize);   g ← g + weight_decay·p (coupled L2);   g ← g + l1·sign(p) (L1)

and, with decoupled weight decay (AdamW, ``decoupled_weight_decay=True``), multiplies
p ← p·(1 − γ·weight_decay) before the rule. All state starts at 0 unless a rule says otherwise.
"""

import math

from ..errors import HyperparameterError
from ..kernels import optim_cpu as K
from ._base import Optimizer, check_betas, check_bool, check_eps, check_pair, check_real, register


@register
class SGD(Optimizer):
    """Stochastic gradient descent, with momentum in either convention, dampening and Nesterov.

    ``momentum_form="torch"`` (default; PyTorch, Keras-with-sign, Sutskever et al.)::

        m_1 = g_1;   m_t = μ·m_{t−1} + (1 − dampening)·g_t
        d_t = g_t + μ·m_t  (nesterov)   or   d_t = m_t
        p  ← p − γ·d_t

    ``momentum_form="ema"`` (the source texts' SGDM: m is an exponentially weighted average)::

        m_0 = 0;   m_t = β·m_{t−1} + (1 − β)·g_t          (β = momentum)
        d_t = (1 − β)·g_t + β·m_t  (nesterov)   or   d_t = m_t
        p  ← p − γ·d_t

    The two are the same algorithm up to the learning rate: the EMA buffer is (1 − β) times the
    torch buffer (dampening 0), so ``SGD(lr=γ, momentum=β, momentum_form="ema")`` takes exactly the
    steps of ``SGD(lr=γ·(1 − β), momentum=β)`` (Nesterov included). To get the EMA form from the
    torch convention, divide lr by (1 − β); the other way, multiply. (``dampening=β`` in torch's
    form is *not* the EMA: torch's first step is m_1 = g_1 undamped.) ``momentum=0`` is plain SGD
    (m_t = g_t, v_t = 1 in the source texts' g → (m, v) → step form).

    State rows: ``momentum_buffer`` (only when momentum ≠ 0).

    >>> import numpy as np, nnlab as nl
    >>> p = np.array([1.0, -2.0]); opt = nl.optim.SGD(lr=0.1, momentum=0.9)
    >>> opt.step([p], [np.array([1.0, 1.0])]); p
    array([ 0.9, -2.1])
    """

    name = "sgd"
    code = K.SGD
    hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "momentum_form", "l1")
    slot_names = ("momentum_buffer",)

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, momentum_form="torch", l1=0.0):
        super().__init__(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize, momentum_form=momentum_form, l1=l1)

    def _check(self):
        self._check_common()
        if not isinstance(self.momentum_form, str) or self.momentum_form not in ("torch", "ema"):
            raise HyperparameterError(f"momentum_form must be 'torch' or 'ema'; got {self.momentum_form!r}")
        ema = self.momentum_form == "ema"
        mu = check_real(self.momentum, "momentum", 0.0, 1.0 if ema else None, hi_open=ema)
        damp = check_real(self.dampening, "dampening")
        if check_bool(self.nesterov, "nesterov") and (mu <= 0 or damp != 0):
            raise HyperparameterError("nesterov momentum requires momentum > 0 and dampening = 0")
        if ema and damp != 0:
            raise HyperparameterError("dampening is not used with momentum_form='ema' (it is 1 − β there)")

    def n_slots(self):
        return 1 if self.momentum != 0 else 0

    def _fill(self, hp, t):
        hp[K.H_0] = self.momentum
        hp[K.H_0 + 1] = self.dampening
        hp[K.H_0 + 2] = float(self.nesterov)
        hp[K.H_0 + 3] = float(self.momentum_form == "ema")


@register
class Adagrad(Optimizer):
    """AdaGrad: per-coordinate step shrinking with the sum of squared gradients::

        s_0 = initial_accumulator_value
        s_t = s_{t−1} + g_t²
        γ_t = γ / (1 + (t − 1)·lr_decay)
        p  ← p − γ_t·g_t / (√s_t + ε)

    As PyTorch: ε outside the root and the ``lr_decay`` schedule above (Keras and optax have no
    lr_decay and put ε as ``initial_accumulator_value``-like offsets: optax's
    ``adagrad(eps=...)`` is g/√(s + ε), to get it here use a tiny ``eps`` (it must be > 0) and
    ``initial_accumulator_value`` ≈ ε). The effective rate γ_t/(√s_t + ε) never increases.

    State rows: ``sum``.
    """

    name = "adagrad"
    code = K.ADAGRAD
    hyper = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize", "l1")
    slot_names = ("sum",)

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, *,
                 maximize=False, l1=0.0):
        super().__init__(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_real(self.lr_decay, "lr_decay", 0.0)
        check_real(self.initial_accumulator_value, "initial_accumulator_value", 0.0)
        check_eps(self.eps)

    def _init_rows(self, state):
        state[0] = self.initial_accumulator_value

    def _fill(self, hp, t):
        hp[K.H_0] = self.lr / (1 + (t - 1) * self.lr_decay)
        hp[K.H_0 + 1] = self.eps


@register
class Adadelta(Optimizer):
    """AdaDelta (Zeiler 2012), with PyTorch's extra learning rate γ (1.0 = the paper)::

        v_t = ρ·v_{t−1} + (1 − ρ)·g_t²
        d_t = √(u_{t−1} + ε) / √(v_t + ε) · g_t
        u_t = ρ·u_{t−1} + (1 − ρ)·d_t²
        p  ← p − γ·d_t

    ε sits inside both roots (as in the paper, PyTorch and Keras).

    State rows: ``square_avg`` (v), ``acc_delta`` (u).
    """

    name = "adadelta"
    code = K.ADADELTA
    hyper = ("lr", "rho", "eps", "weight_decay", "maximize", "l1")
    slot_names = ("square_avg", "acc_delta")

    def __init__(self, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, *, maximize=False, l1=0.0):
        super().__init__(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_real(self.rho, "rho", 0.0, 1.0)
        check_eps(self.eps)

    def _fill(self, hp, t):
        hp[K.H_0] = self.rho
        hp[K.H_0 + 1] = self.eps


@register
class RMSprop(Optimizer):
    """RMSProp (Hinton), plain or centered, with optional momentum::

        v_t = α·v_{t−1} + (1 − α)·g_t²
        ḡ_t = α·ḡ_{t−1} + (1 − α)·g_t                         (centered only)
        a_t = √(v_t − ḡ_t²) + ε  (centered)   or   √v_t + ε
        b_t = μ·b_{t−1} + g_t / a_t,  p ← p − γ·b_t           (momentum μ > 0)
        p  ← p − γ·g_t / a_t                                   (μ = 0)

    As PyTorch: ε outside the root (Keras/TF put it inside, √(v + ε); the difference matters only
    when v ≲ ε²). nnlab clamps v_t − ḡ_t² at 0 under the root, where rounding could make it
    slightly negative (PyTorch would give NaN there).

    State rows: ``square_avg``, then ``grad_avg`` (centered), then ``momentum_buffer`` (μ > 0).
    """

    name = "rmsprop"
    code = K.RMSPROP
    hyper = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize", "l1")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False, l1=0.0):
        super().__init__(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_real(self.alpha, "alpha", 0.0, 1.0)
        check_eps(self.eps)
        check_real(self.momentum, "momentum", 0.0)
        check_bool(self.centered, "centered")

    def slot_names_for(self):
        return ("square_avg",) + (("grad_avg",) if self.centered else ()) + \
            (("momentum_buffer",) if self.momentum > 0 else ())

    def n_slots(self):
        return len(self.slot_names_for())

    def _fill(self, hp, t):
        hp[K.H_0] = self.alpha
        hp[K.H_0 + 1] = self.eps
        hp[K.H_0 + 2] = self.momentum
        hp[K.H_0 + 3] = float(self.centered)


@register
class Adam(Optimizer):
    """Adam (Kingma & Ba), with optional AMSGrad, bias correction and decoupled weight decay::

        m_t = β₁·m_{t−1} + (1 − β₁)·g_t
        v_t = β₂·v_{t−1} + (1 − β₂)·g_t²
        v̂_t = max(v̂_{t−1}, v_t)  (amsgrad)   or   v_t
        c₁ = 1 − β₁ᵗ,  c₂ = 1 − β₂ᵗ        (both 1 with bias_correction=False)
        p  ← p − (γ/c₁)·m_t / (√v̂_t/√c₂ + ε)

    As PyTorch: ε is added to the bias-corrected root. The paper's "ε̂" form (Keras/TF:
    p ← p − γ·(√c₂/c₁)·m_t/(√v_t + ε̂)) is the same rule with ε = ε̂/√c₂, a per-step value, so it
    matches this one exactly only while ε is negligible. ``bias_correction=False`` gives the
    source texts' plain form p ← p − γ·m_t/(√v_t + ε) (an nnlab option; torch has none).
    Because m_t/√v̂_t is a ratio of averages of g and g², the step is (nearly) independent of
    the gradient's scale: |Δp| ≲ γ whatever the magnitude of g (the point of [S3]).

    State rows: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq`` (amsgrad only).
    """

    name = "adam"
    code = K.ADAM
    hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "bias_correction",
             "decoupled_weight_decay", "l1")
    slot_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, bias_correction=True, decoupled_weight_decay=False, l1=0.0):
        super().__init__(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                         bias_correction=bias_correction, decoupled_weight_decay=decoupled_weight_decay, l1=l1)

    def _check(self):
        self._check_common()
        check_betas(self.betas)
        check_eps(self.eps)
        check_bool(self.amsgrad, "amsgrad")
        check_bool(self.bias_correction, "bias_correction")
        check_bool(self.decoupled_weight_decay, "decoupled_weight_decay")

    def n_slots(self):
        return 3 if self.amsgrad else 2

    def _fill(self, hp, t):
        b1, b2 = (float(b) for b in self.betas)
        hp[K.H_0] = b1
        hp[K.H_0 + 1] = b2
        hp[K.H_0 + 2] = self.eps
        hp[K.H_0 + 3] = float(self.amsgrad)
        if self.bias_correction:
            hp[K.H_0 + 4] = self.lr / (1 - b1 ** t)
            hp[K.H_0 + 5] = math.sqrt(1 - b2 ** t)
        else:
            hp[K.H_0 + 4] = self.lr
            hp[K.H_0 + 5] = 1.0


@register
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``::

        p ← p·(1 − γ·λ)          (λ = weight_decay, applied before the Adam rule)
        then the :class:`Adam` rule on the raw gradient

    λ is multiplied by γ (PyTorch's convention; optax's ``adamw`` does the same, the paper's
    schedule multiplier η_t is γ here). ``Adam(..., decoupled_weight_decay=True)`` is the same.
    """

    name = "adamw"
    hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "bias_correction", "l1")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, bias_correction=True, l1=0.0):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, bias_correction=bias_correction, decoupled_weight_decay=True, l1=l1)

    def _check(self):
        self.decoupled_weight_decay = True
        super()._check()


@register
class NAdam(Optimizer):
    """NAdam (Dozat 2016) with PyTorch's momentum schedule::

        μ_t = β₁·(1 − ½·0.96^(t·ψ)),   Π_t = μ_1·…·μ_t          (ψ = momentum_decay)
        m_t = β₁·m_{t−1} + (1 − β₁)·g_t
        v_t = β₂·v_{t−1} + (1 − β₂)·g_t²
        d_t = √(v_t / (1 − β₂ᵗ)) + ε
        p  ← p − γ·(1 − μ_t)/(1 − Π_t) · g_t/d_t − γ·μ_{t+1}/(1 − Π_t·μ_{t+1}) · m_t/d_t

    ``momentum_decay=0`` gives the constant μ_t = β₁/2; Keras's Nadam uses the same schedule.
    Π_t is kept as scalar state (``state_dict()['scalars']['mu_product']``).

    State rows: ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """

    name = "nadam"
    code = K.NADAM
    hyper = ("lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay", "maximize", "l1")
    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, maximize=False, l1=0.0):
        super().__init__(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                         weight_decay=weight_decay, momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_betas(self.betas)
        check_eps(self.eps)
        check_real(self.momentum_decay, "momentum_decay", 0.0)
        check_bool(self.decoupled_weight_decay, "decoupled_weight_decay")

    def _fill(self, hp, t):
        b1, b2 = (float(b) for b in self.betas)
        md = self.momentum_decay
        mu = b1 * (1.0 - 0.5 * (0.96 ** (t * md)))
        mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * md)))
        prod = self._scalars.get("mu_product", 1.0) * mu
        self._pending = {"mu_product": prod}
        hp[K.H_0] = b1
        hp[K.H_0 + 1] = b2
        hp[K.H_0 + 2] = self.eps
        hp[K.H_0 + 3] = 1 - b2 ** t
        hp[K.H_0 + 4] = -self.lr * (1.0 - mu) / (1.0 - prod)
        hp[K.H_0 + 5] = (-self.lr * mu_next) / (1.0 - prod * mu_next)


@register
class Adamax(Optimizer):
    """Adamax (Kingma & Ba, §7): Adam with the infinity norm::

        m_t = β₁·m_{t−1} + (1 − β₁)·g_t
        u_t = max(β₂·u_{t−1}, |g_t| + ε)
        p  ← p − γ/(1 − β₁ᵗ) · m_t/u_t

    As PyTorch: ε is added to |g| inside the max (Keras adds it to u in the denominator instead).

    State rows: ``exp_avg`` (m), ``exp_inf`` (u).
    """

    name = "adamax"
    code = K.ADAMAX
    hyper = ("lr", "betas", "eps", "weight_decay", "maximize", "l1")
    slot_names = ("exp_avg", "exp_inf")

    def __init__(self, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, maximize=False, l1=0.0):
        super().__init__(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps,
                         weight_decay=weight_decay, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_betas(self.betas)
        check_eps(self.eps)

    def _fill(self, hp, t):
        b1, b2 = (float(b) for b in self.betas)
        hp[K.H_0] = b1
        hp[K.H_0 + 1] = b2
        hp[K.H_0 + 2] = self.eps
        hp[K.H_0 + 3] = self.lr / (1 - b1 ** t)


@register
class Rprop(Optimizer):
    """Resilient backpropagation (Riedmiller & Braun), the Rprop⁻ variant PyTorch implements.
    Only the *sign* of the gradient is used, so the step ignores the gradient's magnitude::

        s = g_t·g_{t−1}
        δ_t = min(δ_{t−1}·η₊, δ_max)  if s > 0
        δ_t = max(δ_{t−1}·η₋, δ_min), and g_t := 0 (no step, and no sign memory)  if s < 0
        δ_t = clamp(δ_{t−1}, δ_min, δ_max)  if s = 0
        p  ← p − sign(g_t)·δ_t

    with δ_0 = lr (lr only sets the initial step size), (η₋, η₊) = etas and
    (δ_min, δ_max) = step_sizes. Rprop is meant for full-batch gradients.

    State rows: ``prev`` (g_{t−1}), ``step_size`` (δ).
    """

    name = "rprop"
    code = K.RPROP
    hyper = ("lr", "etas", "step_sizes", "maximize", "l1")
    slot_names = ("prev", "step_size")

    def __init__(self, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *, maximize=False, l1=0.0):
        super().__init__(lr=lr, etas=tuple(etas) if isinstance(etas, list) else etas,
                         step_sizes=tuple(step_sizes) if isinstance(step_sizes, list) else step_sizes,
                         maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        em, ep = check_pair(self.etas, "etas")
        em = check_real(em, "etas[0]", 0.0, 1.0, lo_open=True, hi_open=True)
        check_real(ep, "etas[1]", 1.0, lo_open=True)
        smin, smax = check_pair(self.step_sizes, "step_sizes")
        smin = check_real(smin, "step_sizes[0]", 0.0)
        check_real(smax, "step_sizes[1]", smin)

    def _init_rows(self, state):
        state[1] = self.lr

    def _fill(self, hp, t):
        hp[K.H_0] = self.etas[0]
        hp[K.H_0 + 1] = self.etas[1]
        hp[K.H_0 + 2] = self.step_sizes[0]
        hp[K.H_0 + 3] = self.step_sizes[1]


@register
class SMORMS3(Optimizer):
    """SMORMS3 ("squared mean over root mean squared cubed", Simon Funk 2015; no PyTorch
    counterpart). RMSProp whose averaging window adapts per coordinate: ``mem`` counts how many
    recent gradients agreed, and the step is capped by γ::

        mem_0 = 1,  ḡ_0 = 0,  ḡ²_0 = 0
        r    = 1 / (mem + 1)
        ḡ    = (1 − r)·ḡ + r·g_t
        ḡ²   = (1 − r)·ḡ² + r·g_t²
        x    = ḡ·ḡ / (ḡ² + ε)            (in [0, 1]: how consistent the gradient's sign is)
        p   ← p − g_t·min(γ, x) / (√ḡ² + ε)
        mem ← 1 + mem·(1 − x)

    Defaults follow Funk's post: lr=1e-3, ε=1e-16 (ε is kept tiny on purpose, his "beware the
    epsilon"). ``weight_decay`` (coupled L2) and ``l1`` are nnlab extras.

    State rows: ``mem``, ``g`` (ḡ), ``g2`` (ḡ²).
    """

    name = "smorms3"
    code = K.SMORMS3
    hyper = ("lr", "eps", "weight_decay", "maximize", "l1")
    slot_names = ("mem", "g", "g2")

    def __init__(self, lr=1e-3, eps=1e-16, weight_decay=0.0, *, maximize=False, l1=0.0):
        super().__init__(lr=lr, eps=eps, weight_decay=weight_decay, maximize=maximize, l1=l1)

    def _check(self):
        self._check_common()
        check_eps(self.eps)

    def _init_rows(self, state):
        state[0] = 1.0

    def _fill(self, hp, t):
        hp[K.H_0] = self.eps

