"""Building a speaker model from a config: what is wrong is named by its config key.

An unknown model name names ``model``; a feature size a model cannot split names
``model_args.feat_dim`` at build time (not a shape error at the first forward); a
``feat_dim`` left to the front-end is filled the same way for training and loading.
"""
import os
import re

import pytest
import torch
import yaml

from train_helpers import CPU_WORLD
from wespeaker_py.config import ConfigError, ModelConfig, load_config
from wespeaker_py.config.fields import parse_block
from wespeaker_py.config.loading import read_yaml
from wespeaker_py.frontend.factory import build_frontend, model_feat_dim
from wespeaker_py.models import get_model
from wespeaker_py.models.projections import get_projection
from wespeaker_py.runtime import build_speaker_model, load_embedder
from wespeaker_py.runtime import builder
from wespeaker_py.train.plan import resolve

RESNET34_CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "conf", "resnet34.yaml")


def _config(model, model_args, **dataset_args):
    return parse_block(ModelConfig, {"model": model, "model_args": model_args,
                                     "dataset_args": dataset_args}, "")


def _fbank(bins):
    return {"fbank_args": {"num_mel_bins": bins}}


# ---- the model name --------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("ResNet35", "ResNet34"),        # a family prefix: the family's names
    ("Resnet34", "ResNet34"),        # no family: the closest names
    ("Foo", "ResNet"),               # nothing close: the families' prefixes
])
def test_an_unknown_model_names_the_model_key_and_the_known_names(name, expected):
    with pytest.raises(ConfigError) as raised:
        build_speaker_model(_config(name, {"feat_dim": 80, "embed_dim": 8}, **_fbank(80)))
    message = str(raised.value)
    assert f"'model' is {name!r}" in message and expected in message
    assert "model_args" not in message


def test_an_unknown_model_is_refused_before_training_reads_any_data(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(dict(read_yaml(RESNET34_CONF), model="ResNet35")))
    config = load_config(str(path), [("train_data", str(tmp_path / "missing.list")),
                                     ("train_label", str(tmp_path / "missing_utt2spk")),
                                     ("data_type", "raw")])
    with pytest.raises(ConfigError, match="'model' is 'ResNet35'.*ResNet34"):
        resolve(config, CPU_WORLD)


def test_an_unknown_argument_still_names_model_args():
    with pytest.raises(ConfigError, match="'model_args' does not fit XVEC.*foo"):
        build_speaker_model(_config("XVEC", {"feat_dim": 80, "embed_dim": 8, "foo": 1},
                                    **_fbank(80)))


# ---- feature sizes a model cannot split --------------------------------------------------------

def _suggested(message):
    return [int(value) for value in re.search(r"nearby: ([\d, ]+)", message).group(1).split(", ")]


@pytest.mark.parametrize("name", ["ReDimNetB0", "ReDimNetB1", "ReDimNet2B0"])
def test_a_redimnet_feat_dim_it_cannot_split_names_feat_dim_and_values_that_work(name):
    frontend = {"frontend": "tfmel", "cmvn": False, "tfmel_args": {"n_mels": 80}} \
        if name.startswith("ReDimNet2") else _fbank(80)
    with pytest.raises(ConfigError, match=r"'model_args.feat_dim' is 80, which does not fit "
                                          rf"{name}: ") as raised:
        build_speaker_model(_config(name, {"feat_dim": 80, "embed_dim": 8}, **frontend))
    suggested = _suggested(str(raised.value))
    assert suggested and 80 not in suggested
    for feat_dim in suggested:
        with torch.device("meta"):
            get_model(name, feat_dim=feat_dim, embed_dim=8)


@pytest.mark.parametrize("name, stride", [("ResNet18", 8), ("Gemini_DF_ResNet60", 16)])
def test_a_2d_model_refuses_a_feat_dim_its_pooling_misses(name, stride):
    bad = stride + stride // 2
    with pytest.raises(ConfigError, match=rf"'model_args.feat_dim' is {bad}, .*multiple of "
                                          rf"{stride}"):
        build_speaker_model(_config(name, {"feat_dim": bad, "embed_dim": 8}, **_fbank(bad)))
    model = get_model(name, feat_dim=2 * stride, embed_dim=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 20, 2 * stride)).shape == (1, 8)


# ---- feat_dim left to the front-end: training and loading share the rule -----------------------

WHISPER = {"frontend": "whisper_encoder", "cmvn": False,
           "whisper_encoder_args": {"frozen": True, "n_mels": 80, "num_blocks": 2,
                                    "output_size": 16, "n_head": 2, "layer_st": 0,
                                    "layer_ed": 1}}


@pytest.mark.parametrize("model_args", [{"embed_dim": 8}, {"feat_dim": -1, "embed_dim": 8}])
def test_a_whisper_model_with_feat_dim_left_to_the_front_end_loads(tmp_path, model_args):
    # WeSpeaker's whisper_PMFA_stage0/1.yaml leave feat_dim out; its trainer fills it in
    config = _config("Whisper_PMFA_large_v2", model_args, **WHISPER)
    frontend = build_frontend(config.dataset_args, pretrained=False).eval()
    torch.manual_seed(0)
    model = get_model("Whisper_PMFA_large_v2", feat_dim=model_feat_dim(frontend),
                      embed_dim=8).eval()
    state = {**model.state_dict(),
             **{"frontend." + key: value for key, value in frontend.state_dict().items()}}
    torch.save(state, tmp_path / "model.pt")
    embedder = load_embedder(config, str(tmp_path / "model.pt"))
    feats = embedder.features(1000 * torch.randn(1, 8000))
    with torch.no_grad():
        assert torch.equal(embedder(feats), model(feats))


def test_the_front_end_rule_fills_checks_and_leaves_fbank_alone():
    assert builder.frontend_model_args({"embed_dim": 8}, "whisper_encoder", 32)["feat_dim"] == 32
    assert builder.frontend_model_args({"feat_dim": -1}, "s3prl", 768)["feat_dim"] == 768
    assert "feat_dim" not in builder.frontend_model_args({"acoustic_dim": 768}, "s3prl", 768)
    assert "feat_dim" not in builder.frontend_model_args({"embed_dim": 8}, "fbank", 80)
    with pytest.raises(ConfigError, match="'model_args.feat_dim' is -1 but the front-end"):
        builder.frontend_model_args({"feat_dim": -1}, "fbank", 80)
    with pytest.raises(ConfigError, match="'model_args.acoustic_dim' is 40 .*num_mel_bins"):
        builder.frontend_model_args({"acoustic_dim": 40}, "fbank", 80)


# ---- projection_args ---------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("K", "3"), ("k_top", 2.5), ("scale", "32"),
                                        ("margin", True)])
def test_a_projection_number_given_as_text_names_its_key(key, value):
    args = {"project_type": "arc_margin_intertopk_subcenter", key: value}
    with pytest.raises(ValueError, match=rf"projection_args.{key} is {re.escape(repr(value))}"):
        get_projection(args, embed_dim=8, num_class=4)


def test_a_projection_number_given_as_text_is_a_config_error_in_training(corpus, tmp_path):
    from train_helpers import plan_of, tiny_config
    from wespeaker_py.train.builder import build_model
    config = tiny_config(str(tmp_path), corpus, projection_args={
        "project_type": "arc_margin_intertopk_subcenter", "scale": 32.0, "K": "3"})
    with pytest.raises(ConfigError, match="projection_args.K is '3'"):
        build_model(plan_of(config))
