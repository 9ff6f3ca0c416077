"""What a fine-tuning run says at its end: the summary line (printed by the command, logged
by ``finetune()``), the warning when the new model is worse on dev than the source, the
rate the dev audio was heard at, the next steps for the source's companion files, the
source's recipe mean vector, and the dev embedding's progress bar."""
import json
import logging
import os
import shlex
import shutil

import numpy as np
import pytest

from finetune_helpers import read_finetune_data
from train_helpers import make_speaker_corpus
from wespeaker_py.api import load_model
from wespeaker_py.api.model import SpeakerModel
from wespeaker_py.cli.common import run_main
from wespeaker_py.cli.main import _main
from wespeaker_py.finetune import FinetuneOptions, finetune
from wespeaker_py.finetune import dev as finetune_dev
from wespeaker_py.finetune import run as finetune_run
from wespeaker_py.finetune.config import options_named_as_flags
from wespeaker_py.bin.extract import build_parser as extract_parser
from wespeaker_py.dataset.lists import TableEntry, read_data_list, write_raw_list
from wespeaker_py.finetune.report import (BETTER, DEV_UTTERANCE_FILES, DISAGREE,
                                          NO_DIFFERENCE, UTTERANCE_FILES, WORSE, next_steps,
                                          summary_line, verdict, warn_if_worse, what_to_try,
                                          worse_than_source)

TINY_FLAGS = ["--epochs", "2", "--lr", "0.01", "--batch_size", "8", "--num_workers", "0",
              "--num_avg", "1", "--device", "cpu", "--num_threads", "1"]
TINY_OPTIONS = dict(epochs=2, lr=0.01, batch_size=8, num_workers=0, num_avg=1)


def _data(root):
    """6 speakers x 4 utterances at 16 kHz: wav.scp and utt2spk."""
    make_speaker_corpus(str(root), num_spks=6, utts_per_spk=4, seconds=1.0, wav_scp=True)
    return str(root)


def _report(**dev_by_rate):
    """A finetune.json record of a 16 kHz run with the given dev utterances by rate (29
    target and 142 nontarget trials; as an earlier version wrote it, the counts are the
    split's only)."""
    return {"options": {"lr": 0.001, "freeze": "auto", "freeze_epochs": 1},
            "phases": [{"freeze": "none"}], "sample_rate": 16000,
            "data": {"dev_speakers": 5, "dev_utterances": sum(dev_by_rate.values()),
                     "dev_utterances_by_rate": {rate[2:]: n for rate, n in dev_by_rate.items()},
                     "files_by_rate": {"8000": 77, "16000": 80},
                     "dev_target_trials": 29, "dev_nontarget_trials": 142},
            "dev": {"before": {"eer": 0.0345, "min_dcf": 0.034, "trials": 171},
                    "after": {"eer": 0.2069, "min_dcf": 0.759, "trials": 171}}}


def _dev(eer_before, eer_after, dcf_before, dcf_after, targets=30, nontargets=36):
    """A record's ``dev`` entry of those figures (EER in %), on that many trials of each
    kind."""
    counts = {"trials": targets + nontargets, "target_trials": targets,
              "nontarget_trials": nontargets}
    return {"before": dict(counts, eer=eer_before / 100, min_dcf=dcf_before),
            "after": dict(counts, eer=eer_after / 100, min_dcf=dcf_after)}


# ---- 1, 3: the summary line -----------------------------------------------------------------

def test_the_summary_says_a_worse_model_plainly_and_the_dev_rates():
    report = _report(hz8000=8, hz16000=11)
    assert summary_line(report, "ft2") == (
        "dev (5 speakers, 19 utterances: 8 at 8000 Hz, 11 at 16000 Hz; 171 trials): EER "
        "3.45% before, 20.69% after; minDCF 0.034 before, 0.759 after; WORSE than the "
        "source: try a lower lr (e.g. 0.0001) or freeze='body'; model in ft2")
    with options_named_as_flags():   # as wespeaker-py finetune prints it
        assert summary_line(report, "ft2").endswith(
            "try a lower --lr (e.g. 0.0001) or --freeze body; model in ft2")
    report["phases"] = [{"freeze": "body"}, {"freeze": "none"}]   # froze the body already
    report["dev"]["after"]["eer"] = 0.0345                        # as good is not worse
    assert "WORSE" not in summary_line(report, "ft2")
    report["dev"]["after"]["eer"] = 0.10   # more than one of its 29 target trials worse
    assert "try a lower lr (e.g. 0.0001); model in ft2" in summary_line(report, "ft2")


# ---- the verdict: worse only by more than a trial, with minDCF not better --------------------

@pytest.mark.parametrize("dev, found", [
    # the seeds of one run (30 target, 36 nontarget trials: a target trial is 3.33% of EER)
    (_dev(16.67, 23.33, 0.367, 0.333), DISAGREE),        # EER worse, minDCF better
    (_dev(16.67, 23.33, 0.367, 0.400), WORSE),
    (_dev(16.67, 23.33, 0.367, 0.367), WORSE),           # minDCF not better
    (_dev(16.67, 5.56, 0.367, 0.167), BETTER),
    (_dev(16.67, 5.56, 0.367, 0.400), DISAGREE),         # EER better, minDCF worse
    (_dev(16.67, 20.00, 0.367, 0.600), NO_DIFFERENCE),   # one target trial: not measurable
    (_dev(16.67, 13.34, 0.367, 0.100), NO_DIFFERENCE),
    (_dev(0.0, 0.0, 0.0, 0.0), NO_DIFFERENCE),
    # the smaller kind decides: 15 target trials, a trial is 6.67% of EER (5 to 6 missed)
    (_dev(100 / 3, 40.0, 0.767, 0.867, targets=15, nontargets=100), NO_DIFFERENCE),
    (_dev(33.33, 40.01, 0.767, 0.867, targets=15, nontargets=100), WORSE),
    (_dev(33.33, 40.01, 0.767, 0.867, targets=100, nontargets=15), WORSE),
])
def test_the_verdict_needs_more_than_one_trial_and_minDCF_to_agree(dev, found):
    assert verdict(dev) == found
    assert worse_than_source(dev) is (found == WORSE)


def test_an_earlier_record_is_judged_on_the_splits_trial_counts():
    report = _report(hz16000=19)   # no counts in its figures: 29 target trials, 3.45%
    report["dev"]["after"]["eer"] = 0.0345 + 0.0344
    assert verdict(report["dev"], report["data"]) == NO_DIFFERENCE
    report["dev"]["after"]["eer"] = 0.0345 + 0.0346
    assert verdict(report["dev"], report["data"]) == WORSE


def test_the_summary_says_what_the_dev_part_cannot_tell(caplog):
    report = _report(hz16000=19)
    report["dev"] = _dev(16.67, 23.33, 0.367, 0.333)
    line = summary_line(report, "ft")
    assert line.endswith("minDCF 0.367 before, 0.333 after; EER worse but minDCF better: "
                         "no verdict; model in ft")
    with caplog.at_level(logging.WARNING):
        warn_if_worse(report, "ft")
    assert not caplog.text   # no warning, nor advice, on a disagreement
    report["dev"] = _dev(16.67, 20.00, 0.367, 0.400)
    assert summary_line(report, "ft").endswith(
        "; no measurable difference on 66 trials (one trial of the smaller kind is 3.33% of "
        "EER); model in ft")
    report["dev"] = _dev(16.67, 5.56, 0.367, 0.167)
    assert summary_line(report, "ft").endswith("minDCF 0.367 before, 0.167 after; model in ft")


def test_what_to_try_freezes_the_body_for_an_epoch_where_the_run_froze_none():
    report = _report(hz16000=19)
    report["options"].update(freeze="body", freeze_epochs=0)   # --freeze body froze nothing
    assert what_to_try(report) == "a lower lr (e.g. 0.0001) or freeze_epochs=1"
    report["options"]["freeze"] = "none"
    assert what_to_try(report).endswith(" or freeze='body' freeze_epochs=1")
    with options_named_as_flags():
        assert what_to_try(report).endswith(" or --freeze body --freeze_epochs 1")
    report["options"]["freeze_epochs"] = 1
    assert what_to_try(report).endswith(" or freeze='body'")


def test_the_summary_says_the_rate_dev_audio_was_heard_at_below_its_files():
    report = _report(hz16000=19)
    report["sample_rate"] = 8000
    assert summary_line(report, "ft4").startswith(
        "dev (5 speakers, 19 utterances at 16000 Hz, heard at 8000 Hz (the new model's rate) "
        "by both models; 171 trials)")
    report["sample_rate"] = 16000
    assert "heard at" not in summary_line(report, "ft4")


def test_a_worse_model_is_written_with_a_warning_the_summary_and_the_next_steps(
        source_model, tmp_path, monkeypatch, caplog, capsys):
    source = shutil.copytree(source_model, tmp_path / "source")
    (source / "window_lda.npz").write_bytes(b"learnt on the source's embeddings")
    (source / "window_lda_8000hz.npz").write_bytes(b"learnt on the source's embeddings")
    os.makedirs(source / "embeddings" / "backend")
    np.save(source / "embeddings" / "backend" / "mean_vec.npy", np.full(16, 0.1, np.float32))
    with caplog.at_level(logging.INFO):   # a load of the folder notes the recipe's mean
        load_model(str(source), device="cpu")
    assert "give mean_vec= (--mean_vec) to score as it did" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):   # unless asked not to (finetune says it its way)
        load_model(str(source), device="cpu", note_recipe_mean=False)
    assert "mean_vec" not in caplog.text
    data, out = _data(tmp_path / "data"), str(tmp_path / "out")
    real_score_dev = finetune_run.score_dev

    def source_scores_best(model, audio, trials, what):
        result = real_score_dev(model, audio, trials, what)
        if what == "the source":
            return dict(result, eer=0.0, min_dcf=0.0)
        return dict(result, eer=max(result["eer"], 0.2), min_dcf=max(result["min_dcf"], 0.5))

    monkeypatch.setattr(finetune_run, "score_dev", source_scores_best)
    with caplog.at_level(logging.INFO):
        status = run_main(_main, ["finetune", "--model", str(source), "--data", data,
                                  "--out", out, "--freeze", "none", *TINY_FLAGS])
    assert status == 0
    for name in ("avg_model.pt", "calibration.json", "finetune.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    report = json.load(open(os.path.join(out, "finetune.json")))
    assert report["dev"]["worse_than_source"] is True and report["dev"]["verdict"] == WORSE
    # the trials scored, by kind: 2 dev speakers of 4 utterances
    assert {key: report["dev"]["after"][key] for key in ("target_trials", "nontarget_trials")
            } == {"target_trials": 12, "nontarget_trials": 16}
    after = 100 * report["dev"]["after"]["eer"]
    assert (f"the fine-tuned model is worse than the source on the dev trials: EER 0.00% "
            f"before, {after:.2f}% after") in caplog.text
    assert ("is written all the same; try a lower --lr (e.g. 0.001) or --freeze body"
            in caplog.text)
    printed = capsys.readouterr().out.splitlines()
    with options_named_as_flags():   # the command names its flags
        summary = summary_line(report, out)
    assert printed[0] == summary and "WORSE than the source" in summary
    assert summary not in caplog.text   # printed, not logged too: a terminal shows it once
    listed = os.path.join(out, "work", "lists", "data")   # DIR's lists, paths absolute
    steps = (f"next steps: the source's window_lda.npz, window_lda_8000hz.npz did not carry "
             f"over to {out} (learnt from the source's embeddings, which fine-tuning "
             f"changed); learn the new model's own: window_lda.npz: wespeaker-py window-lda "
             f"--model {out} --data {listed}; window_lda_8000hz.npz: wespeaker-py window-lda "
             f"--model {out} --data {listed} --heard_rate 8000")
    assert printed[1] == steps == report["next_steps"] and "next steps" not in caplog.text
    # the recipe's mean vector: no advice of a flag finetune lacks, but what it scores with
    assert "give mean_vec=" not in caplog.text
    assert (f"{source}: its recipe scored with a mean vector subtracted; the dev scores "
            f"before and after fine-tuning are cosines without one") in caplog.text


# ---- 3, 6: heard at the new model's rate, said by finetune() --------------------------------

def test_the_api_logs_the_summary_with_the_rate_dev_audio_was_heard_at(
        source_model, tmp_path, caplog):
    data = _data(tmp_path / "data")
    with caplog.at_level(logging.INFO):
        report = finetune(source_model, data, str(tmp_path / "out"),
                          FinetuneOptions(sample_rate=8000, **TINY_OPTIONS), device="cpu")
    assert report["dev"]["heard_by_rate"] == {"8000": 8}
    assert report["data"]["dev_utterances_by_rate"] == {"16000": 8}
    assert ("dev (2 speakers, 8 utterances at 16000 Hz, heard at 8000 Hz (the new model's "
            "rate) by both models; 28 trials)") in caplog.text
    assert report["next_steps"] is None and "next steps" not in caplog.text


# ---- 8: the next steps for each kind of companion file ---------------------------------------

def test_each_companion_file_of_the_source_gets_its_command(tmp_path):
    for name in ("mean_vec.npy", "band_fill_8000hz.npz", "calibration.json"):
        (tmp_path / name).write_bytes(b"the source's")
    report = _report(hz16000=19)
    steps = next_steps(str(tmp_path), "OUT", {"data": "DATA"}, report)
    calibrate = ("wespeaker-py calibrate --model OUT --trials OUT/work/data/dev/trials "
                 "--wav_scp DATA/wav.scp")
    # its calibration is replaced; each kind of file is said why it does not carry over
    assert steps.startswith(
        "next steps: the source's band_fill_8000hz.npz, mean_vec.npy did not carry over to "
        "OUT (band_fill_8000hz.npz: a map between log-mel bins, not learnt from embeddings, "
        "but the new model was trained, and its calibration fitted, without one; "
        "mean_vec.npy: learnt from the source's embeddings, which fine-tuning changed); ")
    # the calibration records the band fill its scores went through: fitted again after
    assert (f"band_fill_8000hz.npz: wespeaker-py band-fill --model OUT --data DATA "
            f"--heard_rate 8000, then calibrate again: {calibrate}; ") in steps
    assert ("mean_vec.npy: OUT scores without one, as its calibration was fitted; for one, "
            "python -m wespeaker_py.bin.extract --config OUT/config.yaml") in steps
    assert steps.endswith("then calibrate again: wespeaker-py calibrate --model OUT --trials "
                          "OUT/work/data/dev/trials --wav_scp DATA/wav.scp")
    report["data"]["files_by_rate"] = {"8000": 77}   # no speech at the model's rate here
    assert ("--data <speech at 16000 Hz, e.g. the source's training data> --heard_rate 8000"
            in next_steps(str(tmp_path), "OUT", {"data": "DATA"}, report))
    report["sample_rate"] = 8000   # an 8 kHz model needs no band fill: not listed at all
    assert next_steps(str(tmp_path), "OUT", {"data": "DATA"}, report).startswith(
        "next steps: the source's mean_vec.npy did not carry over to OUT (learnt from the "
        "source's embeddings, which fine-tuning changed); learn the new model's own: "
        "mean_vec.npy: ")
    os.remove(tmp_path / "mean_vec.npy")
    assert next_steps(str(tmp_path), "OUT", {"data": "DATA"}, report) is None


def test_a_band_fill_is_learnt_from_the_data_folder_holding_wide_band_speech(tmp_path):
    (tmp_path / "band_fill_8000hz.npz").write_bytes(b"the source's")
    report = _report(hz8000=19)
    report["data"].update(files_by_rate={"8000": 50}, mix_files_by_rate={"16000": 30})
    folders = {"data": "CALLS8K", "mix_data": "ORIGINAL"}
    assert ("band-fill --model OUT --data ORIGINAL --heard_rate 8000"
            in next_steps(str(tmp_path), "OUT", folders, report))
    report["data"]["files_by_rate"] = {"8000": 50, "16000": 1}
    assert ("band-fill --model OUT --data CALLS8K --heard_rate 8000"
            in next_steps(str(tmp_path), "OUT", folders, report))


def test_the_mean_vector_command_runs_as_printed(tmp_path):
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "mean_vec.npy").write_bytes(b"the source's")
    out = str(tmp_path / "out")
    raw_list = os.path.join(out, "work", "data", "train", "raw.list")
    os.makedirs(os.path.dirname(raw_list))
    write_raw_list([TableEntry("a", "spk0", "/audio/a.wav")], raw_list)
    steps = next_steps(str(tmp_path / "source"), out, {"data": "DATA"}, _report(hz16000=19))
    command = steps[steps.index("python -m wespeaker_py.bin.extract"):steps.index(", copy")]
    args = extract_parser().parse_args(shlex.split(command)[3:])
    assert args.mean_vec and args.data_list == raw_list
    assert [utterance.key for utterance in read_data_list(args.data_list, args.data_type)] == ["a"]


def test_a_data_folder_of_segments_gets_no_command_that_reads_whole_files(tmp_path):
    for name in ("mean_vec.npy", "window_lda.npz"):
        (tmp_path / name).write_bytes(b"the source's")
    report = _report(hz16000=19)
    report["data"]["segments"] = True
    steps = next_steps(str(tmp_path), "OUT", {"data": "DATA"}, report)
    assert f"--wav_scp {DEV_UTTERANCE_FILES}" in steps and "DATA/wav.scp" not in steps
    assert f"window-lda --model OUT --data {UTTERANCE_FILES}" in steps


# ---- 11: the dev embedding shows its progress when it is long --------------------------------

def test_the_dev_embedding_shows_a_progress_bar_from_enough_audio(source_model, tmp_path,
                                                                  monkeypatch):
    split = read_finetune_data(_data(tmp_path / "data"))
    audio, _ = finetune_dev.dev_audio(split, 16000)
    asked = []
    embed_many = SpeakerModel.embed_many

    def spy(self, items, *args, **kwargs):
        asked.append(kwargs["progress"])
        return embed_many(self, items, *args, **kwargs)

    monkeypatch.setattr(SpeakerModel, "embed_many", spy)
    model = load_model(source_model, device="cpu")
    finetune_dev.score_dev(model, audio, split.trials, "the source")   # about 10 s of audio
    monkeypatch.setattr(finetune_dev, "DEV_PROGRESS_SECONDS", 5.0)
    finetune_dev.score_dev(model, audio, split.trials, "the source")
    assert asked == [False, True]
    assert finetune_dev._dev_seconds(audio) == pytest.approx(
        sum(len(samples) for samples in audio[16000].values()) / 16000)
