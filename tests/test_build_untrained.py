"""runtime.builder.build_untrained: the speaker model of a config alone, its input size left
to the front-end resolved as training resolves it, on the meta device (what the results
table counts and fine-tuning names the modules of)."""
import os

import pytest
import torch

from wespeaker_py.config import ConfigError, ModelConfig, read_yaml
from wespeaker_py.config.fields import parse_block
from wespeaker_py.models import get_model
from wespeaker_py.models.complexity import count_params
from wespeaker_py.runtime import builder
from wespeaker_py.runtime.builder import build_untrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _conf(name, model_args=(), **dataset_args):
    """The model, model_args and dataset_args of ``conf/<name>.yaml``, each block updated."""
    config = read_yaml(os.path.join(REPO, "conf", name + ".yaml"))
    return parse_block(ModelConfig, {"model": config["model"],
                                     "model_args": dict(config["model_args"], **dict(model_args)),
                                     "dataset_args": dict(config["dataset_args"], **dataset_args)},
                       "")


def _shapes(model):
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _meta_model(name, **model_args):
    with torch.device("meta"):
        return get_model(name, **model_args)


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny")
    write_random_wavlm(path, tiny_wavlm_config(large_layout=True), seed=1)
    return path


@pytest.fixture(scope="module")
def w2vbert_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.w2vbert_random import tiny_w2vbert_config, write_random_w2vbert
    path = str(tmp_path_factory.mktemp("w2vbert") / "tiny")
    write_random_w2vbert(path, tiny_w2vbert_config(2), seed=0)
    return path


@pytest.mark.parametrize("name, input_key, width", [
    ("ecapa_tdnn", "feat_dim", 80),          # fbank: feat_dim set
    ("simam_resnet34", "acoustic_dim", 80),  # SimAM-ResNet's own name for it
    ("redimnet2", "feat_dim", 72),           # the TFMel front-end
    ("whisper_PMFA_stage0", "feat_dim", 1280 * 8),   # left out: 8 Whisper blocks side by side
])
def test_a_shipped_config_builds_on_meta_with_its_input_size(name, input_key, width):
    config = _conf(name)
    model = build_untrained(config)
    assert {parameter.device.type for parameter in model.parameters()} == {"meta"}
    expected = _meta_model(config.model, **dict(config.model_args, **{input_key: width}))
    assert _shapes(model) == _shapes(expected)


def test_the_front_end_is_built_on_the_meta_device_too(monkeypatch):
    devices = []

    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return built(*args, **kwargs)

    built = builder.build_frontend
    monkeypatch.setattr(builder, "build_frontend", recording)
    build_untrained(_conf("whisper_PMFA_stage0"))   # a 24-block large-v2 encoder: no weights made
    assert devices == ["meta"]


def test_an_ssl_front_ends_size_is_read_from_its_weights(wavlm_dir):
    config = _conf("ecapa_tdnn_WavLM_frozen",
                   s3prl_args={"upstream_args": {"name": "wavlm_large", "path_or_url": wavlm_dir},
                               "multilayer_feature": True, "layer": -1, "frozen": True,
                               "frame_shift": 20, "frame_length": 20})
    assert config.model_args["feat_dim"] == -1
    model = build_untrained(config)
    expected = _meta_model(config.model, **dict(config.model_args, feat_dim=32))
    assert _shapes(model) == _shapes(expected)
    assert count_params(model) == count_params(expected)


def test_a_w2vbert_model_gets_the_width_of_one_hidden_state(w2vbert_dir):
    config = _conf("w2vbert_s1_lora", {"feat_dim": -1, "num_frontend_hidden_layers": 2},
                   w2vbert_args={"model_name": w2vbert_dir, "frozen": True})
    model = build_untrained(config)
    expected = _meta_model(config.model, **dict(config.model_args, feat_dim=32))
    assert _shapes(model) == _shapes(expected)


def test_missing_ssl_weights_name_their_path(tmp_path):
    missing = str(tmp_path / "no_wavlm")
    config = _conf("ecapa_tdnn_WavLM_frozen",
                   s3prl_args={"upstream_args": {"name": "wavlm_large", "path_or_url": missing},
                               "multilayer_feature": True, "layer": -1, "frozen": True,
                               "frame_shift": 20, "frame_length": 20})
    with pytest.raises(FileNotFoundError, match=missing):
        build_untrained(config)


def test_feat_dim_minus_one_with_fbank_is_refused_as_training_refuses_it():
    config = _conf("ecapa_tdnn", {"feat_dim": -1})
    with pytest.raises(ConfigError, match="'model_args.feat_dim' is -1"):
        build_untrained(config)
