"""ReDimNet / ReDimNet2 and the TFMel front-end against outputs of WeSpeaker's implementation.

tests/data/redimnet_reference.npz holds what WeSpeaker's code gave for the
weights and inputs of redimnet_reference.py (see its docstring).
"""
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from redimnet_reference import (MODEL_CASES, REFERENCE, features, fill_weights, waveform)
from train_helpers import CPU_WORLD, make_speaker_corpus, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py import load_model
from inference_helpers import randomise_batchnorm
from wespeaker_py.config import (ConfigError, ModelConfig, as_dataset_args, load_config,
                                 load_model_config)
from wespeaker_py.config.fields import parse_block
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.models import get_model
from wespeaker_py.runtime import build_speaker_model, load_embedder
from wespeaker_py.train.plan import resolve

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REDIMNET2_CONF = os.path.join(REPO_ROOT, "conf", "redimnet2.yaml")
# WeSpeaker's TFMelFrontend state (norm_signal and do_preemph on), as its checkpoints hold it.
TFMEL_STATE = [("spec.torchfbank.1.flipped_filter", (1, 1, 2)),
               ("spec.torchfbank.2.real_kernel_pt", (256, 1, 400)),
               ("spec.torchfbank.2.image_kernel_pt", (256, 1, 400)),
               ("spec.torchfbank.2.melbanks_pt", (72, 256, 1))]


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return {key: data[key] for key in data.files}


def _tfmel(**tfmel_args):
    return build_frontend({"frontend": "tfmel", "cmvn": False, "tfmel_args": tfmel_args}).eval()


def _filled(name):
    model = get_model(name, feat_dim=72, embed_dim=192)
    fill_weights(model)
    return model.eval()


@pytest.mark.parametrize("name,frames", MODEL_CASES)
def test_embeddings_match_wespeaker(reference, name, frames):
    with torch.no_grad():
        ours = _filled(name)(features(frames)).numpy()
    np.testing.assert_allclose(ours, reference[f"embed_{name}"], rtol=0, atol=1e-5)


def test_tfmel_matches_wespeaker_on_the_same_waveform(reference):
    conf = load_config(REDIMNET2_CONF)
    frontend = build_frontend(conf.dataset_args).eval()
    assert isinstance(frontend, TFMelFeatures)
    with torch.no_grad():
        ours = frontend(waveform()).transpose(1, 2).numpy()
    np.testing.assert_allclose(ours, reference["tfmel_feats"], rtol=0, atol=1e-4)
    with torch.no_grad():  # WeSpeaker's defaults: 80 bins, no signal normalisation
        defaults = _tfmel()(waveform()).transpose(1, 2).numpy()
    np.testing.assert_allclose(defaults, reference["tfmel_feats_defaults"], rtol=0, atol=1e-4)


def test_tfmel_is_per_utterance_in_a_batch():
    frontend = _tfmel(n_mels=72, norm_signal=True)
    wavs = waveform()
    with torch.no_grad():
        together = frontend(wavs)
        alone = frontend(wavs[1:])
        louder = frontend(wavs[1:] * 4)
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-4)
    torch.testing.assert_close(louder, alone, rtol=1e-4, atol=1e-4)  # gain-invariant
    assert frontend.num_frames(wavs.shape[1]) == together.shape[1]


def test_tfmel_state_has_wespeakers_names():
    state = _tfmel(n_mels=72, norm_signal=True).state_dict()
    assert [(key, tuple(value.shape)) for key, value in state.items()] == TFMEL_STATE
    no_preemph = _tfmel(n_mels=72, do_preemph=False).state_dict()
    assert not any(key.startswith("spec.torchfbank.1.") for key in no_preemph)


def test_tfmel_spec_aug_masks_only_in_training():
    frontend = _tfmel(n_mels=72, do_spec_aug=True, time_mask_width=[5, 6],
                      freq_mask_width=[3, 4])
    wavs = waveform()
    with torch.no_grad():
        clean = frontend(wavs)
        frontend.train()
        torch.manual_seed(0)
        masked = frontend(wavs)
    zeroed = (masked == 0) & (clean != 0)
    # one 5-frame span and one 3-bin span per utterance
    assert zeroed.all(dim=2).sum(dim=1).tolist() == [5, 5]
    assert zeroed.all(dim=1).sum(dim=1).tolist() == [3, 3]


def _wespeaker_redimnet2_folder(root, model="ReDimNet2B0"):
    """A WeSpeaker-layout model folder: config.yaml + avg_model.pt with frontend. and projection."""
    config = yaml.safe_load(open(REDIMNET2_CONF))
    config["model"] = model
    with open(os.path.join(root, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    state = {f"frontend.{key}": value
             for key, value in _tfmel(**config["dataset_args"]["tfmel_args"]).state_dict().items()}
    state.update(_filled(model).state_dict())
    state["projection.weight"] = torch.randn(30, 192)
    state["projection.bias"] = torch.zeros(1, 1)
    torch.save(state, os.path.join(root, "avg_model.pt"))
    return root


def test_wespeaker_folder_loads_and_embeds_as_wespeaker(tmp_path, reference):
    folder = _wespeaker_redimnet2_folder(str(tmp_path))
    wav_path = os.path.join(str(tmp_path), "a.wav")
    sf.write(wav_path, waveform()[0].numpy().astype(np.int16), 16000, subtype="PCM_16")
    model = load_model(folder, device="cpu")
    embedding = model.embed(wav_path)
    np.testing.assert_allclose(embedding, reference["embed_tfmel_ReDimNet2B0"][0], rtol=0,
                               atol=1e-5)


def test_unknown_tfmel_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match=r"dataset_args\.tfmel_args\.n_mel'"):
        as_dataset_args({"frontend": "tfmel", "cmvn": False, "tfmel_args": {"n_mel": 72}})


def test_tfmel_with_cmvn_is_an_error():
    with pytest.raises(ConfigError, match=r"dataset_args\.cmvn"):
        as_dataset_args({"frontend": "tfmel", "tfmel_args": {"n_mels": 72}})


def _config(**changes):
    config = yaml.safe_load(open(REDIMNET2_CONF))
    for key, value in changes.items():
        config[key] = value
    return config


def _resolve(tmp_path, data):
    """The training plan of ``data``; its lists do not exist, so only a check made before
    any data is read can raise."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(str(path), [("train_data", str(tmp_path / "missing.list")),
                                     ("train_label", str(tmp_path / "missing_utt2spk")),
                                     ("data_type", "raw")])
    return resolve(config, CPU_WORLD)


def test_tfmel_with_an_fbank_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'model' is ResNet34.*'dataset_args.frontend' is tfmel"):
        _resolve(tmp_path, _config(model="ResNet34"))


def test_redimnet2_with_fbank_is_a_config_error(tmp_path):
    data = _config()
    data["dataset_args"] = {"frontend": "fbank", "fbank_args": {"num_mel_bins": 72}}
    with pytest.raises(ConfigError, match=r"ReDimNet2B6, which reads tfmel.*is fbank"):
        _resolve(tmp_path, data)


def test_a_tiny_redimnet2_trains_on_tfmel_and_its_checkpoint_loads(tmp_path):
    """The training path of the mini config (ReDimNet2 on TFMel, Adam) at a size CI affords:
    WeSpeaker's B0 with C=4 and two one-block stages, 4 speakers, 4 epochs of 3 batches."""
    corpus = make_speaker_corpus(str(tmp_path / "corpus"), num_spks=4, utts_per_spk=6)
    dataset_args = dict(tiny_config("unused", corpus)["dataset_args"], frontend="tfmel",
                        cmvn=False, tfmel_args={"n_mels": 72, "norm_signal": True})
    del dataset_args["fbank_args"]
    model_args = {"feat_dim": 72, "C": 4, "embed_dim": 16, "pooling_func": "ASTP",
                  "stages_setup": [[[2, 1], 1, 2, [[3, 3]], 36], [[1, 2], 1, 1, [[3, 3]], 18]]}
    exp_dir = str(tmp_path / "exp")
    history = run_training(tiny_config(
        exp_dir, corpus, dataset_args=dataset_args, model="ReDimNet2B0", model_args=model_args,
        optimizer="Adam", optimizer_args={"weight_decay": 0.0001},
        scheduler_args={"initial_lr": 0.01, "final_lr": 0.001, "warm_up_epoch": 0,
                        "warm_from_zero": False}))
    assert [result.batches for result in history] == [3, 3, 3, 3]
    assert history[-1].loss < 0.5 * history[0].loss
    assert history[-1].accuracy > history[0].accuracy
    checkpoint = os.path.join(exp_dir, "models", "model_4.pt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    assert sorted(key for key in saved if key.startswith("frontend.")) == sorted(
        f"frontend.{key}" for key, _ in TFMEL_STATE)
    embedder = load_embedder(load_model_config(os.path.join(exp_dir, "config.yaml")),
                             checkpoint)
    assert isinstance(embedder.frontend, TFMelFeatures)
    with torch.no_grad():
        embeddings = embedder.model(embedder.frontend(waveform()))
    assert embeddings.shape == (waveform().shape[0], 16) and torch.isfinite(embeddings).all()


# ---- WeSpeaker's ReDimNet2Wrap arguments and checkpoints that carry a model_config ---------------

# A tiny ReDimNet2 as WeSpeaker's ReDimNet2Wrap arguments (PalabraAI's checkpoints save them
# as ``model_config``): F for the bins, an internal spectrogram and its settings, a head size.
TINY_WRAP_CONFIG = {"F": 72, "C": 4, "embed_dim": 8, "pooling_func": "ASTP",
                    "stages_setup": [[[2, 1], 1, 2, [[3, 3]], 36], [[1, 2], 1, 1, [[3, 3]], 18]],
                    "return_2d_output": True, "out_channels": 8, "causal": "none",
                    "spec": "tf", "hop_length": 160, "feat_type": "tf",
                    "spec_params": {"do_spec_aug": False}, "num_classes": 5}


def _wrap_args(**changes):
    """TINY_WRAP_CONFIG as model_args our ReDimNet2 must take: no internal spectrogram."""
    return {**TINY_WRAP_CONFIG, "spec": None, **changes}


def test_wrap_arguments_that_select_this_network_build_it_unchanged():
    implemented = ("F", "C", "embed_dim", "pooling_func", "stages_setup", "return_2d_output",
                   "out_channels")
    plain = {key: TINY_WRAP_CONFIG[key] for key in implemented}
    torch.manual_seed(0)
    expected = get_model("ReDimNet2B0", **plain).state_dict()
    torch.manual_seed(0)
    got = get_model("ReDimNet2B0", **_wrap_args(dual_agg=False, before_pool_offset=None))
    assert {key: value.shape for key, value in got.state_dict().items()} == {
        key: value.shape for key, value in expected.items()}
    assert all(torch.equal(got.state_dict()[key], value) for key, value in expected.items())


@pytest.mark.parametrize("key, value", [("causal", "full"), ("causal", "only_1d"),
                                        ("spec", "tf"), ("dual_agg", True),
                                        ("use_freq_pos_enc", True), ("fm_weigthing_type", "N")])
def test_a_wrap_variant_not_implemented_is_a_config_error_naming_its_key(key, value):
    config = parse_block(ModelConfig, {"model": "ReDimNet2B0",
                                       "model_args": _wrap_args(**{key: value}),
                                       "dataset_args": {"frontend": "tfmel", "cmvn": False}}, "")
    with pytest.raises(ConfigError, match=rf"'model_args.{key}' is {value!r}, .*not implemented"):
        build_speaker_model(config)


def _model_config_checkpoint(root, model_config, model_args):
    """A config.yaml with ``model_args`` and a checkpoint with ``model_config``, trained as
    ``model_config`` with ``spec: None`` (TFMel under ``frontend.``); (config, ckpt, model)."""
    config = _config(model="ReDimNet2B0", model_args=model_args)
    torch.manual_seed(0)
    network = get_model("ReDimNet2B0", **dict(model_config, spec=None)).eval()
    randomise_batchnorm(network)
    state = {f"frontend.{key}": value for key, value in
             _tfmel(**config["dataset_args"]["tfmel_args"]).state_dict().items()}
    state.update(network.state_dict())
    path = os.path.join(root, "model.pt")
    torch.save({"state_dict": state, "model_config": model_config}, path)
    config_path = os.path.join(root, "config.yaml")
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle)
    return load_model_config(config_path), path, network


@pytest.mark.parametrize("model_args", [{}, {"feat_dim": 72, "embed_dim": 192}])
def test_a_checkpoint_model_config_is_what_loads_with_tfmel(tmp_path, model_args):
    config, checkpoint, network = _model_config_checkpoint(str(tmp_path), TINY_WRAP_CONFIG,
                                                           model_args)
    embedder = load_embedder(config, checkpoint)
    with torch.no_grad():
        feats = embedder.features(waveform())
        assert torch.equal(embedder(feats), network(feats))


def test_a_checkpoint_model_config_with_a_variant_not_implemented_is_refused(tmp_path):
    wanted = dict(TINY_WRAP_CONFIG, causal="full")
    config, checkpoint, _ = _model_config_checkpoint(str(tmp_path), TINY_WRAP_CONFIG, {})
    torch.save(dict(torch.load(checkpoint, weights_only=False), model_config=wanted), checkpoint)
    with pytest.raises(ModelSourceError, match=r"'model_config.causal' is 'full', .*not "
                                               r"implemented"):
        load_embedder(config, checkpoint)
