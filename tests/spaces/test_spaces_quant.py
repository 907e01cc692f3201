from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune.errors import ConfigError
from autoprune.spaces import QuantConv2d, QuantLinear
from autoprune.spaces._quant import fake_quantize_activation, fake_quantize_weight


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weights_have_at_most_2_pow_bits_levels_per_output_channel(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 32, 3, 3)
    q = fake_quantize_weight(w, bits)
    for c in range(w.shape[0]):
        levels = q[c].unique()
        assert levels.numel() <= 2**bits
        scale = w[c].abs().max() / (2 ** (bits - 1) - 1)
        assert torch.allclose(levels / scale, (levels / scale).round(), atol=1e-4)  # on the grid
        assert torch.isclose(q[c].abs().max(), w[c].abs().max())  # symmetric, max kept
    assert (q - w).abs().max() <= (w.abs().amax(dim=(1, 2, 3)).max() / (2 ** (bits - 1) - 1)) / 2


def test_32_bits_is_float() -> None:
    w = torch.randn(4, 3)
    assert fake_quantize_weight(w, 32) is w
    assert fake_quantize_activation(w, 32, torch.tensor(0.0), torch.tensor(1.0)) is w


def test_straight_through_gradient() -> None:
    w = torch.randn(8, 4, requires_grad=True)
    (fake_quantize_weight(w, 4) * 3).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, 3.0))
    x = torch.randn(10, requires_grad=True)
    fake_quantize_activation(x, 4, torch.tensor(-1.0), torch.tensor(1.0)).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_activation_ranges_unsigned_and_signed() -> None:
    x = torch.linspace(0, 3, 101)
    q = fake_quantize_activation(x, 2, torch.tensor(0.0), torch.tensor(3.0))
    assert set(q.tolist()) == {0.0, 1.0, 2.0, 3.0}  # unsigned: 4 levels over [0, max]
    xs = torch.linspace(-2, 2, 101)
    qs = fake_quantize_activation(xs, 3, torch.tensor(-2.0), torch.tensor(1.0))
    levels = sorted(set(qs.tolist()))
    assert len(levels) == 7 and levels[0] == -2.0 and levels[-1] == 2.0  # symmetric, narrow


def test_quant_conv_forward_is_conv_of_quantized_input_and_weight() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    q = QuantConv2d.from_float(conv, weight_bits=4, activation_bits=8)
    assert q.weight is conv.weight and q.bias is conv.bias  # shared, not copied
    x = torch.relu(torch.randn(2, 3, 8, 8))
    out = q(x)  # training mode: observes the batch range first
    assert float(q.act_min) == 0.0 and float(q.act_max) == float(x.max())
    qx = fake_quantize_activation(x, 8, q.act_min, q.act_max)
    assert qx.unique().numel() <= 2**8
    ref = F.conv2d(qx, fake_quantize_weight(conv.weight, 4), conv.bias, padding=1)
    assert torch.allclose(out, ref, atol=1e-6)


def test_activation_range_is_an_ema_in_training_and_frozen_in_eval() -> None:
    q = QuantLinear.from_float(nn.Linear(4, 2), weight_bits=8, activation_bits=8, momentum=0.5)
    q(torch.full((1, 4), 2.0))
    q(torch.full((1, 4), 4.0))
    assert float(q.act_max) == pytest.approx(3.0) and float(q.act_min) == pytest.approx(3.0)
    q.eval()
    q(torch.full((1, 4), 100.0))
    assert float(q.act_max) == pytest.approx(3.0)
    state = q.state_dict()
    assert {"act_min", "act_max", "act_observed"} <= set(state)
    fresh = QuantLinear(4, 2, weight_bits=8, activation_bits=8)
    fresh.load_state_dict(state)
    assert float(fresh.act_max) == pytest.approx(3.0) and bool(fresh.act_observed)


def test_quantized_layers_are_still_conv_and_linear_and_export() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        QuantConv2d.from_float(nn.Conv2d(1, 4, 3), weight_bits=4, activation_bits=8),
        nn.ReLU(),
        nn.Flatten(),
        QuantLinear.from_float(nn.Linear(4 * 6 * 6, 3), weight_bits=8, activation_bits=4),
    )
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[3], nn.Linear)
    x = torch.randn(2, 1, 8, 8)
    model(x)  # calibrate
    model.eval()
    expected = model(x)
    exported = torch.export.export(model, (x,)).module()
    assert torch.allclose(exported(x), expected, atol=1e-6)


@pytest.mark.parametrize("bits", [1, 0, 17, 64, 8.0])
def test_bad_bits(bits: object) -> None:
    with pytest.raises(ConfigError, match="weight_bits"):
        QuantLinear(4, 2, weight_bits=bits)  # type: ignore[arg-type]
