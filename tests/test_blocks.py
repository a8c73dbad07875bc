"""nn.BasicBlock: shapes, the shortcut choice, a gradcheck of every input and parameter in
float64 (train and eval mode), and agreement with the same block written in PyTorch."""
import numpy as np
import pytest

from tinygrad_uu import Tensor, gradcheck, kernels, manual_seed, nn


@pytest.fixture(autouse=True)
def numpy_kernels():
    with kernels.use_backend("numpy"):   # no numba compile: the kernels have their own tests
        yield


def call_with(module, x, *values):
    """module(x) with its parameters' values replaced by ``values`` (gradcheck hands in
    perturbed copies); where a value is the parameter itself, the graph reaches it."""
    params = list(module.parameters())
    saved = [p.data for p in params]
    try:
        for p, v in zip(params, values):
            p.data = v.data
        out = module(x)
    finally:
        for p, s in zip(params, saved):
            p.data = s
    return out


@pytest.mark.parametrize("cin, cout, stride", [(3, 3, 1), (2, 4, 2), (3, 5, 1)])
@pytest.mark.parametrize("training", [True, False])
def test_basic_block_gradcheck(cin, cout, stride, training):
    manual_seed(0)
    block = nn.BasicBlock(cin, cout, stride).double().train(training)
    rng = np.random.default_rng(1)
    for p in block.parameters():                     # BN weights away from their init of 1
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) if p.ndim == 1 else p.data
    if not training:                                 # running statistics that are not 0/1
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.data[...] = rng.normal(size=m.running_mean.shape)
                m.running_var.data[...] = rng.uniform(0.5, 2, m.running_var.shape)
    x = Tensor(rng.normal(size=(2, cin, 6, 6)), requires_grad=True)
    assert gradcheck(lambda x, *ps: call_with(block, x, *ps), x, *block.parameters(),
                     atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_the_fused_sum_and_relu_equal_the_two_ops(backend):
    """The block's last sum and ReLU run as one op (nn.functional.add_relu): its output
    and every gradient equal those of ``relu(body + shortcut)`` made of the two ops."""
    manual_seed(0)
    block = nn.BasicBlock(3, 4, 2).double()
    x_data = np.random.default_rng(2).normal(size=(2, 3, 8, 8))
    results = []
    with kernels.use_backend(backend):
        for fused in (True, False):
            x = Tensor(x_data, requires_grad=True)
            block.zero_grad()
            if fused:
                out = block(x)
            else:
                body = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
                out = (body + block.shortcut(x)).relu()
            (out * Tensor(np.linspace(-1, 1, out.size).reshape(out.shape))).sum().backward()
            results.append([out.data, x.grad.data] + [p.grad.data for p in block.parameters()])
    for fused, apart in zip(*results):
        np.testing.assert_allclose(fused, apart, rtol=1e-12, atol=1e-12)


def test_gradcheck_catches_a_block_without_the_shortcut():
    """The negative control: a wrong backward (here: a forward whose graph drops the
    shortcut's gradient) must fail the check."""
    manual_seed(0)
    block = nn.BasicBlock(2, 2).double()
    x = Tensor(np.random.default_rng(0).normal(size=(2, 2, 5, 5)), requires_grad=True)

    def detached_shortcut(x):
        body = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        return block.relu(body + Tensor(x.data))     # same values, gradient cut
    assert not gradcheck(detached_shortcut, x, raise_exception=False)


def test_shapes_and_shortcut_choice():
    manual_seed(0)
    x = Tensor(np.zeros((2, 4, 9, 8), np.float32))
    down = nn.BasicBlock(4, 8, stride=2)
    assert down(x).shape == (2, 8, 5, 4)
    assert isinstance(down.shortcut, nn.Sequential)
    assert down.shortcut[0].kernel_size == (1, 1) and down.shortcut[0].stride == (2, 2)
    same = nn.BasicBlock(4, 4)
    assert isinstance(same.shortcut, nn.Identity) and same(x).shape == x.shape
    assert isinstance(nn.BasicBlock(4, 4, projection=True).shortcut, nn.Sequential)
    assert (down(x).data >= 0).all()                 # ends with a ReLU
    with pytest.raises(ValueError, match="identity shortcut cannot change 4 channels to 8"):
        nn.BasicBlock(4, 8, projection=False)
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        nn.BasicBlock(3, 3)(x)
    assert repr(down).startswith("BasicBlock(4, 8, stride=2")


@pytest.mark.torch
@pytest.mark.parametrize("stride", [1, 2])
def test_basic_block_matches_torch(stride):
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import torch_twin_untrained
    manual_seed(0)
    ours = nn.BasicBlock(3, 6, stride)
    theirs = torch_twin_untrained(torch, ours)
    state = ours.state_dict()
    assert set(state) == set(theirs.state_dict())                     # the same names
    theirs.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    a, b = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ya, yb = ours(a), theirs(b)
    (ya * ya).sum().backward()
    (yb * yb).sum().backward()
    np.testing.assert_allclose(ya.data, yb.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(a.grad.data, b.grad.numpy(), atol=1e-3, rtol=1e-3)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, dict(theirs.named_parameters())[name].grad.numpy(),
                                   atol=1e-3, rtol=1e-3)
