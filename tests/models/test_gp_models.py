"""The deep GP networks, layer by layer against the spec (shapes, parameter counts, init, penalties)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from app.models.gp import DLGWAS, DNNGP, ISRU, DeepGS
from app.models.gp.deepgs import pooled_length
from app.models.gp.dnngp import L2_COEFS, SameConv1d


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def shapes_by_layer(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, tuple(o.shape)))
             for name, mod in model.named_children()]
    model(x)
    for h in hooks:
        h.remove()
    return out


@pytest.mark.parametrize("k", [1, 2, 4, 20])
def test_same_conv_matches_keras_same_padding(k: int) -> None:
    # Keras "same" pads (k-1)//2 before and the rest after; PyTorch's padding="same" does the same.
    torch.manual_seed(0)
    ours = SameConv1d(3, 5, k)
    ref = nn.Conv1d(3, 5, k, padding="same")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 31)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert ours(x).shape == (2, 5, 31)


def test_dnngp_layers_and_parameter_count() -> None:
    torch.manual_seed(0)
    m = DNNGP(251)
    assert n_params(m) == 81_799  # the spec's count at k = 251
    s = shapes_by_layer(m, torch.randn(7, 251))
    assert s["conv1"] == (7, 64, 251) and s["conv2"] == (7, 64, 251) and s["conv3"] == (7, 64, 251)
    assert s["fc1"] == (7, 3) and s["fc2"] == (7, 1)
    assert m.fc1.in_features == 64 * 251
    # Keras BatchNorm(momentum 0.99, eps 1e-3).
    for bn in (m.bn1, m.bn2, m.bn3):
        assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)
    assert m.drop1.p == 0.5 and m.drop2.p == 0.5 and m.drop3.p == 0.5
    assert isinstance(m.act1, nn.ReLU) and isinstance(DNNGP(10, act="swish").act1, nn.SiLU)
    # (batch, 1, k) input too, and several traits.
    assert DNNGP(30, n_out=3)(torch.randn(4, 1, 30)).shape == (4, 3)
    # Truncated-normal conv init, std 0.05.
    w = DNNGP(251).conv2.weight.detach()
    assert w.abs().max() <= 0.1 + 1e-6 and 0.03 < float(w.std()) < 0.06
    with pytest.raises(ValueError):
        DNNGP(10, act="tanh")


def test_dnngp_l2_penalty_is_keras_sum() -> None:
    m = DNNGP(12)
    expect = sum(kc * c.weight.pow(2).sum() + bc * c.bias.pow(2).sum()
                 for c, (kc, bc) in zip((m.conv1, m.conv2, m.conv3), L2_COEFS, strict=True))
    with torch.no_grad():
        m.conv1.bias.fill_(1.0)
    expect = expect + 0.1 * 64  # conv1 bias L2 0.1, 64 biases now 1
    assert torch.allclose(m.l2_penalty(), expect)
    assert L2_COEFS == ((0.01, 0.1), (1e-3, 1e-5), (1e-3, 1e-4))


def test_deepgs_layers() -> None:
    torch.manual_seed(0)
    m_markers = 1279
    m = DeepGS(m_markers)
    length = (m_markers - 18 + 1) // 4
    assert pooled_length(m_markers) == length
    s = shapes_by_layer(m, torch.randn(5, m_markers))
    assert s["conv"] == (5, 8, m_markers - 17)
    assert s["pool"] == (5, 8, length)
    assert s["fc1"] == (5, 32) and s["fc2"] == (5, 1)
    assert m.conv.stride == (1,) and m.conv.padding == (0,)
    assert (m.drop1.p, m.drop2.p, m.drop3.p) == (0.2, 0.1, 0.05)
    assert n_params(m) == (8 * 18 + 8) + (8 * length * 32 + 32) + (32 + 1)
    for p in m.parameters():  # U(-0.01, 0.01)
        assert p.abs().max() <= 0.01
    # Output dropout acts in training only.
    m.eval()
    x = torch.randn(3, m_markers)
    assert torch.equal(m(x), m(x))
    with pytest.raises(ValueError, match="at least 21"):
        DeepGS(20)
    assert DeepGS(21)(torch.randn(2, 21)).shape == (2, 1)


def test_dlgwas_layers_and_parameter_count() -> None:
    torch.manual_seed(0)
    assert n_params(DLGWAS(4236)) == 45_121  # the spec's count at M = 4,236
    m = DLGWAS(300, n_out=2)
    s = shapes_by_layer(m, torch.randn(6, 4, 300))
    assert s["conv1"] == (6, 10, 300) and s["conv2"] == (6, 10, 300)
    assert s["shortcut"] == (6, 10, 300) and s["conv3"] == (6, 10, 300)
    assert s["fc"] == (6, 2) and s["isru"] == (6, 2)
    assert m.conv2.kernel_size == (20,) and m.conv1.kernel_size == (4,)
    assert (m.drop1.p, m.drop2.p, m.drop3.p) == (0.75, 0.75, 0.75)


def test_dlgwas_is_linear_before_isru_with_residual_shortcut() -> None:
    # "All convolutions linear": in eval mode the network before ISRU is affine in its input.
    torch.manual_seed(1)
    m = DLGWAS(50).eval()
    m.isru = nn.Identity()
    x1, x2 = torch.randn(3, 4, 50), torch.randn(3, 4, 50)
    zero = m(torch.zeros(3, 4, 50))
    assert torch.allclose(m(x1 + x2) - zero, (m(x1) - zero) + (m(x2) - zero), atol=1e-4)
    # The shortcut carries signal on its own: with the main path's second conv zeroed the output still moves.
    with torch.no_grad():
        m.conv2.weight.zero_()
        m.conv2.bias.zero_()
    assert not torch.allclose(m(x1), m(x2))


def test_dlgwas_l2_penalty() -> None:
    m = DLGWAS(20)
    expect = sum(0.1 * c.weight.pow(2).sum() + 0.01 * c.bias.pow(2).sum()
                 for c in (m.conv1, m.conv2, m.shortcut, m.conv3))
    assert torch.allclose(m.l2_penalty(), expect)
    assert float(DeepGS(30).l2_penalty()) == 0.0


def test_isru() -> None:
    f = ISRU(0.5)
    x = torch.tensor([-1e6, -1.0, 0.0, 2.0, 1e6])
    y = f(x)
    assert torch.allclose(y, x / torch.sqrt(1 + 0.5 * x * x))
    assert float(y.abs().max()) <= 1 / 0.5**0.5 + 1e-5
    assert float(ISRU(0.03)(torch.tensor(0.01))) == pytest.approx(0.01, rel=1e-4)  # ~identity near 0


def test_dnngp_batchnorm_is_torch_batchnorm1d_bit_for_bit() -> None:
    # computed as a 4-D batch norm for speed: outputs, gradients and running statistics must not change
    from app.models.gp.dnngp import BatchNorm1d

    torch.manual_seed(0)
    ours, ref = BatchNorm1d(6, eps=1e-3, momentum=0.01), nn.BatchNorm1d(6, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2.0)
        ours.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(9, 6, 31) * 3 + 1
    gy = torch.randn(9, 6, 31)
    got = []
    for bn in (ours, ref):
        xi = x.clone().requires_grad_(True)
        y = bn(xi)
        y.backward(gy)
        got.append((y.detach(), xi.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var))
    for a, b in zip(*got, strict=True):
        assert torch.equal(a, b)
    ours.eval()
    ref.eval()
    assert torch.equal(ours(x), ref(x))


def test_deepgs_pool_is_max_pool1d_with_its_gradient_and_ties() -> None:
    from app.models.gp.deepgs import WindowMaxPool1d

    torch.manual_seed(0)
    x = torch.randn(3, 8, 43)
    x[0, 0, :8] = 1.0  # ties inside a window: the gradient goes to the first, as max_pool1d's
    gy = torch.randn(3, 8, 10)
    grads = []
    for pool in (WindowMaxPool1d(4), nn.MaxPool1d(4, 4)):
        xi = x.clone().requires_grad_(True)
        y = pool(xi)
        y.backward(gy)
        grads.append((y.detach(), xi.grad))
    assert grads[0][0].shape == (3, 8, 10)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_channels_last_conv_is_the_same_convolution() -> None:
    torch.manual_seed(0)
    plain = SameConv1d(4, 10, 20)
    fast = SameConv1d(4, 10, 20, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(5, 4, 97)
    ya, yb = plain(x), fast(x)
    assert torch.allclose(ya, yb, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert torch.allclose(plain.weight.grad, fast.weight.grad, rtol=1e-4, atol=1e-5)
    assert all(c.channels_last for c in DLGWAS(50).convs())
