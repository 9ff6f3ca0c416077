"""Pooling layers: output sizes, closed-form statistics, invariance to frame order.

Every layer of POOLING_LAYERS is checked against the contract in the pooling module's
docstring, so a new layer is tested without being listed here.
"""
import pytest
import torch

from wespeaker_py.models import ModelArgError
from wespeaker_py.models.pooling import (MOMENT_POOLINGS, POOLING_LAYERS, get_pooling,
                                         pool_from_moments, time_moments)

CHANNELS, FREQ, FRAMES = 16, 4, 30
# Every layer with its defaults, and the variants some arguments select.
ALL = [(name, {}) for name in sorted(POOLING_LAYERS)] + [
    ("ASTP", {"global_context_att": True}), ("MHASTP", {"head_num": 4, "layer_num": 3, "d_s": 2}),
    ("XI", {"stddev": True})]


def _input(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _shapes(module):
    return [(key, tuple(value.shape)) for key, value in module.state_dict().items()]


@pytest.mark.parametrize("name,extra,four_d", [
    (name, extra, four_d) for name, extra in ALL for four_d in (False, True)])
def test_output_size_matches_get_out_dim(name, extra, four_d):
    shape = (3, CHANNELS, FREQ, FRAMES) if four_d else (3, CHANNELS * FREQ, FRAMES)
    pooling = get_pooling(name, in_dim=CHANNELS * FREQ, **extra).eval()
    x = _input(*shape)
    out = pooling(x)
    assert out.shape == (3, pooling.get_out_dim())
    assert torch.isfinite(out).all()
    # a 4-D input is pooled as its channel and frequency axes flattened together
    torch.testing.assert_close(out, pooling(x.reshape(3, CHANNELS * FREQ, FRAMES)))


@pytest.mark.parametrize("name", sorted(POOLING_LAYERS))
def test_every_layer_takes_the_keywords_models_pass_with_any_pooling_func(name):
    # ECAPA-TDNN and ReDimNet pass global_context_att, W2VBert_Adapter_MFA hidden_dim
    pooling = get_pooling(name, in_dim=CHANNELS, global_context_att=True, hidden_dim=8).eval()
    assert pooling(_input(3, CHANNELS, FRAMES)).shape == (3, pooling.get_out_dim())


@pytest.mark.parametrize("name", sorted(POOLING_LAYERS))
def test_every_layer_ignores_a_keyword_it_does_not_use(name):
    plain = get_pooling(name, in_dim=CHANNELS)
    given_more = get_pooling(name, in_dim=CHANNELS, an_option_of_another_pooling=3)
    assert _shapes(given_more) == _shapes(plain)
    assert given_more.get_out_dim() == plain.get_out_dim()


@pytest.mark.parametrize("name,extra", ALL)
def test_output_ignores_frame_order(name, extra):
    pooling = get_pooling(name, in_dim=CHANNELS, **extra).eval()
    x = _input(2, CHANNELS, FRAMES)
    shuffled = x[:, :, torch.randperm(FRAMES, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        torch.testing.assert_close(pooling(x), pooling(shuffled), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", MOMENT_POOLINGS, ids=lambda layer: layer.__name__)
@pytest.mark.parametrize("four_d", [False, True])
def test_a_moment_pooling_is_computed_from_the_moments_of_its_input(layer, four_d):
    shape = (2, CHANNELS, FREQ, FRAMES) if four_d else (2, CHANNELS * FREQ, FRAMES)
    pooling = get_pooling(layer.__name__, in_dim=CHANNELS * FREQ)
    x = _input(*shape)
    torch.testing.assert_close(pool_from_moments(pooling, *time_moments(x)), pooling(x),
                               atol=1e-5, rtol=1e-5)


def test_tstp_is_mean_and_unbiased_std():
    x = _input(2, CHANNELS, FRAMES)
    out = get_pooling("TSTP", in_dim=CHANNELS)(x)
    torch.testing.assert_close(out[:, :CHANNELS], x.mean(dim=-1))
    torch.testing.assert_close(out[:, CHANNELS:], x.std(dim=-1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,extra,last_layer", [
    ("ASTP", {}, "linear2"),
    ("MHASTP", {"head_num": 2}, "heads_att_trans.0.att_1"),
])
def test_uniform_attention_gives_plain_statistics(name, extra, last_layer):
    pooling = get_pooling(name, in_dim=CHANNELS, **extra)
    for head in range(getattr(pooling, "head_num", 1)):
        layer = pooling.get_submodule(last_layer.replace(".0.", f".{head}."))
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    x = _input(2, CHANNELS, FRAMES)
    out = pooling(x)
    if name == "ASTP":
        mean, std = out[:, :CHANNELS], out[:, CHANNELS:]
    else:  # per head: [mean, std] of its channel group
        groups = out.reshape(2, 2, 2, CHANNELS // 2)
        mean, std = groups[:, :, 0].reshape(2, -1), groups[:, :, 1].reshape(2, -1)
    torch.testing.assert_close(mean, x.mean(dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, x.std(dim=-1, unbiased=False), atol=1e-4, rtol=1e-4)


def test_xi_posterior_mean_with_equal_precisions_averages_frames_and_prior():
    pooling = get_pooling("XI", in_dim=CHANNELS).eval()
    torch.nn.init.zeros_(pooling.lin2.weight)
    # softplus(b) = 1 makes every frame's log-precision 0, the same as the prior's.
    torch.nn.init.constant_(pooling.lin2.bias, float(torch.log(torch.expm1(torch.tensor(1.0)))))
    with torch.no_grad():
        pooling.prior_mean.normal_()
    x = _input(2, CHANNELS, FRAMES)
    with torch.no_grad():
        out = pooling(x)
    expected = (x.sum(dim=-1) + pooling.prior_mean) / (FRAMES + 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_xi_trusts_frames_more_than_a_weak_prior():
    pooling = get_pooling("XI", in_dim=CHANNELS).eval()
    with torch.no_grad():
        pooling.prior_logprec.fill_(-15.0)
        pooling.prior_mean.fill_(100.0)
        out = pooling(_input(2, CHANNELS, FRAMES))
    assert out.abs().max() < 10.0


def test_xi_names_the_input_size_it_expects():
    pooling = get_pooling("XI", in_dim=CHANNELS * FREQ)
    with pytest.raises(ValueError, match=r"C\*F = 64, got \(3, 16, 2, 30\)"):
        pooling(_input(3, CHANNELS, 2, FRAMES))


def test_asp_from_resnet_geometry():
    pooling = get_pooling("ASP", in_planes=2, acoustic_dim=16)  # 2 * 8 channels x 2 bins
    assert pooling.get_out_dim() == 2 * 16 * 2
    assert pooling(_input(3, 16, 2, FRAMES)).shape == (3, 64)


def test_unknown_pooling_is_a_model_arg_error_for_pooling_func():
    with pytest.raises(ModelArgError, match="pooling_func is 'STAP': no pooling layer has that "
                                            "name; choose one of ASP, ASTP, ") as raised:
        get_pooling("STAP", in_dim=8)
    assert (raised.value.arg, raised.value.value) == ("pooling_func", "STAP")


def _astp_in_wespeakers_order(pooling, x):
    """ASTP computed step by step as WeSpeaker's layer does, on the contiguous ``[B, C, T]``
    that its encoders' convolutions hand it."""
    x = x.reshape(x.shape[0], -1, x.shape[-1]).contiguous()
    attention_in = x
    if pooling.global_context_att:
        context_mean = torch.mean(x, dim=-1, keepdim=True).expand_as(x)
        context_std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + 1e-7).expand_as(x)
        attention_in = torch.cat((x, context_mean, context_std), dim=1)
    alpha = torch.softmax(pooling.linear2(torch.tanh(pooling.linear1(attention_in))), dim=2)
    mean = torch.sum(alpha * x, dim=2)
    var = torch.sum(alpha * (x ** 2), dim=2) - mean ** 2
    return torch.cat([mean, torch.sqrt(var.clamp(min=1e-7))], dim=1)


@pytest.mark.parametrize("global_context_att", [False, True])
@pytest.mark.parametrize("layout", ["frames_first", "channels_first", "four_d"])
def test_astp_is_bit_identical_to_wespeakers_order(global_context_att, layout):
    # frames_first: [B, T, D] frames (an SSL front-end's) seen as [B, D, T], a strided view
    inputs = {"frames_first": _input(3, FRAMES, CHANNELS * FREQ).transpose(1, 2),
              "channels_first": _input(3, CHANNELS * FREQ, FRAMES),
              "four_d": _input(3, CHANNELS, FREQ, FRAMES)}
    pooling = get_pooling("ASTP", in_dim=CHANNELS * FREQ,
                          global_context_att=global_context_att).eval()
    with torch.no_grad():
        got = pooling(inputs[layout])
        expected = _astp_in_wespeakers_order(pooling, inputs[layout])
    assert torch.equal(got, expected), (got - expected).abs().max()
