"""``dataset_args.frontend``: one table (config/schema.py ``FRONTENDS``) that the schema, the
factory, export, the model check, the feat_dim error and the resume check read."""
import inspect
import subprocess
import sys
import typing

import pytest
import torch.nn as nn

from wespeaker_py.config import ConfigError, DatasetArgs, as_dataset_args
from wespeaker_py.config import schema
from wespeaker_py.config.choices import FrontendChoice
from wespeaker_py.config.schema import FRONTENDS
from wespeaker_py.export import checks
from wespeaker_py.frontend.factory import build_frontend
from wespeaker_py.runtime import builder
from wespeaker_py.train import interrupt
import wespeaker_py.models as models


class ToyFrontend(nn.Module):
    """A front-end only this test registers, as wide as its block's ``num_mel_bins``."""

    def __init__(self, num_mel_bins: int):
        super().__init__()
        self.output_dim = num_mel_bins

    @classmethod
    def from_dataset_args(cls, dataset_args):
        return cls(dataset_args.frontend_args.num_mel_bins)


def test_the_tables_derived_from_frontends_are_the_ones_written_out_before_it():
    # the values each module spelt out by hand before FRONTENDS existed: the contract
    assert schema.FIXED_SAMPLE_RATES == {"w2vbert": 16000, "whisper_encoder": 16000}
    assert schema.PRETRAINED_SAMPLE_RATES == {"w2vbert": 16000, "whisper_encoder": 16000,
                                              "s3prl": 16000}
    assert checks.EXPORTABLE_FRONTENDS == ("fbank", "tfmel")
    assert models._EXCLUSIVE_FRONTENDS == ("tfmel", "w2vbert", "whisper_encoder")
    assert builder._FEAT_DIM_SOURCES == {
        "fbank": "dataset_args.fbank_args.num_mel_bins",
        "s3prl": "dataset_args.s3prl_args (the SSL model's hidden size)",
        "tfmel": "dataset_args.tfmel_args.n_mels",
        "w2vbert": "dataset_args.w2vbert_args (the W2V-BERT model's hidden size)",
        "whisper_encoder": "dataset_args.whisper_encoder_args (output_size x "
                           "(layer_ed - layer_st + 1))"}
    # the resume check: exactly these keys and blocks must not change in a continued run
    assert interrupt.FRONTEND_KEYS == {"dataset_args.frontend", "dataset_args.resample_rate",
                                       "dataset_args.cmvn"}
    assert interrupt.FRONTEND_BLOCKS == {
        "dataset_args.fbank_args", "dataset_args.cmvn_args", "dataset_args.tfmel_args",
        "dataset_args.s3prl_args", "dataset_args.w2vbert_args",
        "dataset_args.whisper_encoder_args"}
    assert typing.get_type_hints(DatasetArgs)["frontend"] == typing.Literal[
        "fbank", "s3prl", "tfmel", "w2vbert", "whisper_encoder"]


@pytest.mark.parametrize("name", list(FRONTENDS))
def test_each_entry_names_its_block_field_and_a_class_built_as_it_says(name):
    choice = FRONTENDS[name]
    hints = typing.get_type_hints(DatasetArgs)
    assert hints[choice.block] == typing.Optional[choice.args]
    assert choice.feat_dim_source.startswith(f"dataset_args.{choice.block}")
    parameters = inspect.signature(choice.factory().from_dataset_args).parameters
    assert ("pretrained" in parameters) == choice.takes_pretrained
    assert (choice.sample_rate is not None) or not choice.rate_only


def test_a_frontend_registered_in_the_table_is_accepted_and_built(monkeypatch):
    monkeypatch.setitem(FRONTENDS, "toy", FrontendChoice(
        f"{__name__}:ToyFrontend", schema.FbankArgs, block="fbank_args",
        feat_dim_source="dataset_args.fbank_args.num_mel_bins"))
    config = as_dataset_args({"frontend": "toy", "fbank_args": {"num_mel_bins": 40}})
    built = build_frontend(config)
    assert isinstance(built, ToyFrontend) and built.output_dim == 40


def test_a_frontend_not_in_the_table_is_an_error_listing_it_not_an_ssl_frontend():
    config = as_dataset_args({"frontend": "fbank"})
    config.frontend = "wavlm"  # set after the check, as a caller might
    with pytest.raises(ConfigError, match=r"'dataset_args.frontend' must be one of "
                                          r"\['fbank', 's3prl', 'tfmel', 'w2vbert', "
                                          r"'whisper_encoder'\], got 'wavlm'"):
        build_frontend(config)


def test_s3prl_block_is_required_and_the_others_default():
    with pytest.raises(ConfigError, match="'dataset_args.s3prl_args' is required when "
                                          "dataset_args.frontend is s3prl"):
        as_dataset_args({"frontend": "s3prl"})
    for name, choice in FRONTENDS.items():
        if not choice.args_required:
            rate = choice.sample_rate or 16000
            config = as_dataset_args({"frontend": name, "resample_rate": rate, "cmvn": False})
            assert config.frontend_args == choice.args(), name


def test_own_normalisation_and_fixed_rates_are_refused_from_the_table():
    for name, choice in FRONTENDS.items():
        if choice.own_norm:
            with pytest.raises(ConfigError, match=f"'dataset_args.cmvn' must be false with "
                                                  f"dataset_args.frontend {name}"):
                as_dataset_args({"frontend": name, "cmvn": True})
        if choice.rate_only:
            with pytest.raises(ConfigError, match=f"'dataset_args.resample_rate' must be "
                                                  f"{choice.sample_rate} with"):
                as_dataset_args({"frontend": name, "cmvn": False, "resample_rate": 8000})


def test_the_table_needs_no_torch():
    script = ("import sys, wespeaker_py.config.schema as s; "
              "print('torch' in sys.modules, len(s.FRONTENDS))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "5"]
