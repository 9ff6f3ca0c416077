"""W2V-BERT 2.0 front-end, W2VBert_Adapter_MFA, LoRA and its merge, and run_w2v.sh's three steps.

A tiny randomly initialised W2V-BERT (2 conformer layers, hidden size 32) stands in
for facebook/w2v-bert-2.0; the Hugging Face processor and model are the reference.
"""
import os
import runpy
import shutil
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from train_helpers import (CPU_WORLD, load_checkpoint, make_speaker_corpus,  # noqa: E402
                           run_training, tiny_config, write_config)
from train_helpers import single_torch_thread  # noqa: E402,F401  (autouse fixture)
from wespeaker_py.bin import average_model as average_cli  # noqa: E402
from wespeaker_py.bin import merge_lora as merge_cli  # noqa: E402
from wespeaker_py.config import (ConfigError, TrainConfig, as_dataset_args,  # noqa: E402
                                 load_config)
from wespeaker_py.frontend.factory import build_frontend  # noqa: E402
from wespeaker_py.frontend.w2vbert import W2VBertFrontend, merge_lora  # noqa: E402
from wespeaker_py.frontend.w2vbert_random import (tiny_w2vbert_config,  # noqa: E402
                                                  write_random_w2vbert)
from wespeaker_py.models import get_model  # noqa: E402
from wespeaker_py.runtime import load_embedder  # noqa: E402
from wespeaker_py.train.plan import resolve  # noqa: E402

HIDDEN, LAYERS = 32, 2
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["linear_q", "linear_v"],
        "lora_dropout": 0.0, "bias": "none"}


@pytest.fixture(scope="module")
def w2vbert_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("w2vbert") / "tiny")
    write_random_w2vbert(path, tiny_w2vbert_config(LAYERS), seed=0)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")), num_spks=4,
                               utts_per_spk=8)


def dataset_args(model_dir, **w2vbert):
    return {"frontend": "w2vbert", "cmvn": False, "spec_aug": False,
            "w2vbert_args": dict({"model_name": model_dir}, **w2vbert)}


def frontend(model_dir, **w2vbert):
    return build_frontend(dataset_args(model_dir, **w2vbert))


def mfa_model(**args):
    return get_model("W2VBert_Adapter_MFA", **dict(
        {"feat_dim": HIDDEN, "embed_dim": 16, "adapter_dim": 8,
         "num_frontend_hidden_layers": LAYERS}, **args))


def _wave(seconds=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 3000 * torch.randn(2, int(16000 * seconds), generator=generator)


def test_make_tiny_w2vbert_tool_writes_a_loadable_directory(tmp_path, monkeypatch):
    out = str(tmp_path / "tiny")
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools",
                        "make_tiny_w2vbert.py")
    monkeypatch.setattr(sys, "argv", ["make_tiny_w2vbert.py", "--out", out, "--layers", "3"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(tool, run_name="__main__")
    assert done.value.code == 0
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert frontend(out).num_hidden_states == 4


# -- the model ------------------------------------------------------------------------------
def test_the_model_has_wespeakers_keys_and_reads_the_last_states():
    model = mfa_model(n_mfa_layers=2).eval()
    keys = set(model.state_dict())
    assert {"adapter_layers.0.0.weight", "adapter_layers.1.1.bias", "adapter_layers.1.3.weight",
            "pooling.attention.0.weight", "bottleneck.weight"} <= keys
    assert not any(key.startswith("adapter_layers.2.") for key in keys)
    states = torch.randn(2, 30, LAYERS + 1, HIDDEN)
    embedding = model(states.flatten(2))
    assert embedding.shape == (2, 16)
    changed = states.clone()
    changed[:, :, 0] += 1.0  # the first state is not among the last two
    assert torch.equal(model(changed.flatten(2)), embedding)
    changed[:, :, 2] += 1.0
    assert not torch.allclose(model(changed.flatten(2)), embedding)


def test_the_model_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="n_mfa_layers must be -1 or in \\[1, 3\\]"):
        mfa_model(n_mfa_layers=4)
    with pytest.raises(ValueError, match="3 x 32"):
        mfa_model()(torch.randn(1, 20, 80))


def test_any_pooling_reads_the_adapted_states():
    model = mfa_model(pooling_func="TSTP").eval()
    assert model(torch.randn(2, 30, (LAYERS + 1) * HIDDEN)).shape == (2, 16)


# -- the front-end --------------------------------------------------------------------------
@pytest.mark.parametrize("num_samples", [16000, 16160])  # even and odd fbank frame counts
def test_hidden_states_are_those_of_the_hugging_face_processor_and_model(w2vbert_dir,
                                                                         num_samples):
    from transformers import SeamlessM4TFeatureExtractor
    front = frontend(w2vbert_dir).eval()
    wav = _wave(num_samples / 16000)[:1]
    processor = SeamlessM4TFeatureExtractor(padding_value=1.0)
    inputs = processor([wav[0].numpy() / 32768], return_tensors="pt", sampling_rate=16000,
                       padding="longest")
    with torch.no_grad():
        reference = front.network(inputs["input_features"],
                                  attention_mask=inputs["attention_mask"],
                                  output_hidden_states=True).hidden_states
        ours = front(wav)
    assert len(reference) == LAYERS + 1
    assert ours.shape == (1, front.num_frames(num_samples), (LAYERS + 1) * HIDDEN)
    torch.testing.assert_close(ours, torch.cat(reference, dim=-1), atol=1e-4, rtol=1e-4)


def test_frozen_and_lora_decide_what_trains(w2vbert_dir):
    frozen = frontend(w2vbert_dir)
    assert not any(param.requires_grad for param in frozen.parameters())
    assert "masked_spec_embed" not in dict(frozen.named_parameters())  # dropped, as WeSpeaker
    assert all(param.requires_grad for param in frontend(w2vbert_dir, frozen=False).parameters())
    lora = frontend(w2vbert_dir, use_lora=True, lora_config_args=LORA).train()
    trainable = [name for name, param in lora.named_parameters() if param.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert len(trainable) == 2 * 2 * LAYERS  # A and B of linear_q and linear_v per layer
    keys = set(lora.state_dict())
    layer = "encoder.base_model.model.encoder.layers.0.self_attn.linear_q."
    assert {layer + "base_layer.weight", layer + "lora_A.default.weight",
            layer + "lora_B.default.weight"} <= keys
    # the frozen encoder stays in eval mode (no dropout) while the LoRA modules train
    assert not lora.network.encoder.training
    assert any(module.training for name, module in lora.named_modules() if "lora_A" in name)
    assert frontend(w2vbert_dir, frozen=False).train().network.encoder.training


def test_too_short_input_is_skipped_as_too_short_not_an_error(w2vbert_dir):
    from wespeaker_py.runtime.builder import SpeakerEmbedder
    from wespeaker_py.runtime.engine import TorchBackend
    front = frontend(w2vbert_dir).eval()
    min_samples = front.features.min_samples  # 35 ms: the fewest giving a normalisable frame
    assert front.num_frames(min_samples - 1) == 0 and front.num_frames(min_samples) == 1
    assert front(_wave(0.02)).shape == (2, 0, (LAYERS + 1) * HIDDEN)
    backend = TorchBackend(SpeakerEmbedder(front, mfa_model().eval()), torch.device("cpu"))
    assert backend.min_samples >= min_samples
    assert backend.is_too_short(backend.prepare(_wave(0.03)[0]))
    assert not backend.is_too_short(backend.prepare(_wave(1.0)[0]))


def test_layerdrop_on_trainable_weights_makes_ddp_look_for_unused_parameters(
        tmp_path, corpus, monkeypatch):
    from transformers import Wav2Vec2BertConfig
    from wespeaker_py.train import step as step_module
    from wespeaker_py.train.builder import build_model
    model_dir = str(tmp_path / "layerdrop")
    config = tiny_w2vbert_config(LAYERS).to_dict()
    config["layerdrop"] = 0.5
    write_random_w2vbert(model_dir, Wav2Vec2BertConfig(**config))
    assert not frontend(model_dir).drops_layers  # frozen: the encoder stays in eval mode
    assert frontend(model_dir, frozen=False).drops_layers
    flags = []
    monkeypatch.setattr(step_module, "wrap_ddp",
                        lambda module, ctx, find_unused_parameters=False:
                        flags.append(find_unused_parameters) or module)
    for step, expected in ((2, True), (1, False)):
        plan = resolve(TrainConfig.from_dict(step_config(str(tmp_path / "exp"), corpus,
                                                         model_dir, step)), CPU_WORLD)
        model = build_model(plan)
        step_module.TrainingStep(plan, model, None, torch.optim.SGD(model.parameters(), lr=0.1))
        assert flags[-1] is expected, step


def test_missing_weights_and_urls_are_clear_errors(w2vbert_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a directory nor in the local"):
        frontend(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="URL"):
        frontend("https://example.com/w2v-bert-2.0")
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(os.path.join(w2vbert_dir, "config.json"), config_only)
    with pytest.raises(FileNotFoundError, match="no W2V-BERT weights"):
        frontend(str(config_only))
    # the architecture alone, for a checkpoint that holds every weight
    bare = build_frontend(dataset_args(str(config_only)), pretrained=False)
    assert isinstance(bare, W2VBertFrontend) and bare.output_dim == (LAYERS + 1) * HIDDEN


@pytest.mark.parametrize("name", ["facebook/w2v-bert-2.0", "/elsewhere/w2v-bert-2.0"])
def test_a_trained_model_needs_no_pretrained_directory(name, caplog):
    """A trained checkpoint holds every weight, so embedding it needs only the architecture:
    W2V-BERT 2.0's (transformers' defaults) when the configured directory is absent."""
    args = dataset_args(name, download_dir="/nonexistent/cache")
    with pytest.raises(FileNotFoundError, match="neither a directory nor in the local"):
        build_frontend(args)  # training needs the pretrained weights
    with torch.device("meta"):
        bare = build_frontend(args, pretrained=False)
    assert (bare.num_hidden_states, bare.hidden_size) == (25, 1024)
    assert name in caplog.text and "is not on this machine" in caplog.text
    assert bare.num_frames(48240) == 150  # a 3 s training chunk: 300 fbank frames, stacked


@pytest.mark.parametrize("key, value, message", [
    ("use_bnb", True, "use_bnb"),
    ("lora_config_args", {"r": 4, "rank": 2}, "lora_config_args.rank"),
])
def test_bad_w2vbert_keys_name_the_key(w2vbert_dir, key, value, message):
    with pytest.raises(ConfigError, match=message):
        as_dataset_args(dataset_args(w2vbert_dir, **{key: value}))


def test_cmvn_is_refused_with_the_w2vbert_front_end(w2vbert_dir):
    with pytest.raises(ConfigError, match="dataset_args.cmvn' must be false"):
        as_dataset_args(dict(dataset_args(w2vbert_dir), cmvn=True))


def test_merging_lora_keeps_the_output_and_drops_the_wrapper(w2vbert_dir):
    lora = frontend(w2vbert_dir, use_lora=True, lora_config_args=LORA).eval()
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:  # LoRA starts as a no-op (B = 0): make it act
                param.normal_(0, 0.5)
        wav = _wave()
        before = lora(wav)
        merged = merge_lora(lora).eval()
        after = merged(wav)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    plain = frontend(w2vbert_dir, frozen=False)
    assert set(merged.state_dict()) == set(plain.state_dict())
    assert not torch.allclose(plain.eval()(wav), before, atol=1e-3)


# -- training: run_w2v.sh's three steps ---------------------------------------------------
def step_config(exp_dir, corpus, model_dir, step, **overrides):
    """The tiny trainer config with the W2V-BERT front-end, as w2vbert_s{1,2,3}*.yaml do."""
    lora = step == 1
    config = tiny_config(exp_dir, corpus, num_epochs=2, **overrides)
    config["dataset_args"].pop("fbank_args")
    config["dataset_args"].update(
        dataset_args(model_dir, frozen=lora, use_lora=lora,
                     lora_config_args=LORA if lora else None),
        num_frms=100, filter_args={"min_num_frames": 50, "max_num_frames": 800})
    config["model"] = "W2VBert_Adapter_MFA"
    config["model_args"] = {"feat_dim": -1, "embed_dim": 16, "pooling_func": "ASP",
                            "n_mfa_layers": -1, "adapter_dim": 8, "dropout": 0.0,
                            "num_frontend_hidden_layers": LAYERS}
    config["optimizer"] = "AdamW"
    config["optimizer_args"] = {"lr": 0.01 if lora else 0.001, "weight_decay": 0.0001}
    if lora:
        config["scheduler"] = "WarmupLR_withStepDecay"
        config["scheduler_args"] = {"warmup_step": 1, "decay_step": 1, "gamma": 0.5}
    else:
        config["scheduler"] = "WarmupCosineScheduler"
        config["scheduler_args"] = {"min_lr": 0.0005, "max_lr": 0.001, "warmup_epoch": 0,
                                    "fix_epoch": 1}
    config["margin_update"] = {"initial_margin": 0.2, "final_margin": 0.2,
                               "increase_start_epoch": 1, "fix_start_epoch": 1,
                               "update_margin": False}
    config["do_lm"] = step == 3
    return config


def test_a_model_whose_layers_do_not_match_the_front_end_is_a_config_error(
        corpus, w2vbert_dir, tmp_path):
    config = step_config(str(tmp_path), corpus, w2vbert_dir, 2)
    config["model_args"]["num_frontend_hidden_layers"] = 24
    with pytest.raises(ConfigError, match="model_args.num_frontend_hidden_layers' is 24"):
        resolve(TrainConfig.from_dict(config), CPU_WORLD)


def test_lora_then_merge_then_joint_then_large_margin(corpus, w2vbert_dir, tmp_path):
    pretrained = W2VBertFrontend.from_dataset_args(dataset_args(w2vbert_dir)).state_dict()

    # step 1: LoRA on the frozen encoder
    s1 = str(tmp_path / "s1")
    history = run_training(step_config(s1, corpus, w2vbert_dir, 1))
    assert [result.epoch for result in history] == [1, 2]
    state = load_checkpoint(os.path.join(s1, "models", "model_2.pt"))["model"]
    base = "frontend.encoder.base_model.model."
    for key, tensor in pretrained.items():  # the pretrained weights did not move
        name = key[len("encoder."):]
        stored = state.get(base + name.replace("linear_q.", "linear_q.base_layer.")
                           .replace("linear_v.", "linear_v.base_layer."))
        assert stored is not None and torch.equal(stored, tensor), key
    lora_b = [key for key in state if "lora_B" in key]
    assert lora_b and all(state[key].abs().max() > 0 for key in lora_b)  # LoRA trained

    models = os.path.join(s1, "models")
    avg = os.path.join(models, "avg_model.pt")
    average_cli.main(["--src_path", models, "--dst_model", avg, "--num", "1"])
    # an unmerged LoRA model embeds as it is
    lora_embedder = load_embedder(load_config(os.path.join(s1, "config.yaml")), avg)
    wav = _wave()
    with torch.no_grad():
        lora_embeddings = lora_embedder(lora_embedder.features(wav))

    # stage 5: merge, through the command line
    merged = os.path.join(models, "merged_avg_model.pt")
    merge_cli.main(["--config", os.path.join(s1, "config.yaml"), "--checkpoint_in", avg,
                    "--checkpoint_out", merged])
    merged_state = load_checkpoint(merged)
    assert not any("lora_" in key or "base_model" in key for key in merged_state)
    assert "projection.weight" in merged_state and "bottleneck.weight" in merged_state

    # step 2: joint fine-tuning from the merged model (run_w2v.sh copies it to model_0.pt)
    s2 = str(tmp_path / "s2")
    os.makedirs(os.path.join(s2, "models"))
    model_0 = os.path.join(s2, "models", "model_0.pt")
    shutil.copy(merged, model_0)
    config_s2 = step_config(s2, corpus, w2vbert_dir, 2, checkpoint=model_0)
    # the merged model embeds as the LoRA model did
    merged_embedder = load_embedder(load_config(_saved(config_s2, s2)), merged)
    with torch.no_grad():
        torch.testing.assert_close(merged_embedder(merged_embedder.features(wav)),
                                   lora_embeddings, atol=1e-4, rtol=1e-4)
    joint = run_training(config_s2)
    assert [result.epoch for result in joint] == [1, 2]
    # it went on from step 1 rather than from scratch
    assert joint[0].loss < history[0].loss
    state = load_checkpoint(os.path.join(s2, "models", "model_2.pt"))["model"]
    moved = [key for key, tensor in merged_state.items()
             if key.startswith("frontend.") and not torch.equal(state[key], tensor)]
    assert len(moved) > 0.5 * sum(key.startswith("frontend.") for key in merged_state)
    average_cli.main(["--src_path", os.path.join(s2, "models"),
                      "--dst_model", os.path.join(s2, "models", "avg_model.pt"), "--num", "1"])

    # step 3: large-margin fine-tuning from step 2's average
    s3 = str(tmp_path / "s3")
    os.makedirs(os.path.join(s3, "models"))
    shutil.copy(os.path.join(s2, "models", "avg_model.pt"),
                os.path.join(s3, "models", "model_0.pt"))
    lm = run_training(step_config(s3, corpus, w2vbert_dir, 3,
                                  checkpoint=os.path.join(s3, "models", "model_0.pt")))
    assert [result.epoch for result in lm] == [1, 2]
    embedder = load_embedder(load_config(os.path.join(s3, "config.yaml")),
                             os.path.join(s3, "models", "model_2.pt"))
    with torch.no_grad():
        embeddings = embedder(embedder.features(wav))
    assert embeddings.shape == (2, 16) and torch.isfinite(embeddings).all()
    # the one-line use of a trained model: the experiment folder and its averaged model
    average_cli.main(["--src_path", os.path.join(s3, "models"),
                      "--dst_model", os.path.join(s3, "models", "avg_model.pt"), "--num", "1"])
    from wespeaker_py import load_model
    model = load_model(s3, device="cpu")
    np_wav = wav[0].numpy() / 32768.0
    torch.testing.assert_close(torch.from_numpy(model.embed(np_wav, sample_rate=16000)),
                               embeddings[0], atol=1e-5, rtol=1e-5)


def _saved(config, exp_dir):
    """Write ``config`` as the experiment's config.yaml would be (before training has)."""
    os.makedirs(exp_dir, exist_ok=True)
    return write_config(os.path.join(exp_dir, "planned.yaml"),
                        dict(config, model_args=dict(config["model_args"], feat_dim=HIDDEN)))
