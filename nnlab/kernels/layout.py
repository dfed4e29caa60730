"""The network program: how a model is lowered for the compiled executor (CPU and CUDA alike).

A model becomes three small arrays that every kernel reads:

* ``ops``  int64 (n_ops, NF): one row per op; the columns are the ``F_*`` indices below.
* ``hp``   float64 (n_ops, NHP): fixed activation hyperparameters p0, p1, p2 and the scale a
  (a slot whose bit is set in ``F_AMASK`` is read from the parameter buffer instead), then the
  kind's own values (``HP_*``).
* ``tens`` int64 (n_tensors, 3): for each tensor, its offset per batch row, its width per batch
  row and its steps. For a batch of N rows tensor t is ``ws[N*off : N*(off+width)]`` viewed as
  (N, width), C order; a sequence tensor of T steps and F features has width T·F, its row r
  holding (x_r1, ..., x_rT), so the same memory read as (N·T, F) is one row per (r, t).

Parameters, gradients and optimizer state are flat buffers; a layer's weights are views into
them (``F_W``/``F_B``/``F_AP`` are offsets). The kernels get the parameter *store*: the parameters
followed by the buffers (BatchNorm's running statistics, ``F_BUF``), which no optimizer touches. Forward values live in the workspace ``ws`` and
their gradients in ``dws`` with the same layout, so the memoized layer error E_l = dL/dZ_l is the
``dws`` region of the op's Z tensor. The region before the first tensor (offset 0 up to the
input's offset) is the carry block of the recurrent ops (``F_CARRY``), at the same place for
every sequence length. A tensor read by several ops gets its gradient written by the last of
them in forward order (``DX_WRITE``) and added by the others (``DX_ADD``).

A new layer kind adds a ``KIND_*`` code here, its kernel module (forward and backward with the
executor's signatures), one branch in each of the executor's two dispatch functions
(:mod:`nnlab.kernels.cpu`), and its layer class; nothing else changes.
"""

NF = 29
F_KIND = 0    # KIND_* code
F_X = 1       # input tensor id
F_Z = 2       # pre-activation tensor id (the op's memoized error E = dL/dZ lives at Z in dws)
F_A = 3       # output tensor id
F_NIN = 4     # input width (features per step)
F_NOUT = 5    # output width (features per step)
F_W = 6       # offset of W (n_in, n_out) in the parameter buffer, -1 if the op has no weights
F_B = 7       # offset of b (n_out,), -1 without bias
F_ACT = 8     # activation code (nnlab.activations._math)
F_AP = 9      # offset of the learnable activation hyperparameters, -1 if none
F_AMASK = 10  # bit k: slot k (p0, p1, p2, a=3) is learnable and read from params[F_AP + rank]
F_DX = 11     # DX_* mode for the gradient w.r.t. the input
F_NOISE = 12  # noise tensor id (rrelu, noisy_relu, dropout masks), -1 if none
F_NKIND = 13  # 0 none, 1 uniform U(0,1), 2 normal N(0,1)
F_SCRATCH = 14  # scratch tensor id (width >= the input's) used by DX_ADD, -1 if none
F_LAYER = 15  # index of the user-facing (top-level) layer this op belongs to
F_T = 16      # steps: a row-wise op acts on n*T rows of width n_in (T = 1 for 2-D data); the
              # sequence length of a recurrent op
F_X2 = 17     # second input tensor id (ADD: the skip; GATE: the transform H), -1 if none
F_X3 = 18     # third input tensor id (GATE: the gate T), -1 if none
F_DX2 = 19    # DX_* mode of the second input
F_DX3 = 20    # DX_* mode of the third input
F_AUX = 21    # first of the op's auxiliary tensors (kind-specific saved values), -1 if none
F_BUF = 22    # offset of the op's buffers (running statistics) in the parameter store, -1 if none
F_K = 23      # integer hyperparameter: MAXOUT pieces k; recurrent truncation k (0 = full BPTT)
F_CARRY = 24  # recurrent ops: offset per batch row of the state kept between windows, -1 if none
F_WN = 25     # number of elements of the weight block at F_W (the monitor's W_l); 0 if none
F_BN = 26     # number of elements of the bias block at F_B; 0 if none
F_SEQ = 27    # recurrent ops: 1 when the output is the whole sequence, 0 for the last state only
F_LEVEL = 28  # the op's row in the monitor's statistics (ops with weights), -1 for the others

KIND_DENSE = 1        # Z = X W + b (or Z = X when F_W = -1: an Activation layer), A = a·θ(Z)
KIND_BATCHNORM = 2    # A = γ (X − μ)/σ + β over the batch rows (training) or running statistics (eval)
KIND_LAYERNORM = 3    # A = γ (X − μ_row)/σ_row + β
KIND_DROPOUT = 4      # A = X·m/(1 − p), m ~ Bernoulli(1 − p) (training); A = X (eval)
KIND_ALPHA_DROPOUT = 5  # SELU-preserving dropout (torch.nn.AlphaDropout)
KIND_ADD = 6          # A = X + X2 (a residual block's sum)
KIND_GATE = 7         # A = X3·X2 + (1 − X3)·X (a highway layer's carry/transform mix)
KIND_MAXOUT = 8       # Z = X W + b (n_out·k columns), A_j = max over the k pieces of unit j
KIND_RBF = 9          # Z_j = ‖x − c_j‖², A_j = exp(−γ Z_j)
KIND_RNN = 10         # h_t = θ(x_t W_ih + h_{t−1} W_hh + b)
KIND_LSTM = 11        # gates i, f, g, o (torch order)

DX_SKIP = 0   # input is the network input: no gradient needed
DX_WRITE = 1  # last consumer in forward order (first in the backward pass): overwrite dws[x]
DX_ADD = 2    # another consumer: accumulate into dws[x]

NOISE_NONE = 0
NOISE_UNIFORM = 1
NOISE_NORMAL = 2

# Columns of ``hp`` (float64, (n_ops, NHP)). 0-3: the activation slots p0, p1, p2, a; 4-7 mean
# what the op's kind says:
NHP = 8
HP_EPS = 4        # BATCHNORM, LAYERNORM: ε
HP_MOMENTUM = 5   # BATCHNORM: running = (1 − momentum)·running + momentum·batch
HP_P = 4          # DROPOUT, ALPHA_DROPOUT: the drop probability p
HP_GAMMA = 4      # RBF: γ when it is not learnable (a learnable γ is params[F_AP])
HP_CARRY = 4      # RNN, LSTM: 0 start from zeros; 1 start from zeros and keep the final state in
                  # the carry block; 2 start from the kept state and keep the final one

LOSS_MSE = 0
LOSS_SOFTMAX_CE = 1
LOSS_BCE = 2

# Per-layer statistics recorded by the gradient-health monitor: columns of the (n_layers, NS)
# array that cpu.grad_stats / cpu.update_stats fill for every op with weights (F_WN > 0), in op order.
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
