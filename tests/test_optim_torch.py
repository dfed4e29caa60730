"""nnlab.optim and nnlab.clip against torch.optim / torch.nn.utils (skipped without torch):
same hyperparameters, the same changing gradients, 30 steps, float64."""


import numpy as np
import optim_naive as naive  # tests/ is on sys.path (conftest.py)
import pytest

import nnlab as nl

torch = pytest.importorskip("torch", exc_type=ImportError)

TORCH_NAMES = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop", "adam": "Adam",
               "adamw": "AdamW", "nadam": "NAdam", "adamax": "Adamax", "rprop": "Rprop"}
NNLAB_ONLY = {"momentum_form", "bias_correction", "l1"}  # options torch does not have

TORCH_CASES = [(n, h) for n, h in naive.CASES if n in TORCH_NAMES and not NNLAB_ONLY & set(h)]
TORCH_IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items())}" for n, h in TORCH_CASES]


@pytest.fixture(autouse=True)
def _float64_default():
    """torch keeps step counts and NAdam's μ-product in the default dtype: make it float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_every_torch_optimizer_is_covered():
    assert {n for n, _ in TORCH_CASES} == set(TORCH_NAMES)


@pytest.mark.parametrize(("name", "hp"), TORCH_CASES, ids=TORCH_IDS)
def test_matches_torch_optim(name, hp):
    ours = naive.make_params()
    theirs = [torch.tensor(p, requires_grad=True) for p in naive.make_params()]
    opt = nl.optim.get(name, **hp)
    topt = getattr(torch.optim, TORCH_NAMES[name])(theirs, **hp, foreach=False)
    for t in range(1, naive.STEPS + 1):
        opt.step(ours, [naive.grad_of(p, t, k) for k, p in enumerate(ours)])
        for k, p in enumerate(theirs):
            p.grad = torch.from_numpy(naive.grad_of(p.detach().numpy(), t, k))
        topt.step()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_defaults_match_torch():
    """Same keyword names and default values as torch.optim (where both have the keyword)."""
    import inspect

    for name, tname in TORCH_NAMES.items():
        ours = inspect.signature(nl.optim.REGISTRY[name].__init__).parameters
        theirs = inspect.signature(getattr(torch.optim, tname).__init__).parameters
        for k, par in ours.items():
            if k in theirs and k not in ("self", "params"):
                assert par.default == theirs[k].default, (name, k)
        missing = {k for k in theirs if k not in ours} - {"self", "params", "foreach", "capturable",
                                                           "differentiable", "fused"}
        assert not missing, (name, missing)


def _grads(seed, shapes=((3, 4), (5,), (2, 2, 2))):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) * rng.uniform(0.1, 10) for s in shapes]


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 3.0, 100.0])
@pytest.mark.parametrize("seed", range(3))
def test_global_norm_matches_clip_grad_norm_(max_norm, seed):
    ours = _grads(seed)
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in ours]
    for p, g in zip(theirs, ours):
        p.grad = torch.from_numpy(g.copy())
    total = nl.clip.by_global_norm(ours, max_norm)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, foreach=False)
    assert total == pytest.approx(float(ttotal), rel=1e-13)
    for a, p in zip(ours, theirs):
        np.testing.assert_allclose(a, p.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_global_norm_error_if_nonfinite_like_torch():
    g = [np.array([1.0, np.inf])]
    with pytest.raises(nl.errors.NonFiniteError):
        nl.clip.by_global_norm(g, 1.0, error_if_nonfinite=True)
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.tensor([1.0, np.inf])
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("clip_value", [0.01, 0.5, 5.0])
def test_by_value_matches_clip_grad_value_(clip_value):
    ours = _grads(7)
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in ours]
    for p, g in zip(theirs, ours):
        p.grad = torch.from_numpy(g.copy())
    nl.clip.by_value(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs, clip_value, foreach=False)
    for a, p in zip(ours, theirs):
        np.testing.assert_array_equal(a, p.grad.numpy())
