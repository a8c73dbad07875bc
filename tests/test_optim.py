"""Optimizers and schedulers: the update equations written out by hand, and PyTorch."""
import math

import numpy as np
import pytest

from tinygrad_uu import Tensor, nn, optim
from tinygrad_uu.nn import functional as F

A = np.array([1.0, 2.0, 0.5])
B = np.array([0.3, -1.0, 2.0])
P0 = np.array([1.0, -2.0, 3.0])
STEPS = 5


def grad_of(p):
    """Gradient of the tiny problem L(p) = sum(A * p**2) / 2 + B . p."""
    return A * p + B


def run_ours(make_optimizer, steps=STEPS):
    """Optimise the tiny problem, computing the gradient with backward()."""
    p = nn.Parameter(P0.copy())
    opt = make_optimizer([p])
    for _ in range(steps):
        opt.zero_grad()
        ((p * p * A).sum() * 0.5 + (p * B).sum()).backward()
        opt.step()
    return p.data


# ------------------------------------------------------------ the equations by hand


def sgd_by_hand(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, buf = P0.copy(), None
    for _ in range(STEPS):
        g = grad_of(p) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def adam_by_hand(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    p, m, v = P0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, STEPS + 1):
        g = grad_of(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def rmsprop_by_hand(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p, s, c, b = P0.copy(), np.zeros(3), np.zeros(3), np.zeros(3)
    for _ in range(STEPS):
        g = grad_of(p) + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        if centered:
            c = alpha * c + (1 - alpha) * g
            avg = np.sqrt(s - c * c) + eps
        else:
            avg = np.sqrt(s) + eps
        if momentum:
            b = momentum * b + g / avg
            p = p - lr * b
        else:
            p = p - lr * g / avg
    return p


SGD_CASES = [dict(lr=0.1), dict(lr=0.1, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
             dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.1),
             dict(lr=0.1, weight_decay=0.2)]
ADAM_CASES = [dict(lr=0.1), dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)]
RMSPROP_CASES = [dict(lr=0.01), dict(lr=0.01, alpha=0.9, momentum=0.8),
                 dict(lr=0.01, centered=True, weight_decay=0.1),
                 dict(lr=0.01, centered=True, momentum=0.5)]


@pytest.mark.parametrize("kwargs", SGD_CASES)
def test_sgd_follows_its_equations(kwargs):
    np.testing.assert_allclose(run_ours(lambda ps: optim.SGD(ps, **kwargs)),
                               sgd_by_hand(**kwargs), rtol=1e-12)


@pytest.mark.parametrize("kwargs", ADAM_CASES)
def test_adam_follows_its_equations(kwargs):
    np.testing.assert_allclose(run_ours(lambda ps: optim.Adam(ps, **kwargs)),
                               adam_by_hand(**kwargs), rtol=1e-10)


@pytest.mark.parametrize("kwargs", ADAM_CASES + [dict(lr=0.1, weight_decay=0.5)])
def test_adamw_decouples_weight_decay(kwargs):
    kwargs = {"weight_decay": 1e-2, **kwargs}
    np.testing.assert_allclose(run_ours(lambda ps: optim.AdamW(ps, **kwargs)),
                               adam_by_hand(decoupled=True, **kwargs), rtol=1e-10)


@pytest.mark.parametrize("kwargs", RMSPROP_CASES)
def test_rmsprop_follows_its_equations(kwargs):
    np.testing.assert_allclose(run_ours(lambda ps: optim.RMSprop(ps, **kwargs)),
                               rmsprop_by_hand(**kwargs), rtol=1e-10)


# ------------------------------------------------------------ bookkeeping


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps), lambda ps: optim.AdamW(ps),
                                  lambda ps: optim.RMSprop(ps, momentum=0.5)])
def test_params_without_grad_are_skipped_and_float32_stays_float32(make):
    used, unused = nn.Parameter(np.ones(3, np.float32)), nn.Parameter(np.ones(2, np.float32))
    opt = make([used, unused])
    (used * used).sum().backward()
    opt.step()
    assert np.all(unused.data == 1) and unused not in opt.state
    assert used.data.dtype == np.float32 and not np.all(used.data == 1)
    assert used.grad is not None and np.all(used.grad.data == 2)  # step leaves grads alone


def test_param_groups_have_their_own_lr():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    (a.sum() + b.sum()).backward()
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.5)
    opt.param_groups[0]["lr"] = 1.0  # what a scheduler does
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)


def test_zero_grad():
    p = nn.Parameter(np.ones(2))
    opt = optim.SGD([p], lr=0.1)
    (p * 3).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert np.all(p.grad.data == 0)
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1),
                                  lambda ps: optim.RMSprop(ps, centered=True, momentum=0.5)])
def test_state_dict_round_trip_continues_identically(make):
    full = run_ours(make, steps=6)
    p = nn.Parameter(P0.copy())
    opt = make([p])
    for step in range(6):
        if step == 3:  # start over from a saved state: a fresh parameter and optimizer
            saved_p, saved = p.data.copy(), opt.state_dict()
            p = nn.Parameter(saved_p)
            opt = make([p])
            opt.load_state_dict(saved)
        opt.zero_grad()
        ((p * p * A).sum() * 0.5 + (p * B).sum()).backward()
        opt.step()
    np.testing.assert_allclose(p.data, full, rtol=1e-12)


def test_state_dict_is_a_copy_and_checks_sizes():
    p = nn.Parameter(np.ones(2))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.sum().backward()
    opt.step()
    saved = opt.state_dict()
    opt.step()
    np.testing.assert_allclose(saved["state"][0]["momentum_buffer"], 1.0)
    assert saved["param_groups"][0]["params"] == [0] and saved["param_groups"][0]["lr"] == 0.1
    with pytest.raises(ValueError, match=r"saved groups hold \[1\] parameters.*\[2\]"):
        optim.SGD([nn.Parameter(np.ones(2)), nn.Parameter(np.ones(1))]).load_state_dict(saved)


def test_optimizer_errors():
    with pytest.raises(ValueError, match="empty list of parameters"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="invalid lr: -1"):
        optim.Adam([nn.Parameter(np.ones(1))], lr=-1)
    with pytest.raises(ValueError, match="invalid beta2: 1.0"):
        optim.Adam([nn.Parameter(np.ones(1))], betas=(0.9, 1.0))
    p = nn.Parameter(np.ones(1))
    with pytest.raises(ValueError, match="appears twice"):
        optim.SGD([p, p])
    with pytest.raises(ValueError, match="not a leaf"):
        optim.SGD([p * 2])
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], momentum=0, nesterov=True)
    assert "lr: 0.001" in repr(optim.SGD([p]))


def test_sgd_trains_a_small_model():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    t = (x @ rng.standard_normal((5, 3))).argmax(1)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(model(Tensor(x)), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


# ------------------------------------------------------------ schedulers


def test_step_lr_by_hand():
    opt = optim.SGD([nn.Parameter(np.ones(1))], lr=1.0)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert sched.get_last_lr() == [0.25] and sched.last_epoch == 8


def test_cosine_annealing_by_hand():
    opt = optim.SGD([{"params": [nn.Parameter(np.ones(1))]},
                     {"params": [nn.Parameter(np.ones(1))], "lr": 0.5}], lr=1.0)
    sched = optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    for epoch in range(6):
        for group, base in zip(opt.param_groups, [1.0, 0.5]):
            expected = 0.1 + (base - 0.1) * (1 + math.cos(math.pi * epoch / 4)) / 2
            assert math.isclose(group["lr"], expected)
        sched.step()


def test_scheduler_state_dict_round_trip():
    opt = optim.SGD([nn.Parameter(np.ones(1))], lr=1.0)
    sched = optim.StepLR(opt, step_size=2)
    for _ in range(3):
        sched.step()
    other = optim.StepLR(optim.SGD([nn.Parameter(np.ones(1))], lr=1.0), step_size=5)
    other.load_state_dict(sched.state_dict())
    assert other.last_epoch == 3 and other.step_size == 2


# ------------------------------------------------------------ against PyTorch

TORCH_CASES = ([("SGD", k) for k in SGD_CASES] + [("Adam", k) for k in ADAM_CASES]
               + [("AdamW", k) for k in ADAM_CASES] + [("RMSprop", k) for k in RMSPROP_CASES])


@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs", TORCH_CASES)
def test_optimizers_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    ours = run_ours(lambda ps: getattr(optim, name)(ps, **kwargs), steps=8)
    p = torch.tensor(P0.copy(), requires_grad=True)
    opt = getattr(torch.optim, name)([p], **kwargs)
    for _ in range(8):
        opt.zero_grad()
        (0.5 * (p * p * torch.tensor(A)).sum() + (p * torch.tensor(B)).sum()).backward()
        opt.step()
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-10)


@pytest.mark.torch
@pytest.mark.parametrize("name, kwargs", [("StepLR", dict(step_size=3, gamma=0.3)),
                                          ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01))])
def test_schedulers_match_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    ours_opt = optim.SGD([nn.Parameter(np.ones(1))], lr=0.5)
    theirs_opt = torch.optim.SGD([torch.ones(1, requires_grad=True)], lr=0.5)
    ours = getattr(optim, name)(ours_opt, **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(theirs_opt, **kwargs)
    for _ in range(14):
        assert math.isclose(ours_opt.param_groups[0]["lr"], theirs_opt.param_groups[0]["lr"],
                            rel_tol=1e-9, abs_tol=1e-12)
        theirs_opt.step()
        ours.step()
        theirs.step()
