"""The network program: how a model is lowered for the compiled executor (CPU and CUDA alike).

A model becomes three small arrays that every kernel reads:

* ``ops``  int64 (n_ops, NF): one row per op; the columns are the ``F_*`` indices below.
* ``hp``   float64 (n_ops, 4): fixed activation hyperparameters p0, p1, p2 and the scale a
  (a slot whose bit is set in ``F_AMASK`` is read from the parameter buffer instead).
* ``tens`` int64 (n_tensors, 2): for each tensor, its offset per batch row and its width. For a
  batch of N rows tensor t is ``ws[N*off : N*(off+width)]`` viewed as (N, width), C order.

Parameters, gradients and optimizer state are flat buffers; a layer's weights are views into
them (``F_W``/``F_B``/``F_AP`` are offsets). Forward values live in the workspace ``ws`` and
their gradients in ``dws`` with the same layout, so the memoized layer error E_l = dL/dZ_l is the
``dws`` region of the op's Z tensor. New layer kinds add a ``KIND_*`` code and a branch in the
executor; nothing else changes.
"""

NF = 16
F_KIND = 0    # KIND_* code
F_X = 1       # input tensor id
F_Z = 2       # pre-activation tensor id
F_A = 3       # output tensor id
F_NIN = 4     # input width
F_NOUT = 5    # output width
F_W = 6       # offset of W (n_in, n_out) in the parameter buffer
F_B = 7       # offset of b (n_out,), -1 without bias
F_ACT = 8     # activation code (nnlab.activations._math)
F_AP = 9      # offset of the learnable activation hyperparameters, -1 if none
F_AMASK = 10  # bit k: slot k (p0, p1, p2, a=3) is learnable and read from params[F_AP + rank]
F_DX = 11     # DX_* mode for the gradient w.r.t. the input
F_NOISE = 12  # noise tensor id (rrelu, noisy_relu), -1 if none
F_NKIND = 13  # 0 none, 1 uniform U(0,1), 2 normal N(0,1)
F_SCRATCH = 14  # scratch tensor id (width >= n_in) used by DX_ADD, -1 if none
F_LAYER = 15  # index of the user-facing layer this op belongs to

KIND_DENSE = 1

DX_SKIP = 0   # input is the network input: no gradient needed
DX_WRITE = 1  # first (only) consumer: overwrite dws[x]
DX_ADD = 2    # later consumer: accumulate into dws[x]

NOISE_NONE = 0
NOISE_UNIFORM = 1
NOISE_NORMAL = 2

LOSS_MSE = 0
LOSS_SOFTMAX_CE = 1
LOSS_BCE = 2

# Per-layer statistics recorded by the gradient-health monitor: columns of the (n_layers, NS)
# array that cpu.grad_stats / cpu.update_stats fill for every Dense op, in op order.
S_GRAD_NORM = 0    # ‖∂L/∂W_l‖ (Frobenius), before clipping
S_ERR_NORM = 1     # ‖E_l‖ = ‖∂L/∂Z_l‖
S_W_NORM = 2       # ‖W_l‖ after the step
S_UPDATE_NORM = 3  # ‖W_l(after) − W_l(before)‖
S_DEAD = 4         # fraction of units whose derivative is 0 for every row of the batch
S_SATURATED = 5    # fraction of entries with a·θ'(z) < ratio·max θ' (saturating activations only)
S_NONFINITE = 6    # count of NaN/±inf in W_l, ∂L/∂W_l, Z_l, A_l, E_l
S_SUBNORMAL = 7    # count of gradient entries (∂L/∂W_l and E_l) with 0 < |g| < FLT_MIN (float32 subnormal)
S_ZERO_GRAD = 8    # count of exactly-zero entries of ∂L/∂W_l
S_A_MEAN = 9       # mean of A_l over the batch
S_A_STD = 10       # standard deviation of A_l
S_Z_MEAN = 11      # mean of Z_l
S_Z_STD = 12       # standard deviation of Z_l
S_B_GRAD_NORM = 13  # ‖∂L/∂b_l‖ (0 without bias)
S_N_GRAD = 14      # number of entries of ∂L/∂W_l plus E_l (denominator of S_SUBNORMAL)
NS = 15

FLT_MIN = 1.1754943508222875e-38  # smallest normal float32
