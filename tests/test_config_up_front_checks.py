"""Config mistakes refused (or warned of) before training starts: optimizer and schedule
arguments before exp_dir is made, model_args.embed_dim, sphereface2's margin_type, margins
out of range."""
import copy
import logging

import pytest
import torch

from train_helpers import TINY_CONFIG, make_speaker_corpus, plan_of, run_training, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from wespeaker_py.config import ConfigError
from wespeaker_py.models import model_factory
from wespeaker_py.models.projections import get_projection
from wespeaker_py.runtime.builder import model_argument_names
from wespeaker_py.train import builder
from wespeaker_py.train.builder import check_model_builds
from wespeaker_py.train.distributed import DistContext


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_speaker_corpus(str(tmp_path_factory.mktemp("spk")), num_spks=2, utts_per_spk=4)


@pytest.fixture
def utt2spk(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("".join(f"u{index} s{index % 4}\n" for index in range(64)))
    return str(path)


def _config(utt2spk: str, **changes) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config.update(train_data="unused", train_label=utt2spk, **copy.deepcopy(changes))
    return config


def test_an_optimizer_args_typo_is_refused_before_exp_dir_is_made(corpus, tmp_path):
    exp_dir = tmp_path / "exp"
    config = tiny_config(str(exp_dir), corpus)
    config["optimizer_args"] = {"momentum": 0.9, "nesterov": True, "weight_decy": 1.0e-4}
    with pytest.raises(ConfigError) as refused:
        run_training(config)
    assert str(refused.value).startswith(
        "config key 'optimizer_args.weight_decy': torch.optim:SGD takes no argument "
        "'weight_decy' (it takes lr, momentum, dampening, weight_decay, nesterov")
    assert not exp_dir.exists()


def test_an_optimizer_value_it_refuses_is_refused_up_front_naming_the_block(utt2spk):
    plan = plan_of(_config(utt2spk, optimizer="Adam", optimizer_args={"eps": -1.0}))
    with pytest.raises(ConfigError, match=r"^config key 'optimizer_args' does not fit Adam: "
                                          r"Invalid epsilon value: -1\.0$"):
        check_model_builds(plan)


def test_scheduler_args_the_schedule_refuses_are_refused_up_front(utt2spk):
    # a cycle of 0.1 epochs of 8 batches: under the 2 batches a triangle needs
    plan = plan_of(_config(utt2spk, scheduler="TriAngular2",
                           scheduler_args={"initial_lr": 0.1, "final_lr": 0.01,
                                           "cycle_step": 0.1}))
    with pytest.raises(ConfigError, match=r"^config key 'scheduler_args' does not fit "
                                          r"TriAngular2: cycle_step 0\.1 of 8 batches"):
        check_model_builds(plan)


def test_another_runtime_error_of_the_optimizer_is_not_taken_for_a_device_check(utt2spk):
    # torch refuses fused with differentiable as the optimizer is built, before any check
    # of the device (which older torch makes there)
    plan = plan_of(_config(utt2spk, optimizer="Adam",
                           optimizer_args={"fused": True, "differentiable": True}))
    with pytest.raises(RuntimeError, match=r"^`fused` does not support `differentiable`$"):
        check_model_builds(plan)


def test_the_fused_device_check_of_older_torch_is_left_to_the_real_build(utt2spk, monkeypatch):
    # older torch refuses fused=True over parameters on the meta device as it builds
    def refuse_meta(plan, model):
        raise RuntimeError("`fused=True` requires all the params to be floating point "
                           "Tensors of supported devices: ['cuda', 'xpu', 'privateuseone'].")

    monkeypatch.setattr(builder, "build_optimizer", refuse_meta)
    check_model_builds(plan_of(_config(utt2spk, optimizer="Adam",
                                       optimizer_args={"fused": True})))


def test_a_good_config_passes_the_up_front_check(utt2spk):
    check_model_builds(plan_of(_config(utt2spk, optimizer="AdamW",
                                       optimizer_args={"weight_decay": 0.01,
                                                       "betas": [0.9, 0.98]})))


@pytest.mark.parametrize("embed_dim", ["256", 256.0, True, 0, -5, None])
def test_embed_dim_must_be_a_positive_integer(utt2spk, embed_dim):
    config = _config(utt2spk)
    config["model_args"]["embed_dim"] = embed_dim
    with pytest.raises(ConfigError, match=r"^config key 'model_args\.embed_dim' must be an "
                                          r"integer >= 1 \(the head's input size\), got "
                                          + repr(embed_dim).replace(".", r"\.") + "$"):
        plan_of(config)


def test_a_misspelt_embed_dim_is_named(utt2spk):
    config = _config(utt2spk)
    config["model_args"]["embed_dims"] = config["model_args"].pop("embed_dim")
    with pytest.raises(ConfigError) as refused:
        plan_of(config)
    assert str(refused.value) == ("config key 'model_args.embed_dim' is required (the head's "
                                  "input size), but model_args has 'embed_dims'; did you mean "
                                  "'embed_dim'?")


def test_a_missing_embed_dim_is_not_blamed_on_an_argument_of_the_model(utt2spk):
    # XVEC's hid_dim is close to embed_dim in spelling, but it is no misspelling
    config = _config(utt2spk)
    del config["model_args"]["embed_dim"]
    assert "hid_dim" in config["model_args"]
    with pytest.raises(ConfigError) as refused:
        plan_of(config)
    assert str(refused.value) == ("config key 'model_args.embed_dim' is required (the head's "
                                  "input size)")


def test_a_misspelt_embed_dim_is_named_for_a_model_that_takes_any_keyword(utt2spk):
    # ReDimNet2's factories pass **model_args on: no list of names to check embed_dims against
    assert model_argument_names(model_factory("ReDimNet2B0")) is None
    assert "hid_dim" in model_argument_names(model_factory("XVEC"))
    config = _config(utt2spk, model="ReDimNet2B0")
    config["model_args"] = {"embed_dims": 16}
    with pytest.raises(ConfigError) as refused:
        plan_of(config)
    assert str(refused.value) == ("config key 'model_args.embed_dim' is required (the head's "
                                  "input size), but model_args has 'embed_dims'; did you mean "
                                  "'embed_dim'?")


def test_sphereface2_margin_type_message_names_the_key(utt2spk):
    with pytest.raises(ValueError, match=r"^config key 'projection_args\.margin_type' must be "
                                         r"'A' or 'C', got 'M'$"):
        get_projection({"project_type": "sphereface2", "margin_type": "M"}, 8, 4)
    # refused as the config is read, before a plan is made
    with pytest.raises(ConfigError, match=r"'projection_args\.margin_type'"):
        plan_of(_config(utt2spk, projection_args={"project_type": "sphereface2",
                                                  "margin_type": "M"}))


_MARGINS = {"initial_margin": 0.0, "final_margin": 0.2, "increase_start_epoch": 2,
            "fix_start_epoch": 3, "update_margin": True}


def _range_warnings(caplog) -> list:
    return [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and "outside [0, pi/2" in record.getMessage()]


@pytest.mark.parametrize("margins, warned", [
    ({"final_margin": 5.0}, ["final_margin"]),
    ({"final_margin": -0.2}, ["final_margin"]),
    ({"initial_margin": 2.0, "final_margin": 0.2}, ["initial_margin"]),
    ({"final_margin": 1.5}, []),
    ({"final_margin": 0.0}, []),
    # the margin stays at initial_margin: final_margin is never used
    ({"final_margin": 5.0, "update_margin": False}, []),
])
def test_a_margin_outside_zero_to_half_pi_is_a_warning_naming_the_key(utt2spk, caplog,
                                                                      margins, warned):
    plan = plan_of(_config(utt2spk, margin_update=dict(_MARGINS, **margins)))
    with caplog.at_level(logging.WARNING):
        check_model_builds(plan)
    expected = [f"config key 'margin_update.{key}' is {margins[key]:g}, outside [0, pi/2 = "
                f"1.571] where a margin makes sense; training goes on with it, as WeSpeaker's "
                f"does" for key in warned]
    assert _range_warnings(caplog) == expected


def test_a_head_without_a_margin_gets_no_range_warning(utt2spk, caplog):
    plan = plan_of(_config(utt2spk, projection_args={"project_type": "softmax"},
                           margin_update=dict(_MARGINS, final_margin=5.0)))
    with caplog.at_level(logging.WARNING):
        check_model_builds(plan)
    assert _range_warnings(caplog) == []


def test_the_range_warning_is_the_main_ranks_only(utt2spk, caplog):
    other_rank = DistContext(rank=1, local_rank=1, world_size=2, device=torch.device("cpu"))
    plan = plan_of(_config(utt2spk, margin_update=dict(_MARGINS, final_margin=5.0)),
                   world=other_rank)
    with caplog.at_level(logging.WARNING):
        check_model_builds(plan)
    assert _range_warnings(caplog) == []
