"""Family-specific checks for CAM++, ERes2Net, Res2Net, RepVGG, Gemini DF-ResNet and SimAM-ResNet.

The generic checks every model gets (parameter counts, shapes, batching,
backward, strict reload) are in test_models.py.
"""
import math

import pytest
import torch

from wespeaker_py.models import (campplus, eres2net, gemini_dfresnet, get_model, repvgg, res2net,
                                 samresnet)
from wespeaker_py.models.campplus import CAMLayer
from wespeaker_py.models.repvgg import RepVGG, convert_to_deploy

FAMILIES = (campplus, eres2net, res2net, repvgg, gemini_dfresnet, samresnet)


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(shape, generator=generator) * 0.4 + 0.2)
                    module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)


def _fbank(batch: int, frames: int, feat_dim: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, feat_dim, generator=torch.Generator().manual_seed(seed))


# --- every variant of these families -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for family in FAMILIES for n in family.MODELS))
def test_every_variant_builds_and_maps_to_embed_dim(name):
    # On the meta device nothing is allocated or computed, so even the 68M-parameter
    # variants are checked for consistent layer shapes in milliseconds.
    with torch.device("meta"):
        model = get_model(name, feat_dim=80, embed_dim=192)
        out = model(torch.empty(2, 123, 80))
    assert not isinstance(out, tuple)
    assert tuple(out.shape) == (2, 192)


# --- RepVGG re-parameterisation ------------------------------------------------------------

def _convert_and_check(model: torch.nn.Module, x: torch.Tensor,
                       atol: float = 1e-4) -> torch.nn.Module:
    """Convert ``model`` to deploy form and assert it computes the same embeddings on ``x``."""
    _randomise_batchnorm(model)
    model.eval()
    deployed = convert_to_deploy(model)
    with torch.no_grad():
        expected, got = model(x), deployed(x)
    assert torch.allclose(got, expected, atol=atol, rtol=0), (got - expected).abs().max()
    # The original model keeps its branches; the copy has only fused convolutions.
    assert any(".rbr_dense." in key for key in model.state_dict())
    assert not any(".rbr_dense" in key or ".rbr_1x1." in key or ".rbr_identity." in key
                   for key in deployed.state_dict())
    return deployed


def test_repvgg_tiny_a0_deploy_conversion_is_exact_and_matches_table():
    model = get_model("REPVGG_TINY_A0", feat_dim=80, embed_dim=256, pooling_func="TSTP")
    x = _fbank(2, 40)
    deployed = _convert_and_check(model, x)
    assert round(sum(p.numel() for p in deployed.parameters()) / 1e6, 2) == 6.26
    # The converted model has the layout of one built directly in deploy form,
    # so a converted WeSpeaker checkpoint loads into get_model(..., deploy=True).
    built = get_model("REPVGG_TINY_A0", feat_dim=80, embed_dim=256, pooling_func="TSTP",
                      deploy=True)
    built.load_state_dict(deployed.state_dict(), strict=True)
    built.eval()
    with torch.no_grad():
        assert torch.equal(built(x), deployed(x))


def test_repspk_block_conversion_folds_dilated_branch_into_5x5():
    model = RepVGG(block="RepSPK", num_blocks=(1, 2, 2, 1), strides=(1, 1, 2, 2, 2),
                   width_multiplier=(0.25, 0.25, 0.25, 0.25), pooling_func="TSTP",
                   feat_dim=40, embed_dim=32)
    deployed = _convert_and_check(model, _fbank(2, 37, feat_dim=40), atol=1e-5)
    assert deployed.stage1[0].rbr_reparam.kernel_size == (5, 5)


def test_grouped_se_repvgg_conversion_is_exact():
    # Groupwise layers exercise the grouped identity kernel; SE sits after the fused conv.
    model = RepVGG(num_blocks=(2, 2, 2, 1), strides=(1, 1, 2, 2, 2),
                   width_multiplier=(0.25, 0.25, 0.25, 0.25), override_groups_map={2: 2, 4: 4},
                   use_se=True, pooling_func="ASTP", feat_dim=40, embed_dim=32)
    deployed = _convert_and_check(model, _fbank(2, 37, feat_dim=40), atol=1e-5)
    assert deployed.stage1[1].rbr_reparam.groups == 2
    assert deployed.stage2[1].rbr_reparam.groups == 4


def test_convert_to_deploy_inplace_and_idempotent():
    model = RepVGG(num_blocks=(1, 1, 1, 1), strides=(1, 1, 2, 2, 2),
                   width_multiplier=(0.25, 0.25, 0.25, 0.25), pooling_func="TSTP",
                   feat_dim=40, embed_dim=16).eval()
    x = _fbank(1, 20, feat_dim=40)
    with torch.no_grad():
        before = model(x)
    assert convert_to_deploy(model, inplace=True) is model
    assert model.deploy and model.stage0.deploy
    convert_to_deploy(model, inplace=True)  # a second conversion changes nothing
    with torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-5, rtol=0)


# --- CAM++ -----------------------------------------------------------------------------------

def test_cam_segment_means_average_each_100_frame_segment():
    x = torch.randn(2, 3, 250)
    means = CAMLayer.segment_means(x)
    assert means.shape == x.shape
    for start in (0, 100, 200):  # the last segment holds only 50 frames
        segment = x[..., start:start + 100]
        expected = segment.mean(dim=-1, keepdim=True).expand_as(segment)
        assert torch.allclose(means[..., start:start + 100], expected, atol=1e-6)


def test_campplus_odd_frame_count_alone_and_in_batch():
    # 151 frames: odd for the stride-2 TDNN front and a partial last CAM segment.
    model = get_model("CAMPPlus", feat_dim=80, embed_dim=512).eval()
    _randomise_batchnorm(model)
    x = _fbank(2, 151)
    with torch.no_grad():
        together = model(x)
        alone = model(x[1:])
    assert together.shape == (2, 512) and torch.isfinite(together).all()
    assert torch.allclose(together[1:], alone, atol=1e-4, rtol=1e-4)


# --- frame-level feature shapes ----------------------------------------------------------------

# name -> (frame-level feature size, frames after the model's time striding)
_FRAME_LEVEL = {
    "CAMPPlus": (512, lambda t: math.ceil(t / 2)),  # stride-2 TDNN front
    "ERes2Net34_Base": (512 * 10, lambda t: math.ceil(t / 8)),
    "Res2Net34_Base": (512 * 10, lambda t: math.ceil(t / 8)),
    "REPVGG_TINY_A0": (256 * 10, lambda t: math.ceil(t / 8)),
    # Gemini's T14c strides: only the second downsampling halves time; frequency 80 -> 5.
    "Gemini_DF_ResNet114": (256 * 5, lambda t: math.ceil(t / 2)),
}


@pytest.mark.parametrize("name", sorted(_FRAME_LEVEL))
@pytest.mark.parametrize("frames", [150, 200, 1000])
def test_frame_level_features_follow_the_time_strides(name, frames):
    # 150 frames give odd sizes (75, 38, 19) where ERes2Net's bottom-up fusion joins
    # stages; on the meta device a misalignment still raises, at no compute cost.
    dim, frames_out = _FRAME_LEVEL[name]
    with torch.device("meta"):
        model = get_model(name, feat_dim=80)
        frame_feat = model.frame_level_features(torch.empty(2, frames, 80))
        embed = model(torch.empty(2, frames, 80))
    assert tuple(frame_feat.shape) == (2, frames_out(frames), dim)
    assert embed.shape[0] == 2


@pytest.mark.parametrize("name", ["Res2Net34_Base", "ERes2Net34_Base", "Gemini_DF_ResNet60"])
def test_two_emb_layer_returns_the_second_embedding(name):
    model = get_model(name, feat_dim=80, embed_dim=64, two_emb_layer=True).eval()
    with torch.no_grad():
        model.seg_2.weight.zero_()
        model.seg_2.bias.copy_(torch.arange(64.0))
        out = model(_fbank(2, 30))
    assert torch.equal(out, torch.arange(64.0).expand(2, 64))


# --- SimAM-ResNet ----------------------------------------------------------------------------

def test_simam_accepts_feat_dim_as_acoustic_dim():
    with torch.device("meta"):
        by_feat_dim = get_model("SimAM_ResNet34_ASP", feat_dim=40, embed_dim=128)
        by_acoustic_dim = get_model("SimAM_ResNet34_ASP", acoustic_dim=40, embed_dim=128)
    assert by_feat_dim.pooling.feature_dim == by_acoustic_dim.pooling.feature_dim == 64 * 8 * 5
    with pytest.raises(ValueError, match="disagree"):
        get_model("SimAM_ResNet34_ASP", feat_dim=40, acoustic_dim=80)
