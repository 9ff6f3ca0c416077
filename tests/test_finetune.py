"""``wespeaker-py finetune`` and ``SpeakerModel.finetune``: a tiny fine-tune end to end, and
the bad-input rules of issue 22."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from tests.finetune_helpers import read_finetune_data, write_segments_folder
from tests.train_helpers import (TINY_CONFIG, make_speaker_corpus,  # noqa: F401
                                 single_torch_thread, write_config, write_source_model)
from wespeaker_py.api import load_model
from wespeaker_py.api.calibration import load_calibration
from wespeaker_py.cli.main import _main
from wespeaker_py.cli.common import run_main
from wespeaker_py.config import TrainConfig
from wespeaker_py.errors import ModelSourceError, WespeakerError
from wespeaker_py.finetune import (FinetuneDataError, FinetuneOptions, OutputExistsError,
                                   finetune)
from wespeaker_py.finetune.config import FEW_SPEAKERS, phases
from wespeaker_py.finetune.report import summary_line
from wespeaker_py.runtime.identity import ModelMismatchError
from wespeaker_py.train.plan import resolve
from wespeaker_py.train.distributed import DistContext

# tiny and quick: 2 epochs of a 16-dim x-vector; the first with the body frozen, as
# --freeze auto does for 4 training speakers
TINY_OPTIONS = dict(epochs=2, freeze_epochs=1, lr=0.01, batch_size=8, num_workers=0,
                    num_avg=1)


def _write_kaldi(root, entries, rate_of=lambda key: None):
    """wav.scp + utt2spk of ``(key, spk, path)``; resample a file when ``rate_of`` says."""
    with open(os.path.join(root, "wav.scp"), "w") as scp, \
            open(os.path.join(root, "utt2spk"), "w") as u2s:
        for key, spk, path in entries:
            rate = rate_of(key)
            if rate:
                samples, old = sf.read(path, dtype="int16")
                keep = np.arange(0, len(samples), old / rate).astype(int)
                path = os.path.join(root, key + f"_{rate}.wav")
                sf.write(path, samples[keep], rate, subtype="PCM_16")
            scp.write(f"{key} {path}\n")
            u2s.write(f"{key} {spk}\n")


@pytest.fixture(scope="module")
def corpus_8k(tmp_path_factory):
    """6 synthetic speakers x 4 utterances, at 8 kHz (a decimated 16 kHz corpus)."""
    root = str(tmp_path_factory.mktemp("corpus"))
    make_speaker_corpus(os.path.join(root, "src"), num_spks=6, utts_per_spk=4, seconds=1.5)
    entries = [(key, spk, os.path.join(root, "src", "wav", key + ".wav"))
               for key, spk in (line.split() for line in open(os.path.join(root, "src",
                                                                           "utt2spk")))]
    data = os.path.join(root, "data")
    os.makedirs(data)
    _write_kaldi(data, entries, rate_of=lambda key: 8000)
    return data


def test_tiny_finetune_end_to_end_and_resume(source_model, corpus_8k, tmp_path, caplog):
    out = str(tmp_path / "out")
    with caplog.at_level(logging.INFO):
        status = run_main(_main, ["finetune", "--model", source_model, "--data", corpus_8k,
                                  "--out", out, "--epochs", "2", "--freeze_epochs", "1",
                                  "--lr", "0.01", "--batch_size", "8", "--num_workers", "0",
                                  "--num_avg", "1", "--device", "cpu", "--num_threads", "1"])
    assert status == 0
    # each phase's log counts its epochs from 1; a line says where they stand in the run
    assert "phase 1 of 2 (the new head only): the run's epochs 1-1 of 2" in caplog.text
    assert "phase 2 of 2 (everything): the run's epochs 2-2 of 2" in caplog.text
    # the frozen phase trains only the 4-speaker head, counted in full, not as 0.00M
    head = 4 * 16
    assert f"parameters train, the head's {head} of them" in caplog.text
    for name in ("config.yaml", "avg_model.pt", "calibration.json", "finetune.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    report = json.load(open(os.path.join(out, "finetune.json")))
    assert report["sample_rate"] == 8000 and report["source_sample_rate"] == 16000
    assert report["data"]["dev_speakers"] == 2 and report["data"]["train_speakers"] == 4
    assert [phase["name"] for phase in report["phases"]] == ["frozen", "train"]
    assert report["phases"][0]["frozen_params"] and not report["phases"][1]["frozen_params"]
    # the first phase starts a new head; the second goes on with the one the first trained
    phase_configs = [yaml.safe_load(open(os.path.join(out, "work", name, "config.yaml")))
                     for name in ("frozen", "train")]
    assert [config.get("model_init_head", False) for config in phase_configs] == [False, True]
    for when in ("before", "after"):
        assert 0.0 <= report["dev"][when]["eer"] <= 1.0
        assert report["dev"][when]["trials"] == 28  # every pair of 8 dev utterances
    # the new model: 8 kHz front-end, a 4-speaker head, the source's body weights moved
    tuned = load_model(out)
    assert tuned.sample_rate == 8000 and tuned.calibration is not None
    # the calibration is the new model's: its identity recorded, every dev file at its rate
    assert tuned.calibration.identity == tuned.identity and tuned.calibration.band_fills == {}
    with pytest.raises(ModelMismatchError, match="not with the model in use"):
        _ = load_model(source_model, calibration=os.path.join(out, "calibration.json")
                       ).calibration
    state = torch.load(os.path.join(out, "avg_model.pt"))
    assert state["projection.weight"].shape[0] == 4
    source_state = torch.load(os.path.join(source_model, "avg_model.pt"))
    assert state["frame_1.conv_1d.weight"].shape == source_state["frame_1.conv_1d.weight"].shape
    assert not torch.equal(state["frame_1.conv_1d.weight"], source_state["frame_1.conv_1d.weight"])
    # resume: the phases are trained, the run is finished; the same command changes nothing
    stamp = os.path.getmtime(os.path.join(out, "avg_model.pt"))
    assert run_main(_main, ["finetune", "--model", source_model, "--data", corpus_8k,
                            "--out", out, "--epochs", "2", "--freeze_epochs", "1",
                            "--lr", "0.01", "--batch_size", "8", "--num_workers", "0",
                            "--num_avg", "1", "--device", "cpu"]) == 0
    assert os.path.getmtime(os.path.join(out, "avg_model.pt")) == stamp
    # a killed run (last phase's last checkpoint and the outputs gone) continues from model_1
    os.remove(os.path.join(out, "work", "train", "models", "model_1.pt"))
    for name in ("finetune.json", "avg_model.pt"):
        os.remove(os.path.join(out, name))
    shutil.rmtree(os.path.join(out, "work", "train"))
    report = finetune(source_model, corpus_8k, out, FinetuneOptions(**TINY_OPTIONS),
                      device="cpu")
    assert os.path.isfile(os.path.join(out, "work", "train", "models", "model_1.pt"))
    assert report["dev"]["after"]["trials"] == 28


class _Trained(Exception):
    """Raised in place of the averaging: both phases have trained."""


def test_each_phase_names_its_epochs_and_narrow_band_data_is_warned_once(
        source_model, corpus_8k, tmp_path, caplog, monkeypatch):
    from wespeaker_py.finetune import run as finetune_run
    from wespeaker_py.train import loop
    bars = []
    original_bar = loop.progress_bar

    def progress_bar(*args, desc, **kwargs):
        bars.append(desc)
        return original_bar(*args, desc=desc, **kwargs)

    def average(*args):
        raise _Trained

    monkeypatch.setattr(loop, "progress_bar", progress_bar)
    monkeypatch.setattr(finetune_run, "average_checkpoints", average)
    # 8 kHz files for a 16 kHz model: narrow-band in both phases
    options = FinetuneOptions(**dict(TINY_OPTIONS, epochs=3, freeze="body", sample_rate=16000))
    with caplog.at_level(logging.INFO), pytest.raises(_Trained):
        finetune(source_model, corpus_8k, str(tmp_path / "out"), options, device="cpu")
    assert bars == ["frozen epoch 1/1", "full epoch 1/2", "full epoch 2/2"]
    for line in ("the run's epochs 1-1 of 3, logged as frozen epochs 1-1",
                 "the run's epochs 2-3 of 3, logged as full epochs 1-2",
                 "frozen training epochs 1 to 1", "frozen epoch 1 batch 2/2 lr ",
                 "frozen epoch 1 done: ", "full training epochs 1 to 2", "full epoch 2 done: "):
        assert line in caplog.text, line
    told = [record.getMessage() for record in caplog.records
            if "(warned once)" in record.getMessage()]
    assert len(told) == 1 and told[0].startswith("frozen epoch 1: 16 training utterance(s) "
                                                 "came at 8000 Hz"), told


def test_freeze_auto_freezes_the_body_first_only_for_few_speakers():
    names = lambda plan: [(phase["name"], phase["freeze"]) for phase in plan]  # noqa: E731
    auto = FinetuneOptions(epochs=6)
    assert auto.freeze == "auto"
    assert names(phases(auto, FEW_SPEAKERS - 1)) == [("frozen", "body"), ("train", "none")]
    assert names(phases(auto, FEW_SPEAKERS)) == [("train", "none")]
    # an explicit choice holds whatever the number of speakers
    assert names(phases(FinetuneOptions(epochs=6, freeze="none"), 4)) == [("train", "none")]
    front = FinetuneOptions(epochs=6, freeze="front", freeze_epochs=2)
    assert names(phases(front, 500)) == [("frozen", "front"), ("train", "none")]
    assert [phase["epochs"] for phase in phases(front, 500)] == [2, 4]


def test_api_finetune_returns_the_new_model(source_model, corpus_8k, tmp_path):
    # a bare checkpoint loaded with config=: fine-tuned with that config
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "cfgs").mkdir()
    checkpoint = shutil.copy(os.path.join(source_model, "avg_model.pt"), tmp_path / "ckpt")
    config = shutil.copy(os.path.join(source_model, "config.yaml"), tmp_path / "cfgs" / "my.yaml")
    model = load_model(checkpoint, config=config, device="cpu")
    tuned = model.finetune(corpus_8k, str(tmp_path / "api"), device="cpu", sample_rate=16000,
                           freeze="none", **{k: v for k, v in TINY_OPTIONS.items()
                                             if k != "freeze_epochs"})
    assert json.load(open(tmp_path / "api" / "finetune.json"))["config"] == str(config)
    assert tuned.sample_rate == 16000  # --sample_rate wins over the data's 8 kHz
    assert tuned.embed(np.zeros(16000) + np.random.default_rng(0).normal(size=16000) * 0.1,
                       sample_rate=16000).shape == (16,)
    # the dev audio was heard at 8 kHz, through no band fill: a fill learnt later for 8 kHz
    # makes this calibration stale, and the model says so
    calibration = load_calibration(str(tmp_path / "api" / "calibration.json"))
    assert calibration.identity == tuned.identity and calibration.band_fills == {8000: ""}


def test_out_holding_other_files_is_refused_even_with_overwrite(source_model, corpus_8k,
                                                                tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError,
                           match=f"{out} holds other files, not a fine-tuning run"):
            finetune(source_model, corpus_8k, str(out), FinetuneOptions(**TINY_OPTIONS),
                     overwrite=overwrite)
    assert run_main(_main, ["finetune", "--model", source_model, "--data", corpus_8k,
                            "--out", str(out), "--overwrite"]) == 2
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_overwrite_replaces_an_earlier_run_only(source_model, corpus_8k, tmp_path):
    # OUT inside the source's folder is fine: it holds none of its files
    source = shutil.copytree(source_model, tmp_path / "source")
    out = str(source / "tuned")
    finetune(str(source), corpus_8k, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    other = FinetuneOptions(**dict(TINY_OPTIONS, lr=0.02))
    with pytest.raises(OutputExistsError, match="a fine-tuning run with other arguments"):
        finetune(str(source), corpus_8k, out, other, device="cpu")
    report = finetune(str(source), corpus_8k, out, other, device="cpu", overwrite=True)
    assert report["options"]["lr"] == 0.02
    assert sorted(os.listdir(source)) == ["avg_model.pt", "config.yaml", "tuned"]


def _copy_data(corpus, root):
    """A copy of the data folder ``corpus`` with its own copies of the audio."""
    os.makedirs(os.path.join(root, "wav"))
    with open(os.path.join(root, "wav.scp"), "w") as scp:
        for key, path in (line.split() for line in open(os.path.join(corpus, "wav.scp"))):
            scp.write(f"{key} {shutil.copy(path, os.path.join(root, 'wav'))}\n")
    shutil.copy(os.path.join(corpus, "utt2spk"), root)
    return root


@pytest.mark.parametrize("layout", ["out_is_the_source", "out_holds_the_data",
                                    "out_holds_the_config", "out_holds_the_audio",
                                    "out_holds_the_mix_data"])
def test_out_that_is_or_holds_an_input_is_refused(source_model, corpus_8k, tmp_path, layout):
    out = tmp_path / "out"
    source, config, data, mix = source_model, None, corpus_8k, None
    if layout == "out_is_the_source":   # the source folder with the data inside it
        source = str(shutil.copytree(source_model, out))
        data = _copy_data(corpus_8k, str(out / "data"))
        held = os.path.join(source, "avg_model.pt")
    elif layout == "out_holds_the_data":
        data = held = _copy_data(corpus_8k, str(out / "calls"))
    elif layout == "out_holds_the_config":   # a bare checkpoint, its config.yaml in OUT
        (tmp_path / "ckpt").mkdir()
        out.mkdir()
        source = shutil.copy(os.path.join(source_model, "avg_model.pt"), tmp_path / "ckpt")
        config = held = shutil.copy(os.path.join(source_model, "config.yaml"), out)
    elif layout == "out_holds_the_audio":    # wav.scp elsewhere, its audio in OUT
        copied = _copy_data(corpus_8k, str(tmp_path / "calls"))
        shutil.move(os.path.join(copied, "wav"), out)
        data = _copy_data(corpus_8k, str(tmp_path / "elsewhere"))
        moved = {key: str(out / os.path.basename(path)) for key, path in
                 (line.split() for line in open(os.path.join(corpus_8k, "wav.scp")))}
        with open(os.path.join(data, "wav.scp"), "w") as scp:
            scp.write("".join(f"{key} {path}\n" for key, path in moved.items()))
        held = min(moved.values())   # the first one the check meets
    else:
        mix = held = _copy_data(corpus_8k, str(out / "mix"))
    (out / "work").mkdir(exist_ok=True)   # even an earlier run's marker does not let it go
    (out / "work" / "request.json").write_text("{}")
    before = sorted(str(path) for path in out.rglob("*"))
    with pytest.raises(OutputExistsError) as error:
        finetune(source, data, str(out), FinetuneOptions(**TINY_OPTIONS), overwrite=True,
                 config=config, mix_data=mix)
    assert str(out) in str(error.value) and str(held) in str(error.value)
    assert sorted(str(path) for path in out.rglob("*")) == before


def _dev_files(data, dev_speakers):
    """The dev utterances' audio files of ``data``, by speaker."""
    files = {}
    for entry in read_finetune_data(data, dev_speakers).dev:
        files.setdefault(entry.spk, []).append(entry.wav)
    return files


def test_unreadable_dev_utterances_are_skipped_and_named(source_model, corpus_8k, tmp_path,
                                                         caplog):
    data = _copy_data(corpus_8k, str(tmp_path / "data"))
    first, second = list(_dev_files(data, 3).values())[:2]
    samples, rate = sf.read(first[0], dtype="int16")
    sf.write(first[0], np.zeros_like(samples), rate, subtype="PCM_16")   # silent
    with open(second[0], "r+b") as handle:                                 # truncated
        handle.truncate(os.path.getsize(second[0]) // 2)
    out = str(tmp_path / "out")
    report = finetune(source_model, data, out,
                      FinetuneOptions(**dict(TINY_OPTIONS, dev_speakers=3)), device="cpu")
    assert report["dev"]["before"]["trials"] == report["dev"]["after"]["trials"] == 45
    assert len(report["dev_skipped"]) == 2
    assert f"{first[0]} is silent" in caplog.text and f"{second[0]} is truncated" in caplog.text
    assert "2 of 12 dev utterances skipped" in caplog.text
    assert load_model(out).calibration.num_target == 12   # 3 + 3 + 6 target trials left


def test_a_failed_evaluation_leaves_no_model_in_out_and_the_rerun_resumes(
        source_model, corpus_8k, tmp_path):
    data = _copy_data(corpus_8k, str(tmp_path / "data"))
    speaker_files = list(_dev_files(data, 2).values())[0]
    kept = {path: open(path, "rb").read() for path in speaker_files}
    for path in speaker_files:   # one dev speaker all silent: no nontarget trial is left
        samples, rate = sf.read(path, dtype="int16")
        sf.write(path, np.zeros_like(samples), rate, subtype="PCM_16")
    out = tmp_path / "out"
    with pytest.raises(WespeakerError, match="no trial of each kind"):
        finetune(source_model, data, str(out), FinetuneOptions(**TINY_OPTIONS), device="cpu")
    assert sorted(os.listdir(out)) == ["work"]
    checkpoint = out / "work" / "train" / "models" / "model_1.pt"
    stamp = os.path.getmtime(checkpoint)
    for path, content in kept.items():
        open(path, "wb").write(content)
    report = finetune(source_model, data, str(out), FinetuneOptions(**TINY_OPTIONS),
                      device="cpu")
    assert os.path.getmtime(checkpoint) == stamp   # trained once
    assert report["dev"]["after"]["trials"] == 28 and not report["dev_skipped"]
    assert load_model(str(out)).calibration is not None


def test_too_few_dev_trials_for_a_calibration_publish_the_model_without_one(
        source_model, corpus_8k, tmp_path, caplog):
    data = _copy_data(corpus_8k, str(tmp_path / "data"))
    speaker_files = list(_dev_files(data, 2).values())[0]
    kept = {path: open(path, "rb").read() for path in speaker_files[:2]}
    for path in kept:   # silent: headers read at the split, skipped at the evaluation
        samples, rate = sf.read(path, dtype="int16")
        sf.write(path, np.zeros_like(samples), rate, subtype="PCM_16")
    out = str(tmp_path / "out")
    report = finetune(source_model, data, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    # 1 + 6 target and 2 x 4 nontarget trials left: trained and published, not calibrated
    why = "7 target and 8 nontarget dev trials scored, at least 10 of each are needed"
    assert report["calibration_skipped"] == why and report["calibration_cllr"] is None
    assert f"no calibration.json written to {out}: {why}" in caplog.text
    assert "fine-tune again (overwrite=True) with more dev_speakers" in caplog.text
    assert not os.path.exists(os.path.join(out, "calibration.json"))
    assert load_model(out).calibration is None
    assert f"; no calibration.json written ({why}); model in {out}" in summary_line(report, out)
    assert json.load(open(os.path.join(out, "finetune.json")))["calibration_skipped"] == why
    # the dev audio mended in place: the finished run is not taken for this data's
    for path, content in kept.items():
        open(path, "wb").write(content)
    with pytest.raises(OutputExistsError, match=r"2 dev utterance\(s\) skipped at its "
                                                r"evaluation read now .*pass overwrite=True"):
        finetune(source_model, data, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")


def test_onnx_source_is_refused(corpus_8k, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not used")
    with pytest.raises(ModelSourceError, match="ONNX model: it has no PyTorch weights"):
        finetune(str(onnx), corpus_8k, str(tmp_path / "out"))


def _subset(corpus, root, keep):
    """A data dir with the utterances of ``corpus`` for which ``keep(key, spk)``."""
    os.makedirs(root, exist_ok=True)
    scp = dict(line.split(maxsplit=1) for line in open(os.path.join(corpus, "wav.scp")))
    with open(os.path.join(root, "wav.scp"), "w") as out_scp, \
            open(os.path.join(root, "utt2spk"), "w") as out_u2s:
        for line in open(os.path.join(corpus, "utt2spk")):
            key, spk = line.split()
            if keep(key, spk):
                out_scp.write(f"{key} {scp[key]}")
                out_u2s.write(f"{key} {spk}\n")
    return root


def test_one_speaker_is_refused(source_model, corpus_8k, tmp_path):
    data = _subset(corpus_8k, str(tmp_path / "one"), lambda key, spk: spk == "spk0")
    with pytest.raises(FinetuneDataError, match="at least 4 speakers.*; it has 1 speaker, "):
        read_finetune_data(data)
    assert run_main(_main, ["finetune", "--model", source_model, "--data", data,
                            "--out", str(tmp_path / "out")]) == 2


def test_too_few_dev_trials_are_refused(corpus_8k, tmp_path):
    # 2 utterances per speaker: 2 dev speakers give 2 target trials
    data = _subset(corpus_8k, str(tmp_path / "few"),
                   lambda key, spk: key.endswith(("utt0", "utt1")))
    with pytest.raises(FinetuneDataError, match="2 target .* trials; at least 10"):
        read_finetune_data(data)


def test_one_utterance_speakers_only_train(corpus_8k, tmp_path):
    data = _subset(corpus_8k, str(tmp_path / "singles"),
                   lambda key, spk: spk not in ("spk4", "spk5") or key.endswith("utt0"))
    split = read_finetune_data(data)
    assert split.single_utterance_speakers == 2
    assert {"spk4", "spk5"} <= set(split.train_speakers)
    assert not {"spk4", "spk5"} & set(split.dev_speakers)


def test_mixed_rates_are_resampled_and_said(corpus_8k, tmp_path, caplog):
    root = str(tmp_path / "mixed")
    os.makedirs(root)
    entries = [(key, spk, path) for (key, path), spk in zip(
        (line.split() for line in open(os.path.join(corpus_8k, "wav.scp"))),
        (line.split()[1] for line in open(os.path.join(corpus_8k, "utt2spk"))))]
    _write_kaldi(root, entries, rate_of=lambda key: 4000 if key.endswith("utt3") else None)
    split = read_finetune_data(root)
    assert split.rates == {8000: 18, 4000: 6} and split.sample_rate == 8000
    assert "resampled to 8000 Hz" in caplog.text


def test_segments_cut_utterances_from_recordings(corpus_8k, tmp_path):
    scp = dict(line.split() for line in open(os.path.join(corpus_8k, "wav.scp")))
    utterances = [(key, spk, scp[key]) for key, spk in
                  (line.split() for line in open(os.path.join(corpus_8k, "utt2spk")))]
    root = write_segments_folder(str(tmp_path / "segments"), utterances,
                                 lambda key: (0.1, 1.2))
    split = read_finetune_data(root)
    assert all(entry.vad == ((0.1, 1.2),) for entry in split.train + split.dev)
    assert split.train[0].wav == scp[split.train[0].key]
    from wespeaker_py.finetune.dev import dev_audio
    audio, _ = dev_audio(split, 8000)
    assert {len(samples) for samples in audio[8000].values()} == {8800}   # 1.1 s cut out


def test_frozen_params_stop_training_and_must_name_parameters(tmp_path):
    corpus = make_speaker_corpus(str(tmp_path / "c"), num_spks=2, utts_per_spk=4)
    config = dict(TINY_CONFIG, exp_dir=str(tmp_path / "exp"), train_data=corpus["raw_list"],
                  train_label=corpus["utt2spk"], frozen_params=["nonexistent."])
    world = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    from wespeaker_py.config import ConfigError
    from wespeaker_py.train.builder import build_model
    with pytest.raises(ConfigError, match="'nonexistent.' names no parameter"):
        build_model(resolve(TrainConfig.from_dict(config), world))
    config["frozen_params"] = ["frame_1."]
    model = build_model(resolve(TrainConfig.from_dict(config), world))
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    assert frozen and all(name.startswith("frame_1.") for name in frozen)


def test_mix_data_only_trains_under_its_own_names(corpus_8k, tmp_path):
    mix = _subset(corpus_8k, str(tmp_path / "mix"), lambda key, spk: spk in ("spk0", "spk1"))
    split = read_finetune_data(corpus_8k, mix_dir=mix)
    alone = read_finetune_data(corpus_8k)
    assert split.dev == alone.dev and split.trials == alone.trials
    mixed = [entry for entry in split.train if entry.spk.startswith("mix-")]
    assert len(mixed) == 8 and all(entry.key.startswith("mix-") for entry in mixed)
    assert split.summary()["mix_utterances"] == 8


def test_dev_audio_is_handed_to_the_models_as_floats_in_range(corpus_8k):
    from wespeaker_py.finetune.dev import dev_audio
    # for a 16 kHz model the 8 kHz files stay at the rate they were heard at
    audio, skipped = dev_audio(read_finetune_data(corpus_8k), 16000)
    assert list(audio) == [8000] and not skipped
    peak = max(float(np.abs(samples).max()) for samples in audio[8000].values())
    assert 0.01 < peak <= 1.0  # the int16 scale read back as floats would clip every sample


# ---- a TFMel model at another rate; a --device this machine does not have -----------------

def _write_redimnet2_source(folder):
    """``folder`` as a 16 kHz model folder of a tiny ReDimNet2 on TFMel: its weights as
    training saves them, the front-end's 16 kHz buffers (``frontend.*``) included."""
    from wespeaker_py.frontend.factory import build_frontend
    from wespeaker_py.models.projections import get_projection
    from wespeaker_py.runtime.builder import build_speaker_model
    dataset_args = dict(TINY_CONFIG["dataset_args"], frontend="tfmel", cmvn=False,
                        tfmel_args={"n_mels": 72, "norm_signal": True})
    del dataset_args["fbank_args"]
    config = dict(TINY_CONFIG, exp_dir=folder, dataset_args=dataset_args, model="ReDimNet2B0",
                  model_args={"feat_dim": 72, "C": 4, "embed_dim": 16, "pooling_func": "ASTP",
                              "stages_setup": [[[2, 1], 1, 2, [[3, 3]], 36],
                                               [[1, 2], 1, 1, [[3, 3]], 18]]})
    write_config(os.path.join(folder, "config.yaml"), config)
    torch.manual_seed(0)
    model = build_speaker_model(TrainConfig.from_dict(config))
    model.add_module("frontend", build_frontend(dataset_args))
    model.add_module("projection", get_projection(config["projection_args"], embed_dim=16,
                                                  num_class=5))
    torch.save(model.state_dict(), os.path.join(folder, "avg_model.pt"))
    return model


def test_a_tfmel_model_fine_tunes_at_another_rate(corpus_8k, tmp_path, monkeypatch):
    from wespeaker_py.finetune import run as finetune_run
    from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
    source = str(tmp_path / "source")
    os.makedirs(source)
    source_model = _write_redimnet2_source(source)
    out = str(tmp_path / "out")
    # a run of an earlier version kept the 16 kHz kernels in work/init_body.pt and failed
    with monkeypatch.context() as patch:
        patch.setattr(finetune_run, "_rate_bound_buffers", lambda *args: [])
        with pytest.raises(CheckpointMismatchError, match="real_kernel_pt' has shape"):
            finetune(source, corpus_8k, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    # the same command again resumes that run: it writes the body init anew and trains
    report = finetune(source, corpus_8k, out, FinetuneOptions(**TINY_OPTIONS), device="cpu")
    assert report["sample_rate"] == 8000 and report["source_sample_rate"] == 16000
    # the body init keeps every learnt tensor of the source but its head, and leaves the
    # front-end's 16 kHz kernels to the 8 kHz front-end, which builds its own
    init = torch.load(os.path.join(out, "work", "init_body.pt"))
    learnt = {name for name, _ in source_model.named_parameters()
              if not name.startswith("projection.")}
    assert learnt <= set(init)
    assert not any(key.startswith("frontend.") for key in init)
    kernel = "frontend.spec.torchfbank.2.real_kernel_pt"
    assert source_model.state_dict()[kernel].shape == (256, 1, 400)
    tuned = load_model(out)
    assert tuned.sample_rate == 8000
    assert torch.load(os.path.join(out, "avg_model.pt"))[kernel].shape == (128, 1, 200)


def test_a_model_init_without_front_end_buffers_loads_and_nothing_else_may_be_missing(
        tmp_path):
    from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
    from wespeaker_py.train.builder import _load_model_init
    model = _write_redimnet2_source(str(tmp_path))
    body = {key: value for key, value in model.state_dict().items()
            if not key.startswith("projection.")}
    kernel = "frontend.spec.torchfbank.2.real_kernel_pt"
    # all of the front-end's buffers left out: the model keeps the ones it built
    built = model.state_dict()[kernel].clone()
    _load_model_init(model, {key: value for key, value in body.items()
                             if not key.startswith("frontend.")}, "init.pt", with_head=False)
    assert torch.equal(model.state_dict()[kernel], built)
    partial = {key: value for key, value in body.items() if key != kernel}
    with pytest.raises(CheckpointMismatchError, match=f"tensor '{kernel}' is missing"):
        _load_model_init(model, partial, "init.pt", with_head=False)
    resized = dict(body, **{kernel: torch.zeros(128, 1, 200)})
    with pytest.raises(CheckpointMismatchError, match=f"tensor '{kernel}' has shape"):
        _load_model_init(model, resized, "init.pt", with_head=False)
    # leaving every front-end buffer out lets nothing else be missing
    learnt = next(name for name, _ in model.named_parameters())
    no_buffers = {key: value for key, value in body.items()
                  if not key.startswith("frontend.") and key != learnt}
    with pytest.raises(CheckpointMismatchError, match=f"tensor '{learnt}' is missing"):
        _load_model_init(model, no_buffers, "init.pt", with_head=False)


def test_a_resumed_run_does_not_log_a_random_head_it_does_not_have(tmp_path, caplog):
    from wespeaker_py.train.builder import _load_model_init
    model = _write_redimnet2_source(str(tmp_path))
    state = model.state_dict()
    with caplog.at_level(logging.INFO):
        _load_model_init(model, state, "init.pt", with_head=False,
                         then="models/interrupted.pt")
    assert "reading model_init init.pt first; the weights of models/interrupted.pt replace " \
        "it" in caplog.text
    assert "random weights" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _load_model_init(model, state, "init.pt", with_head=False)
    assert "the head starts from random weights" in caplog.text


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_asked_for_without_cuda_is_refused_before_anything_is_written(
        source_model, corpus_8k, tmp_path, monkeypatch, capsys, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = str(tmp_path / "out")
    status = run_main(_main, ["finetune", "--model", source_model, "--data", corpus_8k,
                              "--out", out, "--epochs", "2", "--batch_size", "8",
                              "--num_workers", "0", "--device", device])
    assert status == 2
    assert (f"--device {device}: CUDA is not available here; give --device cpu, or leave "
            f"--device out") in capsys.readouterr().err
    assert not os.path.exists(out)
    with pytest.raises(WespeakerError, match="CUDA is not available here"):
        finetune(source_model, corpus_8k, out, FinetuneOptions(**TINY_OPTIONS), device=device)
    assert not os.path.exists(out)


def test_device_auto_is_taken_as_no_device_given():
    from wespeaker_py.finetune.config import check_device, gpus_for
    check_device("auto")   # raised AttributeError
    assert gpus_for("auto") is None and gpus_for(None) is None
