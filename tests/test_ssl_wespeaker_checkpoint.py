"""A checkpoint of WeSpeaker's WavLM recipe (its s3prl front-end's tensor names) loads on
every path that loads a model's state: extraction and the API (``load_embedder``,
``load_model``) and training's ``--checkpoint`` / ``model_init`` (``load_weights``)."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

pytest.importorskip("transformers")

from inference_helpers import TINY_XVEC_ARGS, randomise_batchnorm  # noqa: E402
from wespeaker_py import load_model  # noqa: E402
from wespeaker_py.config import load_model_config  # noqa: E402
from wespeaker_py.frontend.ssl import SSLFrontend  # noqa: E402
from wespeaker_py.frontend.wavlm_convert import original_state_from_wavlm  # noqa: E402
from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm  # noqa: E402
from wespeaker_py.models import get_model  # noqa: E402
from wespeaker_py.runtime import load_embedder  # noqa: E402
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError, load_weights  # noqa: E402

# WeSpeaker's S3prlFrontend: S3PRLUpstream -> s3prl's WavLM expert -> the original WavLM
S3PRL_WAVLM = "frontend.upstream.upstream.model."
FEATURIZER = "frontend.featurizer.weights"
FORMAT = "a WeSpeaker/s3prl WavLM front-end"
NUM_SPEAKERS = 4


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny")
    write_random_wavlm(path, tiny_wavlm_config(large_layout=True), seed=1)
    return path


def dataset_args(wavlm_dir, multilayer_feature=True, layer=-1):
    return {"frontend": "s3prl", "resample_rate": 16000,
            "s3prl_args": {"upstream_args": {"name": "wavlm_large", "path_or_url": wavlm_dir},
                           "multilayer_feature": multilayer_feature, "layer": layer,
                           "frozen": False, "frame_shift": 20, "frame_length": 20}}


def build_model(wavlm_dir, **s3prl_args):
    """XVEC with the front-end and a head attached, as the trainer builds it (pretrained)."""
    frontend = SSLFrontend.from_dataset_args(dataset_args(wavlm_dir, **s3prl_args))
    model = get_model("XVEC", **dict(TINY_XVEC_ARGS, feat_dim=frontend.output_dim))
    model.add_module("frontend", frontend)
    model.add_module("projection", nn.Linear(TINY_XVEC_ARGS["embed_dim"], NUM_SPEAKERS))
    return model


def trained_model(wavlm_dir, **s3prl_args):
    """A model whose every weight, WavLM's and the layer weights included, left the
    pretrained ones, so that only the checkpoint's weights give its embeddings."""
    model = build_model(wavlm_dir, **s3prl_args)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    randomise_batchnorm(model)
    return model.eval()


def wespeaker_state(model):
    """``model``'s state as WeSpeaker's run_wavlm.sh saves it: WavLM's original tensor
    names under s3prl's wrappers, the layer weights as s3prl's featurizer weights."""
    state = {key: value for key, value in model.state_dict().items()
             if not key.startswith("frontend.")}
    original = original_state_from_wavlm(model.frontend.upstream)["model"]
    state.update({S3PRL_WAVLM + key: value for key, value in original.items()})
    frontend = model.frontend
    state[FEATURIZER] = (frontend.layer_weights.detach().clone() if frontend.multilayer_feature
                         else torch.zeros(frontend.num_hidden_states if frontend.layer == -1
                                          else 1))
    # the names WavLM's own code gives (and s3prl's WavLM keeps)
    for name in ("feature_extractor.conv_layers.0.0.weight", "post_extract_proj.weight",
                 "encoder.pos_conv.0.weight_g", "mask_emb",
                 "encoder.layers.0.self_attn.relative_attention_bias.weight",
                 "encoder.layers.1.self_attn.grep_a", "encoder.layers.1.fc1.weight"):
        assert S3PRL_WAVLM + name in state, name
    return state


def write_folder(folder, wavlm_dir, state, **s3prl_args):
    """A WeSpeaker experiment folder: config.yaml and models/avg_model.pt."""
    os.makedirs(os.path.join(folder, "models"))
    config = {"model": "XVEC", "model_args": dict(TINY_XVEC_ARGS, feat_dim=-1),
              "dataset_args": dataset_args(wavlm_dir, **s3prl_args)}
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    checkpoint = os.path.join(folder, "models", "avg_model.pt")
    torch.save(state, checkpoint)
    return checkpoint


def waves(samples=12000):
    return 3000.0 * torch.randn(1, samples, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("s3prl_args", [{}, {"multilayer_feature": False, "layer": 1}],
                         ids=["weighted-sum", "one-layer"])
def test_a_wespeaker_wavlm_checkpoint_extracts_the_trained_models_embeddings(
        wavlm_dir, tmp_path, caplog, s3prl_args):
    trained = trained_model(wavlm_dir, **s3prl_args)
    wav = waves()
    with torch.no_grad():
        expected = trained(trained.frontend(wav))
    checkpoint = write_folder(str(tmp_path / "ws"), wavlm_dir, wespeaker_state(trained),
                              **s3prl_args)
    config = load_model_config(str(tmp_path / "ws" / "config.yaml"))
    with caplog.at_level("INFO"):
        embedder = load_embedder(config, checkpoint)
    with torch.no_grad():
        torch.testing.assert_close(embedder(embedder.features(wav)), expected,
                                   rtol=0, atol=1e-6)
    told = [record.getMessage() for record in caplog.records if FORMAT in record.getMessage()]
    assert len(told) == 1 and checkpoint in told[0]

    # load_model on the folder gives what the same weights in this package's names give
    write_folder(str(tmp_path / "ours"), wavlm_dir, trained.state_dict(), **s3prl_args)
    audio = wav[0].numpy() / 32768.0
    np.testing.assert_allclose(
        load_model(str(tmp_path / "ws"), device="cpu").embed(audio, 16000),
        load_model(str(tmp_path / "ours"), device="cpu").embed(audio, 16000), rtol=0, atol=1e-6)


def test_training_starts_from_a_wespeaker_wavlm_checkpoint(wavlm_dir):
    trained = trained_model(wavlm_dir)
    fresh = build_model(wavlm_dir)
    # what --checkpoint and model_init (without its head) load through
    load_weights(fresh, wespeaker_state(trained), "avg_model.pt")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    fresh = build_model(wavlm_dir)
    body = {key: value for key, value in wespeaker_state(trained).items()
            if not key.startswith("projection.")}
    load_weights(fresh, body, "model_init.pt", allow_head_truncation=False,
                 allow_missing_head=True)
    assert torch.equal(fresh.frontend.layer_weights, trained.frontend.layer_weights)
    key = "encoder.layers.1.attention.k_proj.weight"
    assert torch.equal(fresh.frontend.upstream.state_dict()[key],
                       trained.frontend.upstream.state_dict()[key])


def test_a_mask_emb_the_models_wavlm_keeps_no_place_for_is_dropped_and_said(
        wavlm_dir, tmp_path, caplog):
    """WeSpeaker's WavLM always holds the pre-training masking vector; a WavLM whose
    masking probabilities are 0 has none, and the load says why it is left out."""
    config = tiny_wavlm_config(large_layout=True)
    config.mask_time_prob = 0.0
    unmasked = str(tmp_path / "unmasked")
    write_random_wavlm(unmasked, config, seed=2)
    trained = trained_model(wavlm_dir)
    fresh = build_model(unmasked)
    assert "masked_spec_embed" not in fresh.frontend.upstream.state_dict()
    with caplog.at_level("INFO"):
        load_weights(fresh, wespeaker_state(trained), "avg_model.pt")
    assert "mask_emb is dropped" in caplog.text
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, trained.state_dict()[key]), key


def _without(state, key):
    return {name: value for name, value in state.items() if name != key}


CORRUPTIONS = {
    "missing": (lambda state: _without(state, S3PRL_WAVLM + "encoder.layers.1.fc2.bias"),
                rf"{FORMAT} .*: missing tensor '{S3PRL_WAVLM}encoder\.layers\.1\.fc2\.bias'"),
    "extra": (lambda state: dict(state, **{S3PRL_WAVLM + "encoder.layers.0.self_attn.bias_k":
                                           torch.zeros(1)}),
              rf"{FORMAT} .*: unexpected tensor "
              rf"'{S3PRL_WAVLM}encoder\.layers\.0\.self_attn\.bias_k'"),
    "wrapper": (lambda state: dict(state, **{"frontend.upstream.upstream.extra":
                                             torch.zeros(1)}),
                rf"tensor 'frontend\.upstream\.upstream\.extra' of {FORMAT} .* has no "
                rf"counterpart"),
    "misshapen": (lambda state: dict(state, **{S3PRL_WAVLM + "encoder.layers.0.fc1.weight":
                                               torch.zeros(3, 3)}),
                  rf"{FORMAT} .*: tensor '{S3PRL_WAVLM}encoder\.layers\.0\.fc1\.weight' has "
                  rf"shape \(3, 3\), expected"),
    "featurizer": (lambda state: dict(state, **{FEATURIZER: torch.zeros(5)}),
                   rf"tensor '{FEATURIZER}' of {FORMAT} .* has shape \(5,\)"),
    "no-featurizer": (lambda state: _without(state, FEATURIZER),
                      rf"tensor '{FEATURIZER}' is missing from {FORMAT}"),
    "mixed": (lambda state: dict(state, **{"frontend.layer_weights": torch.zeros(3)}),
              rf"tensor 'frontend\.layer_weights' is in this package's layout, beside the "
              rf"tensors of {FORMAT}"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_wespeaker_wavlm_checkpoint_is_refused_naming_the_tensor(
        wavlm_dir, tmp_path, corruption):
    corrupt, message = CORRUPTIONS[corruption]
    state = corrupt(wespeaker_state(trained_model(wavlm_dir)))
    checkpoint = write_folder(str(tmp_path / "ws"), wavlm_dir, state)
    config = load_model_config(str(tmp_path / "ws" / "config.yaml"))
    with pytest.raises(CheckpointMismatchError, match=message):
        load_embedder(config, checkpoint)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_weights(build_model(wavlm_dir), state, checkpoint)


def test_a_front_end_tensor_that_does_not_fit_is_named_with_its_frontend_prefix(
        wavlm_dir, tmp_path):
    state = dict(trained_model(wavlm_dir).state_dict(),
                 **{"frontend.layer_weights": torch.zeros(5)})
    checkpoint = write_folder(str(tmp_path / "ours"), wavlm_dir, state)
    config = load_model_config(str(tmp_path / "ours" / "config.yaml"))
    with pytest.raises(CheckpointMismatchError,
                       match=r"tensor 'frontend\.layer_weights' has shape \(5,\) in the "
                             r"checkpoint but \(3,\)"):
        load_embedder(config, checkpoint)
