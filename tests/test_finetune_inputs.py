"""Fine-tuning's inputs: the rate a phase trains at (fixed-rate front-ends, TFMel's band,
pipes with --sample_rate), and the request a rerun is compared with (edited lists).

Training itself is not run: each test stops the run where its first phase would train,
and looks at that phase's config.
"""
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from finetune_helpers import read_finetune_data
from train_helpers import make_speaker_corpus
from wespeaker_py.config import TrainConfig, read_yaml
from wespeaker_py.errors import WespeakerError
from wespeaker_py.finetune import FinetuneDataError, FinetuneOptions, OutputExistsError, finetune
from wespeaker_py.finetune import run as finetune_run
from wespeaker_py.finetune.config import chosen_rate, phase_config, read_source_config
from wespeaker_py.frontend.tfmel import mel_weights

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXED_RATE_CONFIGS = ("ecapa_tdnn_WavLM_frozen.yaml", "w2vbert_s1_lora.yaml",
                      "whisper_PMFA_stage0.yaml")


def _data_folder(root, pipes=False, rate=16000):
    """6 speakers x 4 utterances of 1 s or more: wav.scp (files at ``rate``, or ``cat``
    pipes) and utt2spk."""
    corpus = make_speaker_corpus(str(root), num_spks=6, utts_per_spk=4, seconds=1.0)
    keys = [line.split()[0] for line in open(corpus["utt2spk"])]
    with open(os.path.join(root, "wav.scp"), "w") as scp:
        for key in keys:
            path = os.path.join(root, "wav", key + ".wav")
            if rate != 16000:
                samples, old_rate = sf.read(path, dtype="int16")
                sf.write(path, samples[::old_rate // rate], rate, subtype="PCM_16")
            scp.write(f"{key} cat {path} |\n" if pipes else f"{key} {path}\n")
    return str(root)


def _source_with_frontend(root, conf_name):
    """A source folder whose config is the shipped ``conf_name`` (its weights are never
    read before the first phase)."""
    os.makedirs(root)
    config = read_yaml(os.path.join(REPO_ROOT, "conf", conf_name))
    with open(os.path.join(root, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    torch.save({}, os.path.join(root, "avg_model.pt"))
    return str(root)


# ---- 2: WavLM, W2V-BERT and Whisper train at 16 kHz whatever the data's rate --------------

@pytest.mark.parametrize("conf_name", FIXED_RATE_CONFIGS)
def test_a_fixed_rate_front_end_keeps_16k_on_8k_data(conf_name, tmp_path, monkeypatch,
                                                     first_phase):
    source = _source_with_frontend(tmp_path / "source", conf_name)
    data = _data_folder(tmp_path / "data", rate=8000)
    assert read_finetune_data(data).sample_rate == 8000
    monkeypatch.setattr(finetune_run, "_write_body_init", lambda *args: None)
    monkeypatch.setattr(finetune_run, "_top_level_parameters", lambda model: ["body"])
    config = first_phase(source, data, str(tmp_path / "out"), FinetuneOptions(epochs=1))
    assert config["dataset_args"]["resample_rate"] == 16000
    TrainConfig.from_dict(config)  # the phase's config is valid as written
    # a --sample_rate the front-end cannot take stops before OUT is made
    out = str(tmp_path / "refused")
    with pytest.raises(WespeakerError, match=r"sample_rate=8000: the source model's front-end "
                                             r"\(dataset_args.frontend \w+\) works at 16000 Hz"):
        finetune(source, data, out, FinetuneOptions(sample_rate=8000), device="cpu")
    assert not os.path.exists(out)


def test_chosen_rate_is_the_requested_one_else_a_fixed_front_ends():
    assert chosen_rate("fbank", None) is None and chosen_rate("fbank", 8000) == 8000
    assert chosen_rate("tfmel", None) is None
    for frontend in ("s3prl", "w2vbert", "whisper_encoder"):
        assert chosen_rate(frontend, None) == 16000
        assert chosen_rate(frontend, 16000) == 16000


# ---- 3: TFMel at another rate keeps its band below the Nyquist frequency -------------------

@pytest.mark.parametrize("conf_name", ["redimnet2.yaml", "redimnet2_lm.yaml"])
def test_tfmel_at_8k_scales_its_band_and_windows(conf_name):
    source = read_source_config(os.path.join(REPO_ROOT, "conf", conf_name))
    assert source.model.dataset_args.frontend == "tfmel"
    config = TrainConfig.from_dict(_phase(source, 8000))
    tfmel = config.dataset_args.tfmel_args
    assert (tfmel.n_fft, tfmel.win_length, tfmel.hop_length) == (256, 200, 80)  # same ms
    assert tfmel.f_max == pytest.approx(3800.0)
    weights = mel_weights(tfmel.n_mels, tfmel.n_fft // 2, 8000, tfmel.f_min, tfmel.f_max)
    assert (weights.sum(axis=0) > 0).all()  # no empty mel band


def test_tfmel_keys_left_out_scale_from_their_defaults(tmp_path):
    config = read_yaml(os.path.join(REPO_ROOT, "conf", "redimnet2.yaml"))
    config["dataset_args"]["tfmel_args"] = {"n_mels": 72}
    path = str(tmp_path / "redimnet2.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    tfmel = TrainConfig.from_dict(_phase(read_source_config(path), 8000)).dataset_args.tfmel_args
    assert (tfmel.n_fft, tfmel.hop_length, tfmel.f_max, tfmel.n_mels) == (256, 80, 3800.0, 72)


def _phase(source, rate):
    return phase_config(source, FinetuneOptions(), exp_dir="exp", train_data="list",
                        train_label="utt2spk", num_utterances=100, sample_rate=rate,
                        model_init="init.pt", epochs=2, frozen_params=[], device="cpu")


# ---- 4: a wav.scp of only pipes trains at --sample_rate ------------------------------------

def test_pipes_only_need_sample_rate_and_then_train_at_it(source_model, tmp_path, first_phase):
    data = _data_folder(tmp_path / "data", pipes=True)
    with pytest.raises(FinetuneDataError, match=r"only pipes.*give sample_rate\)"):
        read_finetune_data(data)
    assert read_finetune_data(data, sample_rate=16000).sample_rate is None  # not read
    config = first_phase(source_model, data, str(tmp_path / "out"),
                         FinetuneOptions(sample_rate=8000, epochs=1))
    assert config["dataset_args"]["resample_rate"] == 8000


# ---- 5: a data folder edited in place is another request -----------------------------------

def test_a_listed_file_that_is_not_audio_is_named_before_training(tmp_path):
    data = _data_folder(tmp_path)
    first = open(os.path.join(data, "wav.scp")).readline().split()
    with open(first[1], "w") as handle:
        handle.write("not a wav file\n")
    with pytest.raises(FinetuneDataError, match=f"{first[1]}: not readable audio"):
        read_finetune_data(data)


def test_an_empty_or_cut_short_file_is_left_to_training_to_skip_and_name(tmp_path):
    data = _data_folder(tmp_path)
    paths = [line.split()[1] for line in open(os.path.join(data, "wav.scp"))][:2]
    sf.write(paths[0], np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")   # no frames
    with open(paths[1], "r+b") as handle:                                      # cut short
        handle.truncate(os.path.getsize(paths[1]) // 2)
    assert read_finetune_data(data).sample_rate == 16000


def test_edited_lists_are_another_request_and_say_what_changed(source_model, tmp_path,
                                                               first_phase):
    data, out = _data_folder(tmp_path / "data"), str(tmp_path / "out")
    options = FinetuneOptions(epochs=1)
    first_phase(source_model, data, out, options)
    recorded = read_yaml(os.path.join(out, "work", "request.json"))  # JSON is YAML
    assert set(recorded["lists"]) == {"data/wav.scp", "data/utt2spk"}
    # the same lists, even rewritten unchanged, are the same request: the run resumes
    utt2spk = os.path.join(data, "utt2spk")
    text = open(utt2spk).read()
    open(utt2spk, "w").write(text)
    first_phase(source_model, data, out, options)
    # one speaker fewer, in place
    open(utt2spk, "w").write("".join(text.splitlines(keepends=True)[:-4]))
    with pytest.raises(OutputExistsError, match=r"request.json differs in lists.data/utt2spk\)"):
        finetune(source_model, data, out, options, device="cpu")
    # a segments file added is a change too (wav.scp then lists recordings)
    open(os.path.join(data, "segments"), "w").write("".join(
        f"{line.split()[0]} {line.split()[0]} 0.0 0.9\n" for line in open(utt2spk)))
    with pytest.raises(OutputExistsError, match="differs in lists.data/segments, "
                                                "lists.data/utt2spk"):
        finetune(source_model, data, out, options, device="cpu")
    os.remove(os.path.join(data, "segments"))
    first_phase(source_model, data, out, options, overwrite=True)
    assert read_yaml(os.path.join(out, "work", "request.json"))["lists"] != recorded["lists"]
