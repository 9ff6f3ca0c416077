"""SSL (WavLM) front-end, its checkpoint helpers and the original-checkpoint conversion."""
import os
import runpy
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

pytest.importorskip("transformers")

from wespeaker_py.bin.convert_checkpoint import main as convert_main  # noqa: E402
from wespeaker_py.frontend.factory import build_frontend  # noqa: E402
from wespeaker_py.frontend.ssl import (SSLFrontend, frontend_param_groups,  # noqa: E402
                                       frontend_state_dict_for_checkpoint,
                                       with_pretrained_frontend_weights)
from wespeaker_py.frontend.wavlm_convert import (WavLMConversionError,  # noqa: E402
                                                 export_original_checkpoint, load_hf_directory,
                                                 read_original_checkpoint, wavlm_from_original)
from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOP = 320  # WavLM: one frame per 320 samples = 20 ms at 16 kHz


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """Tiny WavLM with the Large layout (layer-norm conv blocks, pre-norm transformer)."""
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny")
    write_random_wavlm(path, tiny_wavlm_config(large_layout=True), seed=1)
    return path


@pytest.fixture(scope="module")
def tiny_base_dir(tmp_path_factory):
    """Tiny WavLM with the Base layout (group-norm first conv block, post-norm transformer)."""
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny_base")
    write_random_wavlm(path, tiny_wavlm_config(large_layout=False), seed=2)
    return path


def dataset_args(path, cmvn=True, norm_var=False, **s3prl_args):
    args = {"upstream_args": {"name": "wavlm_large", "path_or_url": path},
            "download_dir": "./s3prl_hub", "multilayer_feature": True, "layer": -1,
            "frozen": False, "frame_shift": 20, "frame_length": 20}
    args.update(s3prl_args)
    return {"frontend": "s3prl", "resample_rate": 16000, "s3prl_args": args, "cmvn": cmvn,
            "cmvn_args": {"norm_mean": True, "norm_var": norm_var}}


def waves(batch=2, samples=8000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 3000.0 * torch.randn(batch, samples, generator=generator)


class SpeakerStub(nn.Module):
    """A speaker model with the front-end attached as ``frontend``, as the trainer does."""

    def __init__(self, frontend):
        super().__init__()
        self.frontend = frontend
        self.head = nn.Linear(frontend.output_dim, 3)

    def forward(self, wavs):
        return self.head(self.frontend(wavs).mean(dim=1))


def test_importing_the_frontend_package_leaves_transformers_alone():
    code = ("import sys, wespeaker_py.frontend, wespeaker_py.frontend.factory, "
            "wespeaker_py.frontend.ssl, wespeaker_py.frontend.wavlm_convert, "
            "wespeaker_py.bin.convert_checkpoint; "
            "assert 'transformers' not in sys.modules, 'transformers was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_output_shape_and_20ms_frame_rate(tiny_dir):
    frontend = SSLFrontend.from_dataset_args(dataset_args(tiny_dir)).eval()
    assert frontend.output_size() == frontend.output_dim == 32
    with torch.no_grad():
        for samples in (8000, 8000 + 7 * HOP, 48000):
            feats = frontend(waves(samples=samples))
            assert feats.shape == (2, samples // HOP + 1, 32)
        # one more second of audio gives 50 more frames
        assert frontend(waves(samples=24000)).shape[1] - frontend(waves()).shape[1] == 50


def test_hidden_states_are_the_layer_inputs_and_the_encoder_output(tiny_dir):
    frontend = SSLFrontend.from_dataset_args(dataset_args(tiny_dir)).eval()
    wavs = waves()
    with torch.no_grad():
        states = frontend.hidden_states(wavs)
        normalised = torch.nn.functional.layer_norm(wavs / 32768.0, wavs.shape[-1:])
        reference = frontend.upstream(normalised, output_hidden_states=True)
    assert len(states) == 3
    real = reference.last_hidden_state.shape[1]  # conv frames, before s3prl's padding
    for state, expected in zip(states[:-1], reference.hidden_states[:-1]):
        torch.testing.assert_close(state[:, :real], expected)
    torch.testing.assert_close(states[-1][:, :real], reference.last_hidden_state)
    # the frames s3prl's length convention adds repeat the last real frame
    assert torch.equal(states[-1][:, real:], states[-1][:, real - 1:real].expand_as(
        states[-1][:, real:]))


def test_weighted_sum_equals_the_hand_computed_sum(tiny_dir):
    frontend = SSLFrontend.from_dataset_args(dataset_args(tiny_dir, cmvn=False)).eval()
    wavs = waves()
    with torch.no_grad():
        frontend.layer_weights.copy_(torch.tensor([0.3, -1.2, 2.0]))
        states = frontend.hidden_states(wavs)
        weights = torch.exp(torch.tensor([0.3, -1.2, 2.0]))
        weights = weights / weights.sum()
        expected = sum(float(w) * s for w, s in zip(weights, states))
        torch.testing.assert_close(frontend(wavs), expected)

        chosen = SSLFrontend.from_dataset_args(dataset_args(
            tiny_dir, cmvn=False, multilayer_feature=False, layer=1)).eval()
        torch.testing.assert_close(chosen(wavs), states[1])
        last = SSLFrontend.from_dataset_args(dataset_args(
            tiny_dir, cmvn=False, multilayer_feature=False)).eval()
        torch.testing.assert_close(last(wavs), states[-1])


def test_cmvn_follows_cmvn_args(tiny_dir):
    wavs = waves()
    with torch.no_grad():
        mean_only = SSLFrontend.from_dataset_args(dataset_args(tiny_dir)).eval()(wavs)
        mean_var = SSLFrontend.from_dataset_args(dataset_args(tiny_dir, norm_var=True)).eval()(wavs)
    torch.testing.assert_close(mean_only.mean(dim=1), torch.zeros(2, 32), atol=1e-5, rtol=0)
    assert not torch.allclose(mean_only.std(dim=1), torch.ones(2, 32), atol=0.1)
    torch.testing.assert_close(mean_var.std(dim=1), torch.ones(2, 32), atol=1e-4, rtol=0)


def test_frozen_mode_trains_only_the_layer_weights(tiny_dir):
    model = SpeakerStub(SSLFrontend.from_dataset_args(dataset_args(tiny_dir, frozen=True)))
    model.train()
    assert model.frontend.training and not model.frontend.upstream.training
    model(waves()).logsumexp(dim=1).sum().backward()
    for name, param in model.frontend.upstream.named_parameters():
        assert not param.requires_grad and param.grad is None, name
    assert model.frontend.layer_weights.grad is not None
    assert model.frontend.layer_weights.grad.abs().sum() > 0
    state = frontend_state_dict_for_checkpoint(model)
    assert "frontend.layer_weights" in state
    assert not any(key.startswith("frontend.upstream.") for key in state)


def test_joint_mode_trains_both_with_the_frontend_lr_scale(tiny_dir):
    model = SpeakerStub(SSLFrontend.from_dataset_args(dataset_args(tiny_dir, lr_scale=0.1)))
    model.train()
    assert model.frontend.upstream.training
    model(waves()).logsumexp(dim=1).sum().backward()
    upstream = model.frontend.upstream
    for param in (upstream.feature_extractor.conv_layers[0].conv.weight,
                  upstream.encoder.layers[0].attention.q_proj.weight,
                  upstream.encoder.layer_norm.weight, model.frontend.layer_weights):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert not upstream.masked_spec_embed.requires_grad

    groups = frontend_param_groups(model)
    assert [group["lr_scale"] for group in groups] == [1.0, 0.1]
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for p in upstream.parameters() if p.requires_grad}
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    optimizer = torch.optim.SGD([{"params": group["params"], "lr": 0.5 * group["lr_scale"]}
                                 for group in groups])
    optimizer.step()
    for name, param in model.named_parameters():
        if param.grad is None:
            continue
        lr = 0.05 if name.startswith("frontend.upstream.") else 0.5
        torch.testing.assert_close(param.detach(), before[name] - lr * param.grad)


def test_a_single_layer_leaves_no_trainable_parameter_unused(tiny_dir):
    model = SpeakerStub(SSLFrontend.from_dataset_args(dataset_args(
        tiny_dir, multilayer_feature=False, layer=1)))
    model.train()
    model(waves()).sum().backward()
    trainable = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    assert any(name.startswith("frontend.upstream.encoder.layers.0.") for name, _ in trainable)
    for name, param in trainable:
        assert param.grad is not None, f"{name} is trainable but gets no gradient"
    assert not model.frontend.upstream.encoder.layers[1].attention.q_proj.weight.requires_grad


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir):
    wavs = waves()
    grads = []
    for checkpointing in (False, True):
        frontend = SSLFrontend.from_dataset_args(dataset_args(
            tiny_dir, gradient_checkpointing=checkpointing)).train()
        frontend(wavs).pow(2).mean().backward()
        grads.append({name: param.grad for name, param in frontend.named_parameters()
                      if param.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_checkpoint_save_and_strict_reload(tiny_dir, tmp_path):
    wavs = waves()
    for frozen in (False, True):
        model = SpeakerStub(SSLFrontend.from_dataset_args(dataset_args(tiny_dir, frozen=frozen)))
        with torch.no_grad():  # stand-in for training: change what trains
            for param in model.parameters():
                if param.requires_grad:
                    param.add_(0.01 * torch.randn_like(param))
        path = str(tmp_path / f"model_frozen{frozen}.pt")
        torch.save(frontend_state_dict_for_checkpoint(model), path)

        fresh = SpeakerStub(SSLFrontend.from_dataset_args(dataset_args(tiny_dir, frozen=frozen)))
        state = torch.load(path, weights_only=True)
        assert any(key.startswith("frontend.upstream.") for key in state) != frozen
        fresh.load_state_dict(with_pretrained_frontend_weights(fresh, state, path), strict=True)
        model.eval(), fresh.eval()
        with torch.no_grad():
            assert torch.equal(fresh(wavs), model(wavs))

    full = frontend_state_dict_for_checkpoint(model, include_frozen=True)
    assert full.keys() == model.state_dict().keys()
    del full["frontend.upstream.encoder.layers.1.final_layer_norm.bias"]
    with pytest.raises(ValueError, match="encoder.layers.1.final_layer_norm.bias"):
        with_pretrained_frontend_weights(fresh, full, "ckpt.pt")


@pytest.mark.parametrize("layout", ["large", "base"])
def test_converted_original_checkpoint_gives_identical_features(layout, tiny_dir, tiny_base_dir,
                                                                tmp_path):
    hf_dir = tiny_dir if layout == "large" else tiny_base_dir
    original = str(tmp_path / "WavLM-Tiny.pt")
    export_original_checkpoint(hf_dir, original)
    cfg, state = read_original_checkpoint(original)
    assert cfg["extractor_mode"] == ("layer_norm" if layout == "large" else "default")
    assert cfg["normalize"] == (layout == "large")
    for key in ("mask_emb", "post_extract_proj.weight", "layer_norm.weight",
                "encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v",
                "encoder.layers.0.self_attn.relative_attention_bias.weight",
                "encoder.layers.1.self_attn.grep_a", "encoder.layers.1.fc2.bias"):
        assert key in state, key
    assert "encoder.layers.1.self_attn.relative_attention_bias.weight" not in state
    if layout == "large":
        assert "feature_extractor.conv_layers.3.2.1.weight" in state
    else:
        assert "feature_extractor.conv_layers.0.2.weight" in state
        assert "feature_extractor.conv_layers.1.2.weight" not in state
    hf = load_hf_directory(hf_dir)
    layer = hf.encoder.layers[1]
    for original_key, tensor in (
            ("encoder.layers.1.self_attn_layer_norm.weight", layer.layer_norm.weight),
            ("encoder.layers.1.final_layer_norm.bias", layer.final_layer_norm.bias),
            ("encoder.layers.1.fc1.weight", layer.feed_forward.intermediate_dense.weight),
            ("encoder.layers.1.self_attn.grep_linear.bias",
             layer.attention.gru_rel_pos_linear.bias),
            ("layer_norm.bias", hf.feature_projection.layer_norm.bias),
            ("encoder.layer_norm.weight", hf.encoder.layer_norm.weight)):
        assert torch.equal(state[original_key], tensor), original_key

    converted = str(tmp_path / "converted")
    convert_main(["wavlm", "--src", original, "--dst", converted])
    assert os.path.isfile(os.path.join(converted, "config.json"))
    wavs = waves()
    with torch.no_grad():
        reference = SSLFrontend.from_dataset_args(dataset_args(hf_dir)).eval()(wavs)
        for path in (converted, original):
            frontend = SSLFrontend.from_dataset_args(dataset_args(path)).eval()
            assert torch.equal(frontend(wavs), reference), path


def test_conversion_names_missing_unexpected_and_misshapen_tensors(tiny_dir, tmp_path):
    original = str(tmp_path / "WavLM-Tiny.pt")
    export_original_checkpoint(tiny_dir, original)
    cfg, state = read_original_checkpoint(original)

    missing = dict(state)
    del missing["encoder.layers.1.self_attn.k_proj.bias"]
    with pytest.raises(WavLMConversionError, match=r"missing tensor 'encoder\.layers\.1\.self_attn"
                                                   r"\.k_proj\.bias'"):
        wavlm_from_original(cfg, missing)
    unexpected = dict(state, **{"encoder.layers.0.self_attn.bias_k": torch.zeros(1)})
    with pytest.raises(WavLMConversionError,
                       match="unexpected tensor 'encoder.layers.0.self_attn.bias_k'"):
        wavlm_from_original(cfg, unexpected)
    misshapen = dict(state, **{"encoder.layers.0.fc1.weight": torch.zeros(3, 3)})
    with pytest.raises(WavLMConversionError, match="'encoder.layers.0.fc1.weight' has shape"):
        wavlm_from_original(cfg, misshapen)
    with pytest.raises(WavLMConversionError, match="cfg.gru_rel_pos"):
        wavlm_from_original(dict(cfg, gru_rel_pos=False), state)


def test_missing_weights_say_what_to_place_where(tmp_path):
    absent = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as err:
        SSLFrontend.from_dataset_args(dataset_args(absent))
    for hint in (absent, "config.json", "model.safetensors", "WavLM-Large.pt", "path_or_url"):
        assert hint in str(err.value)

    args = dataset_args(None, download_dir=str(tmp_path / "hub"))
    del args["s3prl_args"]["upstream_args"]["path_or_url"]
    with pytest.raises(FileNotFoundError, match=os.path.join(str(tmp_path), "hub", "wavlm_large")):
        SSLFrontend.from_dataset_args(args)

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty/config.json is missing"):
        SSLFrontend.from_dataset_args(dataset_args(str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="never downloaded"):
        SSLFrontend.from_dataset_args(dataset_args("https://example.org/WavLM-Large.pt"))


@pytest.mark.parametrize("change, message", [
    ({"unknown_option": 1}, "unknown config key 'dataset_args.s3prl_args.unknown_option'"),
    ({"layer": 1}, "multilayer_feature must be False"),
    ({"multilayer_feature": False, "layer": 3}, "layer must be -1 or in"),
    ({"frame_shift": 10}, "frame_shift"),
    ({"frozen": "yes"}, "config key 'dataset_args.s3prl_args.frozen' must be bool"),
    ({"upstream_args": {"name": "hubert_large_ll60k"}}, "must name a WavLM model"),
    ({"upstream_args": {"name": "wavlm_large", "ckpt": "x"}},
     "unknown config key 'dataset_args.s3prl_args.upstream_args.ckpt'"),
])
def test_config_errors_name_the_key(tiny_dir, change, message):
    args = dataset_args(tiny_dir)
    args["s3prl_args"].update(change)
    with pytest.raises(ValueError, match=message):
        SSLFrontend.from_dataset_args(args)


def test_build_frontend_picks_by_dataset_args_frontend(tiny_dir):
    assert isinstance(build_frontend(dataset_args(tiny_dir)), SSLFrontend)
    fbank = build_frontend({"frontend": "fbank", "fbank_args": {"num_mel_bins": 80}})
    assert type(fbank).__name__ == "FbankFeatures" and fbank.output_dim == 80
    with pytest.raises(ValueError, match="'dataset_args.frontend' must be one of .*'whisper'"):
        build_frontend({"frontend": "whisper"})


def test_make_tiny_wavlm_tool_writes_both_forms(tmp_path, monkeypatch):
    out, original = str(tmp_path / "tiny"), str(tmp_path / "tiny.pt")
    monkeypatch.setattr(sys, "argv", ["make_tiny_wavlm.py", "--out", out, "--original", original])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(os.path.join(REPO_ROOT, "tools", "make_tiny_wavlm.py"), run_name="__main__")
    assert done.value.code == 0
    model = load_hf_directory(out)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    cfg, _ = read_original_checkpoint(original)
    assert cfg["encoder_layers"] == 2 and cfg["encoder_embed_dim"] == 32


@pytest.mark.gpu
def test_frozen_bf16_features_on_cuda_are_close_to_float32(tiny_dir):
    frozen = SSLFrontend.from_dataset_args(dataset_args(tiny_dir, frozen=True)).cuda().train()
    wavs = waves().cuda()
    feats = frozen(wavs)
    assert feats.dtype == torch.float32
    frozen.frozen_bf16 = False
    torch.testing.assert_close(feats, frozen(wavs), atol=0.1, rtol=0.05)
