"""The models: size and compute of those of the results table; shapes, consistency, gradients
and checkpoints of those and of one model of each other family; what the builder says of
``model_args`` that do not fit."""
import io
import copy
import json
import os

import pytest
import torch

from wespeaker_py.config import ConfigError, ModelConfig, load_model_config
from wespeaker_py.config.fields import parse_block
from wespeaker_py.models import family_module_name, get_model, list_models, model_frontend
from wespeaker_py.models.complexity import (count_macs, count_params, recipe_feat_dim,
                                            recipe_input_dim, recipe_model_args)
from wespeaker_py.models.resnet_blocks import Bottleneck
from wespeaker_py.runtime import build_speaker_model
from wespeaker_py.runtime.builder import frontend_model_args

# The results table of ../shared/DESIGN.md (80-dim fbank, 200 frames):
# params in M as printed (head excluded), MACs in G or None where not given.
PUBLISHED = {
    "XVEC": ("4.61", 0.53),
    "ECAPA_TDNN_GLOB_c512": ("6.19", 1.04),
    "ECAPA_TDNN_GLOB_c1024": ("14.65", 2.65),
    "ResNet34": ("6.63", 4.55),
    "ResNet221": ("23.79", 21.29),
    "ResNet293": ("28.62", 28.10),
    "REPVGG_TINY_A0": ("6.26", 4.65),
    "CAMPPlus": ("7.18", 1.15),
    "ERes2Net34_Base": ("9.89", 3.43),
    "Res2Net34_Base": ("4.68", 1.77),
    "Gemini_DF_ResNet114": ("6.53", 5.42),
    "SimAM_ResNet34_ASP": ("25.2", None),
    "SimAM_ResNet100_ASP": ("50.2", None),
    "XI_VEC_ECAPA_TDNN_c512": ("5.9", 1.04),
    # WeSpeaker's VoxCeleb v2 page; 72 TFMel bins, 200 frames
    "ReDimNet2B6": ("12.3", 13.05),
}

# Above ~10 GMACs per 200 frames the CPU checks skip 1000 frames and use short
# inputs where the length is not the point.
HEAVY = {"ResNet221", "ResNet293", "SimAM_ResNet34_ASP", "SimAM_ResNet100_ASP", "ReDimNet2B6",
         "W2VBert_Adapter_MFA"}
BATCH = 2
MANIFEST = os.path.join(os.path.dirname(__file__), "data", "wespeaker_state_dict_keys.json")


def _manifest():
    with open(MANIFEST, encoding="utf-8") as handle:
        return json.load(handle)


def _features(batch, frames, feat_dim=80, seed=0):
    """Seeded ``[batch, frames, feat_dim]`` features (``feat_dim``: the model's input size)."""
    return torch.randn(batch, frames, feat_dim, generator=torch.Generator().manual_seed(seed))


def _first_model_of_each_unpublished_family():
    """The first model name of each family with no model in PUBLISHED, so that a new family
    gets the behaviour tests below (every name of every family would take minutes)."""
    published = {family_module_name(name) for name in PUBLISHED}
    first = {}
    for name in list_models():
        first.setdefault(family_module_name(name), name)
    return sorted(name for family, name in first.items() if family not in published)


@pytest.fixture(scope="module",
                params=sorted(PUBLISHED) + _first_model_of_each_unpublished_family())
def named_model(request):
    """(name, model in its training form, model_args), built once per model: each model of
    the results table, and one model of each family the table leaves out."""
    name = request.param
    model_args = recipe_model_args(name)
    torch.manual_seed(0)
    return name, get_model(name, **model_args), model_args


def _meta_model(name, deployed=False):
    with torch.device("meta"):
        return get_model(name, **recipe_model_args(name, deployed=deployed))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_param_count_matches_table(name):
    printed = PUBLISHED[name][0]
    decimals = len(printed.split(".")[1])
    millions = count_params(_meta_model(name, deployed=True)) / 1e6
    # The table rounds some figures and truncates others; accept either.
    truncated = int(millions * 10 ** decimals) / 10 ** decimals
    assert printed in (f"{millions:.{decimals}f}", f"{truncated:.{decimals}f}"), millions


@pytest.mark.parametrize("name", sorted(n for n, (_, macs) in PUBLISHED.items() if macs))
def test_macs_within_five_percent_of_table(name):
    published = PUBLISHED[name][1]
    macs = count_macs(_meta_model(name, deployed=True), num_frames=200,
                      feat_dim=recipe_feat_dim(name)) / 1e9
    assert abs(macs - published) / published < 0.05, macs


def test_forward_gives_finite_embeddings_for_any_length(named_model):
    name, model, model_args = named_model
    lengths = (150, 200) if name in HEAVY else (150, 200, 1000)
    model.eval()
    with torch.no_grad():
        for frames in lengths:
            embeddings = model(_features(BATCH, frames, recipe_input_dim(name)))
            assert embeddings.shape == (BATCH, model_args["embed_dim"]), frames
            assert torch.isfinite(embeddings).all(), frames


def test_embedding_alone_equals_embedding_in_batch(named_model):
    name, model, _ = named_model
    frames = 32 if name in HEAVY else 150
    # in float64, so that float32 rounding of the huge activations of some untrained
    # models (RepVGG's reach 1e5) cannot pass for one utterance leaking into another
    model = copy.deepcopy(model).double().eval()
    batch = _features(3, frames, recipe_input_dim(name), seed=1).double()
    with torch.no_grad():
        alone = model(batch[:1])
        together = model(batch)
    torch.testing.assert_close(alone[0], together[0], atol=1e-9, rtol=1e-9)


def test_backward_reaches_every_parameter(named_model):
    name, model, _ = named_model
    frames = 32 if name in HEAVY else 200
    model.train()
    model.zero_grad(set_to_none=True)
    embeddings = model(_features(BATCH, frames, recipe_input_dim(name), seed=2))
    # A random linear read-out: a plain sum would cancel through BatchNorm.
    direction = torch.randn(embeddings.shape, generator=torch.Generator().manual_seed(3))
    (embeddings * direction).sum().backward()
    unreached = [key for key, parameter in model.named_parameters()
                 if parameter.requires_grad and (parameter.grad is None
                                                 or not parameter.grad.abs().sum() > 0)]
    assert not unreached, f"no gradient reaches: {unreached[:10]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_saved_state_dict_reloads_strictly(named_model):
    name, model, model_args = named_model
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    reloaded = get_model(name, **model_args)
    reloaded.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    model.eval()
    reloaded.eval()
    features = _features(1, 32, recipe_input_dim(name), seed=4)
    with torch.no_grad():
        assert torch.equal(model(features), reloaded(features))


@pytest.mark.parametrize("name", sorted(set(PUBLISHED) | set(_manifest())))
def test_state_dict_keys_and_shapes_match_wespeaker(name):
    manifest = _manifest()
    assert name in manifest, f"{name} is missing from {MANIFEST} (tools/dump_state_dict_keys.py)"
    ours = [[key, list(value.shape)] for key, value in _meta_model(name).state_dict().items()]
    assert ours == manifest[name]


@pytest.mark.parametrize("pooling_func", ["TAP", "TSDP", "TSTP", "ASTP", "MHASTP", "MQMHASTP",
                                          "ASP", "XI"])
def test_pooling_func_selects_the_pooling_layer(pooling_func):
    model = get_model("ECAPA_TDNN_c512", feat_dim=80, embed_dim=192, pooling_func=pooling_func)
    assert type(model.pool).__name__ == pooling_func
    model.eval()
    with torch.no_grad():
        embeddings = model(_features(BATCH, 64))
    assert embeddings.shape == (BATCH, 192) and torch.isfinite(embeddings).all()


def test_two_emb_layer_returns_the_second_embedding():
    model = get_model("ResNet18", feat_dim=80, embed_dim=64, two_emb_layer=True).eval()
    captured = {}
    model.seg_2.register_forward_hook(lambda module, args, out: captured.update(out=out))
    with torch.no_grad():
        embeddings = model(_features(BATCH, 32))
    assert embeddings.shape == (BATCH, 64)
    assert torch.equal(embeddings, captured["out"])


def test_resnet_m_channels_narrows_the_model():
    wide = get_model("ResNet34", feat_dim=80, embed_dim=128)
    narrow = get_model("ResNet34", feat_dim=80, embed_dim=128, m_channels=16)
    assert narrow.conv1.out_channels == 16
    sizes = [sum(p.numel() for p in model.parameters()) for model in (narrow, wide)]
    assert sizes[0] < sizes[1] / 3
    narrow.eval()
    with torch.no_grad():
        assert narrow(_features(1, 120)).shape == (1, 128)


# --- WeSpeaker's generic names (get_speaker_model's getattr also finds the classes) ---------

_REDIMNET2_B0_STAGES = [[[1, 1], 2, 2, [[3, 3]], 36], [[2, 1], 3, 1, [[3, 3]], 36],
                        [[1, 2], 4, 1, [[3, 3]], 36], [[2, 1], 5, 1, [[3, 3]], 36],
                        [[1, 2], 4, 1, [[3, 3]], 18], [[2, 1], 3, 1, [[3, 3]], 18]]
_REDIMNET_B0_STAGES = [[1, 2, 1, [[3, 3]], 30], [2, 3, 2, [[3, 3]], 30], [1, 3, 3, [[3, 3]], 30],
                       [2, 4, 2, [[3, 3]], 10], [1, 3, 1, [[3, 3]], 10]]
# (generic name, its model_args as a YAML config gives them, the named variant they equal,
# the variant's model_args); small input sizes keep them fast on a CPU.
GENERIC_EQUALS_NAMED = [
    ("ECAPA_TDNN", {"channels": 512, "global_context_att": True, "feat_dim": 24,
                    "embed_dim": 16}, "ECAPA_TDNN_GLOB_c512", {"feat_dim": 24, "embed_dim": 16}),
    ("ResNet", {"block": "BasicBlock", "num_blocks": [3, 4, 6, 3], "m_channels": 8,
                "feat_dim": 16, "embed_dim": 16},
     "ResNet34", {"m_channels": 8, "feat_dim": 16, "embed_dim": 16}),
    ("ResNet", {"block": Bottleneck, "num_blocks": [3, 4, 6, 3], "m_channels": 8,
                "feat_dim": 16, "embed_dim": 16, "two_emb_layer": True},
     "ResNet50", {"m_channels": 8, "feat_dim": 16, "embed_dim": 16, "two_emb_layer": True}),
    ("ERes2Net", {"m_channels": 64, "num_blocks": [3, 4, 6, 3], "baseWidth": 24, "scale": 3,
                  "expansion": 4, "feat_dim": 16, "embed_dim": 16},
     "ERes2Net34_aug", {"feat_dim": 16, "embed_dim": 16}),
    ("Res2Net", {"m_channels": 32, "num_blocks": [3, 4, 6, 3], "feat_dim": 16, "embed_dim": 16},
     "Res2Net34_Base", {"feat_dim": 16, "embed_dim": 16}),
    ("Gemini_DF_ResNet", {"depths": [3, 3, 9, 3], "dims": [32, 32, 64, 128, 256],
                          "feat_dim": 16, "embed_dim": 16},
     "Gemini_DF_ResNet60", {"feat_dim": 16, "embed_dim": 16}),
    # WeSpeaker's defaults are B2's but with basic_resnet blocks
    ("ReDimNet", {"block_2d_type": "convnext_like", "feat_dim": 24, "embed_dim": 16},
     "ReDimNetB2", {"feat_dim": 24, "embed_dim": 16}),
    ("ReDimNet", {"C": 10, "block_2d_type": "basic_resnet", "group_divisor": 1,
                  "stages_setup": _REDIMNET_B0_STAGES, "feat_dim": 60, "embed_dim": 16},
     "ReDimNetB0", {"feat_dim": 60, "embed_dim": 16}),
    # ReDimNet2Wrap's default stages are B4's
    ("ReDimNet2Wrap", {"C": 32, "feat_dim": 24, "embed_dim": 16},
     "ReDimNet2B4", {"feat_dim": 24, "embed_dim": 16}),
    ("ReDimNet2Custom", {"C": 12, "out_channels": 64, "stages_setup": _REDIMNET2_B0_STAGES,
                         "feat_dim": 24, "embed_dim": 16},
     "ReDimNet2B0", {"feat_dim": 24, "embed_dim": 16}),
]
GENERIC_NAMES = sorted({case[0] for case in GENERIC_EQUALS_NAMED})


def _shapes(model):
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


@pytest.mark.parametrize("generic,generic_args,named,named_args", GENERIC_EQUALS_NAMED,
                         ids=[f"{case[0]}={case[2]}" for case in GENERIC_EQUALS_NAMED])
def test_generic_name_builds_the_named_variant(generic, generic_args, named, named_args):
    torch.manual_seed(0)
    reference = get_model(named, **named_args).eval()
    model = get_model(generic, **generic_args).eval()
    assert _shapes(model) == _shapes(reference)
    model.load_state_dict(reference.state_dict(), strict=True)
    features = _features(2, 32, named_args["feat_dim"], seed=5)
    with torch.no_grad():
        expected, got = reference(features), model(features)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7), (got - expected).abs().max()


@pytest.mark.parametrize("generic", GENERIC_NAMES)
def test_generic_name_refuses_an_unknown_argument_naming_it(generic):
    model_args = next(args for name, args, _, _ in GENERIC_EQUALS_NAMED if name == generic)
    # base_width: our ERes2Net's own spelling, which WeSpeaker's (baseWidth) replaces
    bad_key = "base_width" if generic == "ERes2Net" else "chanels"
    with torch.device("meta"), pytest.raises(TypeError, match=bad_key):
        get_model(generic, **model_args, **{bad_key: 1})


def test_generic_names_are_listed_apart_and_follow_their_family(tmp_path):
    assert sorted(set(list_models(generic=True)) - set(list_models())) == GENERIC_NAMES
    assert recipe_feat_dim("ReDimNet2Wrap") == 72 and model_frontend("ReDimNet2Custom") == "tfmel"
    assert recipe_model_args("Gemini_DF_ResNet") == {"feat_dim": 80, "embed_dim": 256}
    with pytest.raises(ValueError, match="'block'.*'Basic'"):
        get_model("ResNet", block="Basic", num_blocks=[1, 1, 1, 1])
    # a config naming a generic model: its model_args reach the constructor as YAML gives them
    config = tmp_path / "config.yaml"
    config.write_text("model: ResNet\nmodel_args:\n  block: BasicBlock\n"
                      "  num_blocks: [1, 1, 1, 1]\n  m_channels: 4\n  feat_dim: 16\n"
                      "  embed_dim: 8\n  emb_dim: 8\n")
    with pytest.raises(ConfigError, match="'model_args' does not fit ResNet.*emb_dim"):
        build_speaker_model(load_model_config(str(config)))
    config.write_text(config.read_text().replace("  emb_dim: 8\n", ""))
    config.write_text(config.read_text().replace("BasicBlock", "Basic"))
    with pytest.raises(ConfigError, match="'model_args' does not fit ResNet.*'block'.*'Basic'"):
        build_speaker_model(load_model_config(str(config)))
    config.write_text(config.read_text().replace("Basic", "BasicBlock"))
    model = build_speaker_model(load_model_config(str(config)))
    assert model.layer4[0].conv1.out_channels == 32 and model.seg_1.out_features == 8


# --- model_args the builder refuses: the key, and what would fit ------------------------------

def _model_config(model, model_args):
    return parse_block(ModelConfig, {"model": model, "model_args": model_args}, "")


@pytest.mark.parametrize("model, model_args, expected", [
    ("XVEC", {"feat_dim": 80, "embed_dims": 8},
     r"'model_args.embed_dims' is no argument of XVEC; did you mean 'embed_dim'\? \(XVEC takes "
     r"feat_dim, hid_dim, stats_dim, embed_dim, pooling_func\)$"),
    ("ResNet34", {"feat_dim": 80, "embed_dim": 8, "zzz": 1},
     r"'model_args.zzz' is no argument of ResNet34 \(ResNet34 takes feat_dim, embed_dim, "
     r"pooling_func, two_emb_layer, m_channels\)$"),
], ids=["class", "factory"])
def test_an_argument_the_model_lacks_is_named_with_the_closest_and_all_it_takes(
        model, model_args, expected):
    with pytest.raises(ConfigError, match=rf"^config key 'model_args' does not fit {model}: "
                                          rf"{expected}"):
        build_speaker_model(_model_config(model, model_args))


def test_an_unknown_pooling_func_names_its_key():
    with pytest.raises(ConfigError, match=r"^config key 'model_args.pooling_func' is 'TSPT', "
                                          r"which does not fit XVEC: no pooling layer has that "
                                          r"name; choose one of ASP, "):
        build_speaker_model(_model_config("XVEC", {"feat_dim": 80, "embed_dim": 8,
                                                   "pooling_func": "TSPT"}))


def test_a_feat_dim_off_a_new_front_end_names_that_front_ends_block():
    # a front-end added to the config (here mfcc) that the builder has no entry for
    with pytest.raises(ConfigError, match=r"^config key 'model_args.feat_dim' is 40 but the "
                                          r"front-end makes 30-dim features "
                                          r"\(dataset_args.mfcc_args\)$"):
        frontend_model_args({"feat_dim": 40}, "mfcc", 30)
