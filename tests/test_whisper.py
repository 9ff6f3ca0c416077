"""Whisper-PMFA: the whisper_encoder front-end, whisper_PMFA_large_v2, and training to embedding.

A tiny random Whisper in OpenAI's checkpoint layout (tools/make_tiny_whisper.py: 4 encoder
blocks, width 16, 2 heads) stands in for large-v2.pt; transformers' WhisperEncoder is the
reference for the encoder, WeSpeaker's state_dict keys (listed below) the contract.
"""
import logging
import os
import runpy
import sys

import pytest
import torch

from train_helpers import (CPU_WORLD, load_checkpoint, run_training,  # noqa: E402
                           tiny_config)
from train_helpers import single_torch_thread  # noqa: E402,F401  (autouse fixture)
from wespeaker_py.config import ConfigError, TrainConfig, as_dataset_args, load_config
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.frontend.whisper import (LARGE_V2_MD5, LARGE_V2_URL, MAX_POSITIONS,
                                           WhisperFrontend)
from wespeaker_py.frontend.whisper_random import tiny_whisper_dims, write_random_whisper
from wespeaker_py.models import check_frontend, get_model
from wespeaker_py.runtime import load_embedder
from wespeaker_py.train.builder import build_model
from wespeaker_py.train.plan import resolve

WIDTH, HEADS, CHECKPOINT_BLOCKS = 16, 2, 4
TINY = {"num_blocks": 3, "output_size": WIDTH, "n_head": HEADS, "layer_st": 1, "layer_ed": 2}
FEAT_DIM = 2 * WIDTH   # blocks 1 and 2 side by side

# WeSpeaker's whisper_encoder + whisper_PMFA_large_v2 as its train.py builds them (model,
# then ``frontend``), for n_mels 80, num_blocks 2, output_size 16, n_head 2, layer_st 0,
# layer_ed 1, embed_dim 16: keys in order, with shapes (read from its code).
_BLOCK = [("attn.query.weight", [16, 16]), ("attn.query.bias", [16]),
          ("attn.key.weight", [16, 16]), ("attn.value.weight", [16, 16]),
          ("attn.value.bias", [16]), ("attn.out.weight", [16, 16]), ("attn.out.bias", [16]),
          ("attn_ln.weight", [16]), ("attn_ln.bias", [16]), ("mlp.0.weight", [64, 16]),
          ("mlp.0.bias", [64]), ("mlp.2.weight", [16, 64]), ("mlp.2.bias", [16]),
          ("mlp_ln.weight", [16]), ("mlp_ln.bias", [16])]
WESPEAKER_KEYS = (
    [("pooling.linear1.weight", [128, 96, 1]), ("pooling.linear1.bias", [128]),
     ("pooling.linear2.weight", [32, 128, 1]), ("pooling.linear2.bias", [32]),
     ("bn.norm.weight", [64]), ("bn.norm.bias", [64]), ("bn.norm.running_mean", [64]),
     ("bn.norm.running_var", [64]), ("bn.norm.num_batches_tracked", []),
     ("fc.weight", [16, 64]), ("fc.bias", [16]),
     ("frontend.encoder.positional_embedding", [1500, 16]),
     ("frontend.encoder.conv1.weight", [16, 80, 3]), ("frontend.encoder.conv1.bias", [16]),
     ("frontend.encoder.conv2.weight", [16, 16, 3]), ("frontend.encoder.conv2.bias", [16])]
    + [(f"frontend.encoder.blocks.{i}.{name}", shape) for i in range(2) for name, shape in _BLOCK]
    + [("frontend.encoder.ln_post2.weight", [32]), ("frontend.encoder.ln_post2.bias", [32])])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("whisper") / "tiny.pt")
    write_random_whisper(path, tiny_whisper_dims(CHECKPOINT_BLOCKS, 80, WIDTH, HEADS), seed=0)
    return path


def dataset_args(model_path=None, **whisper):
    args = dict(TINY, model_path=model_path, **whisper)
    return {"frontend": "whisper_encoder", "whisper_encoder_args": args}


def frontend(model_path=None, pretrained=True, **whisper):
    return build_frontend(dataset_args(model_path, **whisper), pretrained=pretrained)


def _wave(seconds=1.0, seed=0, batch=2):
    generator = torch.Generator().manual_seed(seed)
    return 3000 * torch.randn(batch, int(16000 * seconds), generator=generator)


def test_make_tiny_whisper_tool_writes_an_openai_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "tiny.pt")
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "make_tiny_whisper.py")
    monkeypatch.setattr(sys, "argv", ["make_tiny_whisper.py", "--out", out, "--layers", "2",
                                      "--width", "8"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(tool, run_name="__main__")
    assert done.value.code == 0
    saved = torch.load(out, weights_only=True)
    assert saved["dims"]["n_audio_layer"] == 2 and saved["dims"]["n_audio_state"] == 8
    state = saved["model_state_dict"]
    assert state["encoder.blocks.1.mlp.2.weight"].dtype == torch.float16
    assert "encoder.ln_post.weight" in state and "decoder.token_embedding.weight" in state
    built = frontend(out, num_blocks=2, output_size=8, layer_st=0, layer_ed=1)
    assert built.output_dim == 16


# -- the encoder against transformers' and WeSpeaker's layout ------------------------------
def test_state_dict_keys_are_wespeakers():
    args = dict(TINY, num_blocks=2, layer_st=0, layer_ed=1)
    front = build_frontend({"frontend": "whisper_encoder", "whisper_encoder_args": args})
    model = get_model("whisper_PMFA_large_v2", feat_dim=front.output_size(), embed_dim=16)
    model.add_module("frontend", front)
    assert [(key, list(value.shape)) for key, value in model.state_dict().items()] \
        == WESPEAKER_KEYS
    assert front.output_size() == 32   # WeSpeaker's feat_dim: output_size x 2 blocks


def test_every_block_is_transformers_whisper_encoder_layer(checkpoint):
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder
    front = frontend(checkpoint, num_blocks=3, layer_st=0, layer_ed=2).eval()
    encoder = front.encoder
    with torch.no_grad():
        encoder.ln_post2.weight.normal_(1.0, 0.2)
        encoder.ln_post2.bias.normal_(0.0, 0.2)
    mel_frames = 60   # transformers' encoder takes exactly 2 x max_source_positions
    frames = mel_frames // 2
    hf = HFEncoder(WhisperConfig(num_mel_bins=80, d_model=WIDTH, encoder_layers=3,
                                 encoder_attention_heads=HEADS, encoder_ffn_dim=4 * WIDTH,
                                 max_source_positions=frames, dropout=0.0,
                                 attention_dropout=0.0, activation_dropout=0.0)).eval()
    ours = encoder.state_dict()
    mapped = {"conv1.weight": ours["conv1.weight"], "conv1.bias": ours["conv1.bias"],
              "conv2.weight": ours["conv2.weight"], "conv2.bias": ours["conv2.bias"],
              "embed_positions.weight": ours["positional_embedding"][:frames],
              "layer_norm.weight": torch.ones(WIDTH), "layer_norm.bias": torch.zeros(WIDTH)}
    names = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
             "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
             "attn_ln": "self_attn_layer_norm", "mlp.0": "fc1", "mlp.2": "fc2",
             "mlp_ln": "final_layer_norm"}
    for key, tensor in ours.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            module, param = rest.rsplit(".", 1)
            mapped[f"layers.{index}.{names[module]}.{param}"] = tensor
    hf.load_state_dict(mapped, strict=True)
    hf.layer_norm = torch.nn.Identity()   # so that its last state is the last block's output
    mel = torch.randn(2, mel_frames, 80, generator=torch.Generator().manual_seed(0))
    blocks = []
    hooks = [block.register_forward_hook(lambda module, args, out: blocks.append(out))
             for block in encoder.blocks]
    with torch.no_grad():
        output = encoder(mel)
        reference = hf(mel.transpose(1, 2), output_hidden_states=True).hidden_states
    for hook in hooks:
        hook.remove()
    assert len(blocks) == 3 and len(reference) == 4
    for index, block in enumerate(blocks):
        torch.testing.assert_close(block, reference[index + 1], atol=1e-5, rtol=1e-5)
    expected = encoder.ln_post2(torch.cat(reference[1:], dim=-1))
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


# -- loading OpenAI's checkpoint ------------------------------------------------------------
def test_the_encoder_loads_from_the_openai_checkpoint_and_says_what_it_left(checkpoint,
                                                                            caplog):
    with caplog.at_level(logging.INFO, logger="wespeaker_py.frontend.whisper"):
        front = frontend(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["model_state_dict"]
    own = front.encoder.state_dict()
    for name, tensor in own.items():
        if name.startswith("ln_post2."):
            continue
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, state[f"encoder.{name}"].float()), name
    assert torch.equal(own["ln_post2.weight"], torch.ones(FEAT_DIM))
    assert torch.equal(own["ln_post2.bias"], torch.zeros(FEAT_DIM))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 5, lines   # one line per kind, not one per tensor
    assert "Whisper encoder: 50 tensors loaded" in lines[0]
    assert "encoder.ln_post2.weight, encoder.ln_post2.bias" in lines[1]
    assert any("decoder (4 tensors)" in line for line in lines)
    assert any("encoder blocks 3 and above (the config builds 3) (15 tensors)" in line
               for line in lines)
    assert any("encoder.ln_post (2 tensors)" in line for line in lines)
    assert all(record.levelno == logging.INFO for record in caplog.records)


@pytest.mark.parametrize("change, key", [
    ({"output_size": 32}, "output_size"),
    ({"n_head": 4}, "n_head"),
    ({"n_mels": 128}, "n_mels"),
    ({"num_blocks": 5, "layer_ed": 4}, "num_blocks"),
])
def test_a_checkpoint_of_other_sizes_is_a_config_error_naming_the_key(checkpoint, change, key):
    with pytest.raises(ConfigError,
                       match=f"'dataset_args.whisper_encoder_args.{key}' is .* but .*tiny.pt"):
        frontend(checkpoint, **change)


def test_a_missing_foreign_or_incomplete_checkpoint_is_a_clear_error(tmp_path, checkpoint):
    missing = str(tmp_path / "whisper_hub" / "large-v2.pt")
    with pytest.raises(FileNotFoundError) as raised:
        frontend(missing)
    message = str(raised.value)
    assert "dataset_args.whisper_encoder_args.model_path" in message and missing in message
    assert LARGE_V2_URL in message and LARGE_V2_MD5 in message
    assert not os.path.exists(os.path.dirname(missing))   # nothing downloaded or created
    foreign = str(tmp_path / "state_dict.pt")
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="not an OpenAI Whisper checkpoint"):
        frontend(foreign)
    incomplete = torch.load(checkpoint, weights_only=True)
    del incomplete["model_state_dict"]["encoder.blocks.1.attn.key.weight"]
    torch.save(incomplete, str(tmp_path / "incomplete.pt"))
    with pytest.raises(ValueError, match="lacks the encoder tensor "
                                         "'encoder.blocks.1.attn.key.weight' \\(1 missing\\)"):
        frontend(str(tmp_path / "incomplete.pt"))
    # the architecture alone (a trained checkpoint holds every weight): no file needed
    bare = frontend(missing, pretrained=False)
    assert isinstance(bare, WhisperFrontend) and bare.output_dim == FEAT_DIM


# -- the front-end --------------------------------------------------------------------------
def test_frozen_fixes_every_encoder_weight_and_the_joint_step_trains_the_used_ones(checkpoint):
    frozen = frontend(checkpoint, frozen=True)
    assert not any(param.requires_grad for param in frozen.parameters())   # ln_post2 too
    assert not frozen(_wave(0.5)).requires_grad
    joint = frontend(checkpoint, frozen=False, layer_ed=1)
    trainable = {name for name, param in joint.named_parameters() if param.requires_grad}
    assert "encoder.ln_post2.weight" in trainable and "encoder.conv1.weight" in trainable
    assert "encoder.blocks.1.mlp.0.weight" in trainable
    # block 2 comes after layer_ed: it does not reach the output, so nothing there trains
    assert not any(name.startswith("encoder.blocks.2.") for name in trainable)
    joint(_wave(0.5)).sum().backward()
    assert all(param.grad is not None for name, param in joint.named_parameters()
               if name in trainable)


def test_frames_cmvn_and_spec_aug(checkpoint):
    plain = frontend(checkpoint).eval()
    assert [plain.num_frames(n) for n in (200, 201, 16000, 16160, 31 * 16000)] == \
        [0, 1, 50, 51, MAX_POSITIONS]
    feats = plain(_wave(1.01))
    assert feats.shape == (2, 51, FEAT_DIM)
    # WeSpeaker's configs leave cmvn on: the utterance mean over time is subtracted
    assert feats.mean(dim=1).abs().max() < 1e-5
    raw = build_frontend(dict(dataset_args(checkpoint), cmvn=False)).eval()(_wave(1.01))
    torch.testing.assert_close(feats, raw - raw.mean(dim=1, keepdim=True))
    augmented = build_frontend(dict(dataset_args(checkpoint), spec_aug=True,
                                    spec_aug_args={"prob": 1.0, "max_f": 4}))
    wav = _wave(1.0)
    assert torch.equal(augmented.eval()(wav), plain(wav))   # SpecAugment in training only
    zeroed = (augmented.train()(wav) == 0).all(dim=1).sum(dim=1)
    assert (zeroed >= 1).all()   # every row lost at least one feature band


def test_too_long_input_keeps_30_s_and_warns_once_too_short_gives_no_frame(checkpoint,
                                                                           caplog):
    from wespeaker_py.runtime.builder import SpeakerEmbedder
    from wespeaker_py.runtime.engine import TorchBackend
    front = frontend(checkpoint).eval()
    long = _wave(30.5, batch=1)
    # the last frame's window ends 200 samples after 30 s; a quieter tail from there (the
    # features' maximum lies before it) is not used
    tail = 30 * 16000 + 200
    long[:, tail:] *= 0.2
    other_tail = long.clone()
    other_tail[:, tail:] = 0.0
    other_start = long.clone()
    other_start[:, :16000] = 0.0
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.frontend.whisper"):
        assert front(_wave(30.0, batch=1)).shape[1] == MAX_POSITIONS
        assert not caplog.records   # exactly 30 s: all of it is used
        cut = front(long)
        assert cut.shape == (1, MAX_POSITIONS, FEAT_DIM)
        assert torch.equal(front(other_tail), cut)
        assert not torch.allclose(front(other_start), cut)
    assert len(caplog.records) == 1, "warned once"
    assert "30.5 s" in caplog.records[0].getMessage()
    assert "only its first 30 s are used" in caplog.records[0].getMessage()
    assert front(_wave(0.01)).shape == (2, 0, FEAT_DIM)
    head = get_model("whisper_PMFA_large_v2", feat_dim=FEAT_DIM, embed_dim=8).eval()
    backend = TorchBackend(SpeakerEmbedder(front, head), torch.device("cpu"))
    assert backend.is_too_short(backend.prepare(_wave(0.01)[0]))
    assert not backend.is_too_short(backend.prepare(_wave(0.1)[0]))


def test_extraction_counts_the_utterances_whisper_cut_at_30_s(checkpoint):
    from wespeaker_py.inference.extraction import ExtractionSummary, embed_utterances
    from wespeaker_py.runtime.builder import SpeakerEmbedder
    from wespeaker_py.runtime.engine import TorchBackend
    head = get_model("whisper_PMFA_large_v2", feat_dim=FEAT_DIM, embed_dim=8).eval()
    backend = TorchBackend(SpeakerEmbedder(frontend(checkpoint).eval(), head),
                           torch.device("cpu"))
    assert backend.cuts_input(30 * 16000 + 320) and not backend.cuts_input(30 * 16000)
    samples = [{"key": "long", "wav": _wave(30.5, batch=1)[0]},
               {"key": "short", "wav": _wave(2.0, batch=1)[0]},
               {"key": "tiny", "wav": _wave(0.01, batch=1)[0]}]
    written = {}

    class Writer:
        def write(self, key, embedding):
            written[key] = embedding

    summary = embed_utterances(backend, samples, Writer(), batch_size=2)
    assert sorted(written) == ["long", "short"] and summary.num_skipped == 1
    assert summary.cut == 1
    assert "1 of the done longer than the front-end takes" in summary.describe()
    total = ExtractionSummary()
    total.add(summary)
    total.add(summary)
    assert total.cut == 2   # the jobs of a parallel extraction add up
    fbank = TorchBackend(SpeakerEmbedder(build_frontend({"frontend": "fbank"}), head),
                         torch.device("cpu"))
    assert not fbank.cuts_input(60 * 16000)


@pytest.mark.parametrize("change, message", [
    ({"layer_ed": 3}, "layer_ed' \\(3\\) must be < num_blocks \\(3\\)"),
    ({"layer_st": 2, "layer_ed": 1}, "layer_st' \\(2\\) must be <= layer_ed"),
    ({"output_size": 18, "n_head": 4}, "output_size' \\(18\\) must be a multiple of n_head"),
    ({"n_mels": 64}, "n_mels' must be one of \\[80, 128\\]"),
    ({"sample_rate": 8000}, "sample_rate' must be 16000"),
    ({"use_lora": True}, "use_lora' \\(known keys"),
])
def test_bad_whisper_keys_name_the_key(change, message):
    with pytest.raises(ConfigError, match="dataset_args.whisper_encoder_args." + message):
        as_dataset_args(dataset_args(**change))


def test_whisper_chunks_count_10_ms_frames_at_16_khz():
    args = as_dataset_args(dataset_args())
    # WeSpeaker's dataset defaults for a block without frame_shift / frame_length
    assert (args.frame_shift_ms, args.frame_length_ms) == (10.0, 25.0)
    with pytest.raises(ConfigError, match="'dataset_args.resample_rate' must be 16000"):
        as_dataset_args(dict(dataset_args(), resample_rate=8000))


def test_where_the_weights_came_from_is_not_part_of_the_identity():
    from wespeaker_py.runtime.identity import frontend_settings
    settings = frontend_settings(as_dataset_args(dataset_args("/a/large-v2.pt")))
    assert settings == frontend_settings(as_dataset_args(dataset_args("/b/large-v2.pt",
                                                                      frozen=True)))
    assert settings != frontend_settings(as_dataset_args(dataset_args("/a/large-v2.pt",
                                                                      layer_st=0)))
    assert settings != frontend_settings(as_dataset_args(dict(dataset_args(), cmvn=False)))


# -- the model ------------------------------------------------------------------------------
def test_both_spellings_build_wespeakers_head():
    lower = get_model("whisper_PMFA_large_v2", feat_dim=FEAT_DIM, embed_dim=8)
    upper = get_model("Whisper_PMFA_large_v2", feat_dim=FEAT_DIM, embed_dim=8)
    assert type(lower) is type(upper) and lower.pooling.global_context_att
    upper.load_state_dict(lower.state_dict(), strict=True)
    features = torch.randn(3, 40, FEAT_DIM)
    lower.eval()
    upper.eval()
    assert torch.equal(lower(features), upper(features))
    assert lower(features).shape == (3, 8)
    with pytest.raises(ValueError, match=f"\\[batch, frames, {FEAT_DIM}\\]"):
        lower(torch.randn(1, 40, 80))
    with pytest.raises(TypeError, match="pooling_func"):
        get_model("whisper_PMFA_large_v2", feat_dim=FEAT_DIM, embed_dim=8, pooling_func="TSTP")


# -- training and embedding -----------------------------------------------------------------
def stage_config(exp_dir, corpus, model_path, frozen=True, **overrides):
    """The tiny trainer config with the Whisper front-end, as whisper_PMFA_stage0.yaml."""
    config = tiny_config(exp_dir, corpus, num_epochs=2, **overrides)
    config["dataset_args"].pop("fbank_args")
    config["dataset_args"].update(dataset_args(model_path, frozen=frozen), num_frms=100)
    config["model"] = "Whisper_PMFA_large_v2"   # the spelling of WeSpeaker's config
    config["model_args"] = {"embed_dim": 16}     # feat_dim left to the front-end, as there
    config["scheduler_args"] = {"initial_lr": 0.1, "final_lr": 0.05, "warm_up_epoch": 0,
                                "warm_from_zero": False}
    config["margin_update"] = {"initial_margin": 0.2, "final_margin": 0.2,
                               "increase_start_epoch": 0, "fix_start_epoch": 2,
                               "update_margin": True}
    return config


@pytest.mark.parametrize("model, frontend_name", [
    ("ResNet34", "whisper_encoder"),
    ("whisper_PMFA_large_v2", "fbank"),
])
def test_the_model_and_front_end_must_pair(corpus, checkpoint, tmp_path, model, frontend_name):
    message = f"'model' is {model}, .* but 'dataset_args.frontend' is {frontend_name}"
    with pytest.raises(ValueError, match=message):
        check_frontend(model, frontend_name)
    config = stage_config(str(tmp_path), corpus, checkpoint)
    if frontend_name == "fbank":
        config["dataset_args"] = tiny_config(str(tmp_path), corpus)["dataset_args"]
    config["model"] = model
    with pytest.raises(ConfigError, match=message):   # before any data or weights
        resolve(TrainConfig.from_dict(config), CPU_WORLD)


def test_a_feat_dim_other_than_the_front_ends_is_a_config_error(corpus, checkpoint, tmp_path):
    config = stage_config(str(tmp_path), corpus, checkpoint)
    config["model_args"]["feat_dim"] = 1280
    with pytest.raises(ConfigError, match="'model_args.feat_dim' is 1280 but the front-end "
                                          "makes 32-dim"):
        resolve(TrainConfig.from_dict(config), CPU_WORLD)


def test_export_refuses_the_whisper_front_end(tmp_path):
    from wespeaker_py.config import ModelConfig
    from wespeaker_py.export.checks import load_exportable_embedder
    config = ModelConfig(model="whisper_PMFA_large_v2", model_args={"feat_dim": FEAT_DIM,
                                                                    "embed_dim": 8},
                         dataset_args=as_dataset_args(dataset_args()))
    with pytest.raises(ConfigError, match="'dataset_args.frontend' is 'whisper_encoder'"):
        load_exportable_embedder(config, str(tmp_path / "model.pt"))


def test_frozen_training_then_extraction_and_load_model(corpus, checkpoint, tmp_path):
    import shutil

    from wespeaker_py import load_model
    from wespeaker_py.bin import average_model as average_cli
    from wespeaker_py.inference.extraction import extract_embeddings
    from wespeaker_py.io import load_embeddings
    local = str(tmp_path / "whisper_hub" / "large-v2.pt")
    os.makedirs(os.path.dirname(local))
    shutil.copy(checkpoint, local)
    exp = str(tmp_path / "exp")
    plan = resolve(TrainConfig.from_dict(stage_config(exp, corpus, local)), CPU_WORLD)
    assert plan.config.model_args["feat_dim"] == FEAT_DIM   # filled from the front-end
    model = build_model(plan)
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and not any(name.startswith("frontend.") for name in trainable)
    pretrained = {key: value.clone() for key, value in model.frontend.state_dict().items()}

    history = run_training(stage_config(exp, corpus, local))
    assert [result.epoch for result in history] == [1, 2]
    state = load_checkpoint(os.path.join(exp, "models", "model_2.pt"))["model"]
    for key, tensor in pretrained.items():   # the frozen encoder did not move, ln_post2 too
        assert torch.equal(state["frontend." + key], tensor), key
    first = load_checkpoint(os.path.join(exp, "models", "model_1.pt"))["model"]
    assert not torch.equal(first["fc.weight"], state["fc.weight"])   # the head trained

    # extraction and load_model read every weight from the checkpoint: no large-v2.pt needed
    os.remove(local)
    models = os.path.join(exp, "models")
    avg = os.path.join(models, "avg_model.pt")
    average_cli.main(["--src_path", models, "--dst_model", avg, "--num", "1"])
    config = load_config(os.path.join(exp, "config.yaml"))
    assert config.model == "Whisper_PMFA_large_v2"
    ark = str(tmp_path / "emb" / "xvector.ark")
    summary = extract_embeddings(config, avg, "raw", corpus["raw_list"], ark)
    assert summary.extracted == 24 and summary.num_skipped == 0
    extracted = load_embeddings(ark[:-4] + ".scp")
    embedder = load_embedder(config, avg)
    key = "spk1-utt2"
    wav = os.path.join(os.path.dirname(corpus["raw_list"]), "wav", key + ".wav")
    import soundfile as sf
    samples, _ = sf.read(wav, dtype="int16")
    with torch.no_grad():
        direct = embedder(embedder.features(torch.from_numpy(samples).float()[None]))[0]
    torch.testing.assert_close(torch.from_numpy(extracted.matrix[extracted.index[key]]), direct,
                               atol=1e-5, rtol=1e-5)
    api = load_model(exp, device="cpu")
    torch.testing.assert_close(torch.from_numpy(api.embed(samples / 32768.0, sample_rate=16000)),
                               direct, atol=1e-5, rtol=1e-5)
