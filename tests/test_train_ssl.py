"""Training on the SSL (WavLM) front-end: config checks, frozen and joint modes, the 2-step recipe.

A tiny randomly initialised WavLM (2 layers, hidden size 32) stands in for
WavLM Large. Its random features carry next to no speaker information (a
nearest-neighbour probe on them scores at chance on the generated corpus),
so the mini recipe shows the loss falling as the model and head fit, not
speakers being told apart; the exact behaviour of each mode is checked on
single steps instead.
"""
import os
import shutil

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from train_helpers import (CPU_WORLD, capture_first_step, exponential_lr,  # noqa: E402
                           load_checkpoint, make_speaker_corpus, plan_of, run_training,
                           tiny_config, write_config)
from train_helpers import single_torch_thread  # noqa: E402,F401  (autouse fixture)
from wespeaker_py.bin import average_model as average_cli  # noqa: E402
from wespeaker_py.bin import train as train_cli  # noqa: E402
from wespeaker_py.cli.common import run_main  # noqa: E402
from wespeaker_py.frontend.ssl import (SSLFrontend, load_wavlm,  # noqa: E402
                                       with_pretrained_frontend_weights)
from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm  # noqa: E402
from wespeaker_py.runtime import load_embedder  # noqa: E402
from wespeaker_py.train import builder  # noqa: E402
from wespeaker_py.train.checkpoint import parameter_digest  # noqa: E402
from wespeaker_py.train.schedulers import ExponentialDecrease  # noqa: E402
from wespeaker_py.train.loop import train_epoch  # noqa: E402
from wespeaker_py.train.plan import resolve  # noqa: E402
from wespeaker_py.train.trainer import Trainer  # noqa: E402
from wespeaker_py.config import ConfigError, load_config, read_yaml  # noqa: E402

UPSTREAM = "frontend.upstream."
NUM_SPEAKERS = 4


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wavlm") / "tiny")
    write_random_wavlm(path, tiny_wavlm_config(), seed=0)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("corpus")),
                               num_spks=NUM_SPEAKERS, utts_per_spk=8)


def ssl_config(exp_dir, corpus, wavlm_dir, frozen, lr_scale=1.0, gradient_checkpointing=False,
               **overrides):
    """The tiny training config on the tiny WavLM (WeSpeaker's s3prl keys), margin fixed at 0."""
    config = tiny_config(exp_dir, corpus, **overrides)
    dataset_args = config["dataset_args"]
    del dataset_args["fbank_args"]
    dataset_args.update(
        frontend="s3prl", num_frms=50,  # 1 s chunks of 20 ms frames
        filter_args={"min_num_frames": 25, "max_num_frames": 400},
        s3prl_args={"upstream_args": {"name": "wavlm_large", "path_or_url": wavlm_dir},
                    "download_dir": "./s3prl_hub", "multilayer_feature": True, "layer": -1,
                    "frozen": frozen, "frame_shift": 20, "frame_length": 20,
                    "lr_scale": lr_scale, "gradient_checkpointing": gradient_checkpointing},
        cmvn=True, cmvn_args={"norm_mean": True, "norm_var": False})
    config["model_args"]["feat_dim"] = -1
    config["margin_update"] = {"initial_margin": 0.0, "final_margin": 0.0,
                               "increase_start_epoch": 1, "fix_start_epoch": 1,
                               "update_margin": True, "increase_type": "exp"}
    return config


def _pretrained_upstream(wavlm_dir):
    return {UPSTREAM + key: value for key, value in load_wavlm(wavlm_dir).state_dict().items()}


def _model_from_saved_config(exp_dir):
    return builder.build_model(plan_of(read_yaml(os.path.join(exp_dir, "config.yaml"))))


# -- configuration --------------------------------------------------------------------------
def test_an_s3prl_config_passes_the_trainer_and_the_pipeline(corpus, wavlm_dir, tmp_path):
    path = write_config(str(tmp_path / "ssl.yaml"),
                        ssl_config("exp", corpus, wavlm_dir, frozen=True))
    config = load_config(path, [("dataset_args.s3prl_args.lr_scale", "0.1"),
                                ("dataset_args.s3prl_args.frozen", "false")])
    assert config.dataset_args.s3prl_args.lr_scale == 0.1
    assert config.dataset_args.s3prl_args.frozen is False
    plan = resolve(config, CPU_WORLD)
    pipeline = plan.dataset_args
    assert (pipeline.frontend, pipeline.frame_shift_ms, pipeline.frame_length_ms) == (
        "s3prl", 20.0, 20.0)
    assert isinstance(plan.frontend, SSLFrontend) and plan.frontend.lr_scale == 0.1
    assert plan.model_holds_frontend
    model = builder.build_model(plan)
    assert model.frontend is plan.frontend
    assert model.frame_1.conv_1d.in_channels == 32  # XVEC's first layer sees 32-dim features
    assert plan.config.model_args["feat_dim"] == 32  # what config.yaml records
    assert config.model_args["feat_dim"] == -1  # the caller's config is left alone


@pytest.mark.parametrize("key, value, message", [
    ("dataset_args.s3prl_args.lr_scal", "0.1",
     "unknown config key 'dataset_args.s3prl_args.lr_scal'"),
    ("dataset_args.s3prl_args.upstream_args.nam", "wavlm_large",
     "unknown config key 'dataset_args.s3prl_args.upstream_args.nam'"),
    ("dataset_args.s3prl_args.frozen", "maybe",
     "config key 'dataset_args.s3prl_args.frozen' must be bool"),
    ("dataset_args.cmvn_args.norm_varr", "true",
     "unknown config key 'dataset_args.cmvn_args.norm_varr'"),
    ("dataset_args.frontend", "whisper",
     r"config key 'dataset_args.frontend' must be one of "
     r"\['fbank', 's3prl', 'tfmel', 'w2vbert', 'whisper_encoder'\]"),
])
def test_bad_s3prl_keys_are_errors_naming_the_key(corpus, wavlm_dir, tmp_path, key, value,
                                                  message):
    path = write_config(str(tmp_path / "ssl.yaml"),
                        ssl_config("exp", corpus, wavlm_dir, frozen=True))
    with pytest.raises(ConfigError, match=message):
        load_config(path, [(key, value)])
    # the same key written in the file
    config = ssl_config("exp", corpus, wavlm_dir, frozen=True)
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = yaml.safe_load(value)
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(str(tmp_path / "bad.yaml"), config))


def test_front_end_errors_are_config_errors(corpus, wavlm_dir, tmp_path):
    wrong_dim = ssl_config("exp", corpus, wavlm_dir, frozen=True)
    wrong_dim["model_args"]["feat_dim"] = 24
    with pytest.raises(ConfigError, match=r"'model_args.feat_dim' is 24 but the front-end "
                                          r"makes 32-dim features"):
        plan_of(wrong_dim)
    missing = str(tmp_path / "no_weights_here")
    with pytest.raises(ConfigError, match=f"WavLM weights not found at {missing}"):
        plan_of(ssl_config("exp", corpus, missing, frozen=True))
    fbank_minus_one = tiny_config("exp", corpus)
    fbank_minus_one["model_args"]["feat_dim"] = -1
    with pytest.raises(ConfigError, match="'model_args.feat_dim' is -1"):
        plan_of(fbank_minus_one)


def test_the_scheduler_gives_each_group_its_lr_scale():
    main, upstream = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [main], "lr_scale": 1.0},
                                 {"params": [upstream], "lr_scale": 0.05}], lr=1.0)
    scheduler = ExponentialDecrease(optimizer, num_epochs=4, epoch_iter=10, initial_lr=0.1,
                                    final_lr=0.01, warm_up_epoch=1, warm_from_zero=True)
    for iteration in (5, 10, 39):
        lr = scheduler.step(iteration)
        assert lr == pytest.approx(scheduler.lr_at(iteration)) and lr > 0
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(0.05 * lr)
        assert scheduler.get_lr() == lr
    resumed = ExponentialDecrease(optimizer, num_epochs=4, epoch_iter=10, initial_lr=0.1,
                                  final_lr=0.01, warm_up_epoch=1, warm_from_zero=True)
    resumed.load_state_dict(scheduler.state_dict())
    assert resumed.get_lr() == pytest.approx(scheduler.get_lr())


# -- single training steps ------------------------------------------------------------------
def _trainer(config):
    """A one-process Trainer on the SSL model, built as run_training builds it."""
    torch.manual_seed(0)
    return Trainer(plan_of(config, epoch_iter=1))


def _one_batch():
    generator = torch.Generator().manual_seed(7)
    return [{"wavs": 3000.0 * torch.randn(8, 16000, generator=generator),
             "labels": torch.arange(8) % NUM_SPEAKERS}]


def _plain_sgd(config):
    # no momentum or weight decay: one step moves each weight by exactly lr * grad
    config["optimizer_args"] = {"momentum": 0.0, "weight_decay": 0.0}
    return config


def test_a_frozen_step_trains_the_layer_weights_and_leaves_wavlm_alone(corpus, wavlm_dir,
                                                                       tmp_path):
    trainer = _trainer(_plain_sgd(ssl_config(str(tmp_path), corpus, wavlm_dir, frozen=True)))
    model = trainer.model
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized.isdisjoint(id(p) for p in model.frontend.upstream.parameters())
    assert id(model.frontend.layer_weights) in optimized
    before = {key: value.clone() for key, value in model.state_dict().items()}
    train_epoch(trainer, 2, _one_batch())  # epoch 2: past the warm-up from a zero lr
    assert not model.frontend.upstream.training  # eval mode while the rest trains
    after = model.state_dict()
    for key, value in before.items():
        if key.startswith(UPSTREAM):
            assert torch.equal(after[key], value), key
    assert not torch.equal(after["frontend.layer_weights"], before["frontend.layer_weights"])
    assert not torch.equal(after["projection.weight"], before["projection.weight"])
    assert all(param.grad is None for param in model.frontend.upstream.parameters())


def test_a_joint_step_moves_wavlm_by_its_lr_scale(corpus, wavlm_dir, tmp_path):
    deltas = {}
    for lr_scale, checkpointing in ((1.0, False), (0.25, True)):
        config = _plain_sgd(ssl_config(str(tmp_path), corpus, wavlm_dir, frozen=False,
                                       lr_scale=lr_scale,
                                       gradient_checkpointing=checkpointing))
        trainer = _trainer(config)
        assert trainer.model.frontend.gradient_checkpointing is checkpointing
        assert [group["lr_scale"] for group in trainer.optimizer.param_groups] == [1.0, lr_scale]
        before = {name: param.detach().clone()
                  for name, param in trainer.model.named_parameters()}
        train_epoch(trainer, 2, _one_batch())
        deltas[lr_scale] = {name: param.detach() - before[name]
                            for name, param in trainer.model.named_parameters()}
    full, scaled = deltas[1.0], deltas[0.25]
    # a delta is only known to the rounding of the weight it was added to
    rounding = {name: 2 * torch.finfo(torch.float32).eps * value.abs().max().item()
                for name, value in before.items()}
    upstream = [name for name in full if name.startswith(UPSTREAM)]
    moved = [name for name in upstream if full[name].abs().max() > 100 * rounding[name]]
    assert len(moved) > 0.8 * len(upstream)
    for name, delta in full.items():
        factor = 0.25 if name.startswith(UPSTREAM) else 1.0
        difference = (scaled[name] - factor * delta).abs().max().item()
        assert difference <= 1e-3 * factor * delta.abs().max().item() + rounding[name], name


# -- the recipe -----------------------------------------------------------------------------
def test_frozen_then_joint_mini_recipe(corpus, wavlm_dir, tmp_path):
    pretrained = _pretrained_upstream(wavlm_dir)

    # step 1: frozen WavLM
    frozen_dir = str(tmp_path / "frozen")
    history = run_training(ssl_config(frozen_dir, corpus, wavlm_dir, frozen=True, num_epochs=6,
                                      scheduler_args={"initial_lr": 0.5, "final_lr": 0.125,
                                                      "warm_up_epoch": 1,
                                                      "warm_from_zero": True}))
    assert [result.epoch for result in history] == list(range(1, 7))
    assert all(result.batches == 4 and result.skipped_batches == 0 for result in history)
    assert (history[-1].loss + history[-2].loss) / 2 < 0.7 * history[0].loss
    saved = yaml.safe_load(open(os.path.join(frozen_dir, "config.yaml")))
    assert saved["model_args"]["feat_dim"] == 32  # -1 filled in from the front-end
    models = os.path.join(frozen_dir, "models")
    checkpoint = load_checkpoint(os.path.join(models, "model_6.pt"))
    state = checkpoint["model"]
    assert not any(key.startswith(UPSTREAM) for key in state)
    assert "frontend.layer_weights" in state
    assert not torch.equal(state["frontend.layer_weights"], torch.zeros(3))
    # reloads strictly once the pretrained weights are filled in, and is then exactly the
    # trained model: WavLM was not changed by the training
    model = _model_from_saved_config(frozen_dir)
    model.load_state_dict(with_pretrained_frontend_weights(model, state), strict=True)
    assert parameter_digest(model) == checkpoint["param_digests"][0]

    # stage 4: averaging works on checkpoints without the WavLM weights
    avg_path = os.path.join(models, "avg_model.pt")
    average_cli.main(["--src_path", models, "--dst_model", avg_path, "--num", "2"])
    averaged = load_checkpoint(avg_path)
    assert averaged.keys() == state.keys()
    torch.testing.assert_close(averaged["frontend.layer_weights"],
                               (load_checkpoint(os.path.join(models, "model_5.pt"))["model"]
                                ["frontend.layer_weights"] + state["frontend.layer_weights"]) / 2)
    # extraction fills the WavLM weights in too
    embedder = load_embedder(load_config(os.path.join(frozen_dir, "config.yaml")), avg_path)
    assert embedder.model.frame_1.conv_1d.in_channels == 32

    # step 2: joint fine-tuning from the averaged frozen model, as run_wavlm.sh stage 8 does
    joint_dir = str(tmp_path / "joint")
    os.makedirs(os.path.join(joint_dir, "models"))
    model_0 = os.path.join(joint_dir, "models", "model_0.pt")
    shutil.copy(avg_path, model_0)
    joint = run_training(ssl_config(joint_dir, corpus, wavlm_dir, frozen=False, lr_scale=0.5,
                                    gradient_checkpointing=True, num_epochs=2,
                                    checkpoint=model_0,
                                    scheduler_args={"initial_lr": 0.05, "final_lr": 0.0125,
                                                    "warm_up_epoch": 1,
                                                    "warm_from_zero": True}))
    assert [result.epoch for result in joint] == [1, 2]
    # it starts where step 1 ended, not from scratch
    assert max(result.loss for result in joint) < 0.7 * history[0].loss
    checkpoint = load_checkpoint(os.path.join(joint_dir, "models", "model_2.pt"))
    state = checkpoint["model"]
    assert {key for key in state if key.startswith(UPSTREAM)} == set(pretrained)
    changed = [key for key in pretrained if not torch.equal(state[key], pretrained[key])]
    assert len(changed) > 0.9 * len(pretrained)
    assert not torch.equal(state["frontend.layer_weights"], averaged["frontend.layer_weights"])
    assert [group["lr_scale"] for group in checkpoint["optimizer"]["param_groups"]] == [1.0, 0.5]
    lrs = [group["lr"] for group in checkpoint["optimizer"]["param_groups"]]
    assert lrs[1] == pytest.approx(0.5 * lrs[0])
    model = _model_from_saved_config(joint_dir)
    model.load_state_dict(state, strict=True)
    assert parameter_digest(model) == checkpoint["param_digests"][0]

    # the other way in: --model_init with the frozen average, through the command line
    init_dir = str(tmp_path / "init")
    config = ssl_config("unused", corpus, wavlm_dir, frozen=True, num_epochs=1)
    config_path = write_config(str(tmp_path / "joint.yaml"), config)
    train_cli.main(["--config", config_path, "--exp_dir", init_dir, "--model_init", avg_path,
                    "--dataset_args.s3prl_args.frozen", "false",
                    "--dataset_args.s3prl_args.lr_scale", "0.5",
                    "--scheduler_args.initial_lr", "0.05"])
    state = load_checkpoint(os.path.join(init_dir, "models", "model_1.pt"))["model"]
    assert {key for key in state if key.startswith(UPSTREAM)} == set(pretrained)


def test_frozen_then_joint_in_the_same_exp_dir_continues_from_the_checkpoint(
        corpus, wavlm_dir, tmp_path, monkeypatch, caplog, capsys):
    """WeSpeaker's Whisper-PMFA recipe on the tiny WavLM: epochs 1-2 frozen with batch 8, then
    its stage 4 in the same exp_dir (config.yaml and final_model.pt moved aside) trains
    everything with batch 4 from ``--checkpoint model_2.pt``, on to epoch 4."""
    exp_dir = str(tmp_path / "exp")
    models = os.path.join(exp_dir, "models")
    loader = {"batch_size": 8, "num_workers": 0, "pin_memory": False, "drop_last": True}
    run_training(ssl_config(exp_dir, corpus, wavlm_dir, frozen=True, num_epochs=2,
                            dataloader_args=loader))
    os.rename(os.path.join(exp_dir, "config.yaml"), os.path.join(exp_dir, "config_stage0.yaml"))
    os.rename(os.path.join(models, "final_model.pt"),
              os.path.join(models, "final_model_stage0.pt"))
    checkpoint_path = os.path.join(models, "model_2.pt")
    saved = load_checkpoint(checkpoint_path)["optimizer"]
    assert len(saved["param_groups"]) == 1  # the frozen WavLM had no group

    schedule = {"initial_lr": 0.05, "final_lr": 0.02, "warm_up_epoch": 0,
                "warm_from_zero": False}
    seen = capture_first_step(monkeypatch)
    with caplog.at_level("WARNING"):
        history = run_training(ssl_config(
            exp_dir, corpus, wavlm_dir, frozen=False, lr_scale=0.5, num_epochs=4,
            checkpoint=checkpoint_path, scheduler_args=schedule,
            dataloader_args=dict(loader, batch_size=4)))
    monkeypatch.undo()
    assert [(result.epoch, result.batches) for result in history] == [(3, 8), (4, 8)]
    lr = exponential_lr(4 / 64, 0.05, 0.02, 2 / 4)  # epoch 3 starts at 2/4 of the schedule
    assert seen["lrs"] == [pytest.approx(lr, rel=1e-12), pytest.approx(0.5 * lr, rel=1e-12)]
    # the momentum of what trained (speaker model, head, layer weights) is the checkpoint's
    group = saved["param_groups"][0]
    assert "frontend.layer_weights" in group["param_names"]
    assert set(seen["state"]) == set(group["param_names"])
    for index, name in zip(group["params"], group["param_names"]):
        assert torch.equal(seen["state"][name]["momentum_buffer"],
                           saved["state"][index]["momentum_buffer"]), name
    upstream = [name for name, _ in load_wavlm(wavlm_dir).named_parameters()
                if name != "masked_spec_embed"]
    told = [record.getMessage() for record in caplog.records]
    assert any(f"(config keys 'frozen_params', 'dataset_args.s3prl_args.frozen'): "
               f"{len(upstream)} parameters of frontend.upstream.* train from epoch 3 on, with "
               f"empty optimizer state; the other {len(group['params'])} keep" in message
               for message in told), told

    # WavLM trained in epochs 3-4, with the state the optimizer built for it
    final = load_checkpoint(os.path.join(models, "model_4.pt"))
    pretrained = _pretrained_upstream(wavlm_dir)
    changed = [key for key in pretrained if not torch.equal(final["model"][key], pretrained[key])]
    assert len(changed) > 0.9 * len(pretrained)
    assert [len(group["params"]) for group in final["optimizer"]["param_groups"]] == [
        len(group["params"]), len(upstream)]
    assert all(final["optimizer"]["state"][index]
               for index in final["optimizer"]["param_groups"][1]["params"])
    # the new run's config.yaml and final_model.pt; stage 0's stay where the recipe put them
    assert read_yaml(os.path.join(exp_dir, "config.yaml"))["dataset_args"]["s3prl_args"][
        "frozen"] is False
    assert read_yaml(os.path.join(exp_dir, "config_stage0.yaml"))["dataset_args"]["s3prl_args"][
        "frozen"] is True
    assert os.readlink(os.path.join(models, "final_model.pt")) == "model_4.pt"
    assert os.readlink(os.path.join(models, "final_model_stage0.pt")) == "model_2.pt"
    # averaging and extraction read the new run's config and checkpoints
    avg_path = os.path.join(models, "avg_model.pt")
    average_cli.main(["--src_path", models, "--dst_model", avg_path, "--num", "2"])
    embedder = load_embedder(load_config(os.path.join(exp_dir, "config.yaml")), avg_path)
    assert not embedder.frontend.frozen
    averaged = load_checkpoint(avg_path)
    key = "encoder.layers.0.attention.k_proj.weight"
    assert torch.equal(embedder.frontend.upstream.state_dict()[key], averaged[UPSTREAM + key])
    assert not torch.equal(averaged[UPSTREAM + key], pretrained[UPSTREAM + key])
    # an average reaching back into the frozen epochs has no WavLM weights to average
    assert run_main(average_cli.main, ["--src_path", models, "--dst_model", avg_path,
                                       "--num", "3"]) == 2
    assert f"{os.path.join(models, 'model_3.pt')}: tensor 'frontend.upstream." in (
        capsys.readouterr().err)
