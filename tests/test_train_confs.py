"""Every shipped config loads, validates and builds its front-end, model and head."""
import os

import pytest
import torch

from train_helpers import CPU_WORLD
from wespeaker_py.config import load_config, read_yaml
from wespeaker_py.train import builder
from wespeaker_py.train.plan import resolve

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF_DIR = os.path.join(REPO_ROOT, "conf")
MODEL_CONFIGS = ["resnet34", "resnet221", "resnet293", "ecapa_tdnn_c512", "ecapa_tdnn_c1024",
                 "campplus", "eres2net34_base", "res2net34_base", "repvgg_tiny_a0",
                 "gemini_dfresnet114", "simam_resnet34", "simam_resnet100", "xvector",
                 "xi_vector"]
# models with a large-margin (LM) row in the reference results table
LM_CONFIGS = ["resnet34", "resnet221", "resnet293", "ecapa_tdnn_c512", "ecapa_tdnn_c1024",
              "campplus", "eres2net34_base", "gemini_dfresnet114", "simam_resnet34",
              "simam_resnet100", "xvector", "xi_vector"]
ALL_CONFIGS = MODEL_CONFIGS + [name + "_lm" for name in LM_CONFIGS]
# the three steps of the WavLM recipe (frontend: s3prl, feat_dim filled from the front-end)
WAVLM_CONFIGS = ["ecapa_tdnn_WavLM_frozen", "ecapa_tdnn_WavLM_joint_ft",
                 "ecapa_tdnn_WavLM_joint_lmft"]
# ReDimNet (72-bin fbank) and ReDimNet2 (TFMel, SphereFace2, then LM fine-tuning)
REDIMNET_CONFIGS = ["redimnet", "redimnet2", "redimnet2_lm"]
# the three steps of the W2V-BERT recipe (LoRA on a frozen encoder, joint, large margin)
W2VBERT_CONFIGS = ["w2vbert_s1_lora", "w2vbert_s2_ft", "w2vbert_s3_lmft"]
# the two steps of the Whisper-PMFA recipe (encoder frozen, then everything trains)
WHISPER_CONFIGS = ["whisper_PMFA_stage0", "whisper_PMFA_stage1"]
MINI_CONF_DIR = os.path.join(REPO_ROOT, "examples", "mini", "conf")


def test_the_conf_directory_holds_exactly_these_configs():
    # links are WeSpeaker's names for these (tests/test_recipes.py checks them)
    shipped = sorted(name[:-len(".yaml")] for name in os.listdir(CONF_DIR)
                     if name.endswith(".yaml") and not os.path.islink(os.path.join(CONF_DIR, name)))
    assert shipped == sorted(ALL_CONFIGS + WAVLM_CONFIGS + REDIMNET_CONFIGS + W2VBERT_CONFIGS
                             + WHISPER_CONFIGS)


NUM_SPEAKERS = 10


@pytest.fixture(scope="module")
def utt2spk(tmp_path_factory):
    """A training label file of 10 speakers, 60 utterances each."""
    path = tmp_path_factory.mktemp("labels") / "utt2spk"
    path.write_text("".join(f"utt{index} spk{index % NUM_SPEAKERS}\n" for index in range(600)))
    return str(path)


def _plan(name, utt2spk, *overrides):
    """The plan of a shipped config with the training data named on the command line."""
    config = load_config(os.path.join(CONF_DIR, name + ".yaml"),
                         [("train_data", "unused"), ("train_label", utt2spk), ("data_type", "raw"),
                          *overrides])
    return resolve(config, CPU_WORLD)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_builds_model_and_head(name, utt2spk):
    plan = _plan(name, utt2spk)
    assert plan.frontend.output_dim == 80
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = builder.build_model(plan)
    weight = model.projection.weight
    # speed perturbation (or LM fine-tuning after it) gives 3 classes per speaker
    assert weight.shape == (3 * NUM_SPEAKERS, plan.model_config.model_args["embed_dim"])
    optimizer = builder.build_optimizer(plan, model)
    assert type(optimizer).__name__ == plan.optimizer


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_recipe_hyper_parameters(name):
    config = read_yaml(os.path.join(CONF_DIR, name + ".yaml"))
    data = config["dataset_args"]
    assert data["fbank_args"] == {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25,
                                  "dither": 1.0}
    assert (data["num_frms"], data["aug_prob"], data["speed_perturb"]) == (200, 0.6, True)
    assert data["filter_args"] == {"min_num_frames": 100, "max_num_frames": 800}
    assert data["shuffle_args"]["shuffle_size"] == 2500
    assert config["projection_args"]["project_type"] == "arc_margin"
    assert config["projection_args"]["scale"] == 32.0
    if name == "gemini_dfresnet114":  # WeSpeaker trains it with AdamW and a fixed margin
        assert config["optimizer"] == "AdamW" and config["num_epochs"] == 165
        assert config["margin_update"]["update_margin"] is False
        return
    assert config["num_epochs"] == 150
    assert config["optimizer"] == "SGD"
    assert config["optimizer_args"] == {"momentum": 0.9, "nesterov": True,
                                        "weight_decay": 0.0001}
    assert config["scheduler_args"] == {"initial_lr": 0.1, "final_lr": 5e-5,
                                        "warm_up_epoch": 6, "warm_from_zero": True}
    margin = config["margin_update"]
    assert (margin["initial_margin"], margin["final_margin"]) == (0.0, 0.2)
    assert (margin["increase_start_epoch"], margin["fix_start_epoch"]) == (20, 40)


@pytest.mark.parametrize("name", LM_CONFIGS)
def test_lm_config_matches_its_base(name, utt2spk):
    base = read_yaml(os.path.join(CONF_DIR, name + ".yaml"))
    lm = read_yaml(os.path.join(CONF_DIR, name + "_lm.yaml"))
    assert lm["do_lm"] is True
    assert (lm["model"], lm["model_args"]) == (base["model"], base["model_args"])
    assert lm["dataset_args"]["num_frms"] == 600
    assert lm["dataloader_args"]["batch_size"] in (32, 64)
    assert (lm["num_epochs"], lm["save_epoch_interval"], lm["num_avg"]) == (5, 1, 1)
    margin = lm["margin_update"]
    assert (margin["initial_margin"], margin["final_margin"]) == (0.5, 0.5)
    assert lm["scheduler_args"] == {"initial_lr": 1e-4, "final_lr": 2.5e-5,
                                    "warm_up_epoch": 1, "warm_from_zero": True}
    # the LM run must see the same head size as the run it starts from
    lm_plan, base_plan = _plan(name + "_lm", utt2spk), _plan(name, utt2spk)
    assert lm_plan.num_classes == base_plan.num_classes == 3 * NUM_SPEAKERS
    # WeSpeaker sets the flag off only after building its data pipeline: its LM stage
    # trains with speed perturbation, and so does ours
    assert lm_plan.dataset_args.speed_perturb is True


@pytest.fixture(scope="module")
def tiny_wavlm_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny")
    write_random_wavlm(path, tiny_wavlm_config())
    return path


@pytest.mark.parametrize("name", WAVLM_CONFIGS)
def test_wavlm_config_builds_on_a_stand_in_wavlm(name, tiny_wavlm_dir, utt2spk):
    plan = _plan(name, utt2spk,
                 ("dataset_args.s3prl_args.upstream_args.path_or_url", tiny_wavlm_dir))
    assert plan.dataset_args.frontend == "s3prl" and plan.model_holds_frontend
    assert plan.config.model_args["feat_dim"] == plan.frontend.output_dim  # -1 filled in
    assert plan.frontend.frozen == (name == "ecapa_tdnn_WavLM_frozen")
    with torch.device("meta"):
        model = builder.build_model(plan)
    assert model.frontend is plan.frontend
    assert plan.num_classes == 30  # speed perturbation: 3 classes a speaker
    assert model.projection.weight.shape[1] == plan.model_config.model_args["embed_dim"]


@pytest.mark.parametrize("name", W2VBERT_CONFIGS)
def test_w2vbert_config_builds_on_a_stand_in_w2vbert(name, tmp_path, utt2spk):
    pytest.importorskip("peft")
    from wespeaker_py.frontend.w2vbert_random import tiny_w2vbert_config, write_random_w2vbert
    model_dir = str(tmp_path / "tiny")
    write_random_w2vbert(model_dir, tiny_w2vbert_config(2))
    # the real model is 24 layers of 1024: the stand-in's size replaces those two keys
    plan = _plan(name, utt2spk, ("dataset_args.w2vbert_args.model_name", model_dir),
                 ("model_args.feat_dim", "-1"), ("model_args.num_frontend_hidden_layers", "2"))
    assert plan.model_holds_frontend and plan.config.model_args["feat_dim"] == 32
    step = W2VBERT_CONFIGS.index(name) + 1
    assert plan.frontend.frozen == plan.frontend.use_lora == (step == 1)
    assert plan.dataset_args.speed_perturb == (step != 3)
    # speed-perturbed copies are classes of their own, except in large-margin fine-tuning
    assert plan.num_classes == (10 if step == 3 else 30)
    assert plan.config.scheduler == ("WarmupLR_withStepDecay" if step == 1
                                     else "WarmupCosineScheduler")
    model = builder.build_model(plan)
    assert model.frontend is plan.frontend
    assert model.projection.weight.shape[1] == plan.model_config.model_args["embed_dim"]


def test_whisper_frozen_config_builds_on_a_stand_in_whisper(tmp_path, utt2spk):
    from wespeaker_py.frontend.whisper_random import tiny_whisper_dims, write_random_whisper
    path = str(tmp_path / "tiny.pt")
    write_random_whisper(path, tiny_whisper_dims(4, 80, 16, 2))
    # large-v2 is 32 blocks of 1280: the stand-in's sizes replace those keys
    key = "dataset_args.whisper_encoder_args."
    plan = _plan("whisper_PMFA_stage0", utt2spk, (key + "model_path", path),
                 (key + "num_blocks", "3"), (key + "output_size", "16"), (key + "n_head", "2"),
                 (key + "layer_st", "1"), (key + "layer_ed", "2"))
    assert plan.model_holds_frontend and plan.frontend.frozen
    assert plan.config.model_args["feat_dim"] == 32   # filled from the front-end
    assert plan.config.model == "Whisper_PMFA_large_v2" and plan.num_classes == 30
    model = builder.build_model(plan)
    assert model.frontend is plan.frontend
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and not any(name.startswith("frontend.") for name in trainable)


def test_whisper_joint_config_builds_large_v2s_first_24_blocks(utt2spk):
    # no model_path: the weights come from the frozen step's checkpoint; shapes only here
    with torch.device("meta"):
        plan = _plan("whisper_PMFA_stage1", utt2spk)
        model = builder.build_model(plan)
    assert not plan.frontend.frozen and plan.config.model_args["feat_dim"] == 8 * 1280
    params = {part: sum(param.numel() for name, param in model.named_parameters()
                        if name.startswith(part)) for part in ("frontend.", "projection.")}
    assert params["frontend."] == 477_473_280   # conv1, conv2, 24 blocks, ln_post2
    speaker = sum(param.numel() for param in model.parameters()) - sum(params.values())
    assert speaker == 9_226_560   # ASTP with global context, BatchNorm, fc to 192
    assert all(param.requires_grad for param in model.parameters())


@pytest.mark.parametrize("path", [os.path.join(CONF_DIR, name + ".yaml")
                                  for name in REDIMNET_CONFIGS]
                         + [os.path.join(MINI_CONF_DIR, "redimnet2_b0.yaml")])
def test_redimnet_config_builds_its_frontend_model_and_head(path, utt2spk):
    config = load_config(path, [("train_data", "unused"), ("train_label", utt2spk),
                                ("data_type", "raw")])
    plan = resolve(config, CPU_WORLD)
    expected = "TFMelFeatures" if plan.dataset_args.frontend == "tfmel" else "FbankFeatures"
    assert type(plan.frontend).__name__ == expected
    assert plan.frontend.output_dim == plan.model_config.model_args["feat_dim"] == 72
    with torch.device("meta"):
        model = builder.build_model(plan)
    assert model.projection.weight.shape[1] == plan.model_config.model_args["embed_dim"] == 192
    builder.build_optimizer(plan, model)


def test_redimnet2_lm_config_continues_the_first_run(utt2spk):
    base = read_yaml(os.path.join(CONF_DIR, "redimnet2.yaml"))
    lm = read_yaml(os.path.join(CONF_DIR, "redimnet2_lm.yaml"))
    assert (lm["model"], lm["model_args"]) == (base["model"], base["model_args"])
    assert lm["dataset_args"]["tfmel_args"] == base["dataset_args"]["tfmel_args"]
    assert (lm["dataset_args"]["num_frms"], lm["dataset_args"]["speed_perturb"]) == (600, False)
    margin = lm["margin_update"]
    assert (margin["initial_margin"], margin["final_margin"], margin["update_margin"]) == \
        (0.3, 0.3, False)
    # WeSpeaker's LM config leaves do_lm off: without start weights the head has one row
    # per speaker (a 3x head of the first run gives its first rows when loaded)
    assert _plan("redimnet2_lm", utt2spk).num_classes == NUM_SPEAKERS
