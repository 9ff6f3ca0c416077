"""QMF calibration: Cllr, quality features, training, and the calibration-set helpers."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from scoring_helpers import pair_features
from wespeaker_py.errors import ModelSourceError
from wespeaker_py.scoring.calibration_set import compute_utt2dur, generate_calibration_trials
from wespeaker_py.scoring.metrics import compute_eer
from wespeaker_py.scoring.qmf import (cllr, gather_calibration_factors, infer_calibration_file,
                                      load_calibration, read_calibration_factors,
                                      train_calibration, train_calibration_file)
from wespeaker_py.utils.tables import read_utt2dur
from wespeaker_py.scoring.trials import read_labelled_scores
from wespeaker_py.utils.tables import DataFormatError


def test_cllr_reference_values():
    # a system that always says "don't know" costs exactly one bit
    assert cllr(np.zeros(5), np.zeros(7)) == pytest.approx(1.0)
    # LLR +-log(3) on the right side: -log2(0.75) per trial
    assert cllr(np.full(4, np.log(3)), np.full(4, -np.log(3))) == pytest.approx(-np.log2(0.75))
    assert cllr(np.array([50.0]), np.array([-50.0])) < 1e-10


def write_synthetic_norm_file(path, utt2dur_path, rng, num_trials, prefix):
    """Scores shift upwards for short utterances (both classes), as short tests do.

    The best LLR is linear in the score and the shorter duration, so a model
    that sees durations can undo the shift and one that sees the score alone cannot.
    """
    durations = rng.uniform(1.0, 30.0, size=2 * num_trials)
    keys = [f"{prefix}{i}" for i in range(2 * num_trials)]
    with open(utt2dur_path, "a") as handle:
        handle.write("".join(f"{k} {d:.3f}\n" for k, d in zip(keys, durations)))
    labels = rng.random(num_trials) < 0.5
    short = np.minimum(np.minimum(durations[0::2], durations[1::2]), 20.0)
    scores = 3.0 * labels + 3.0 * (1 - short / 20.0) + rng.normal(size=num_trials)
    mags = rng.uniform(5, 15, size=(num_trials, 2))
    means = rng.uniform(0.1, 0.4, size=(num_trials, 2))
    with open(path, "w") as handle:
        for i in range(num_trials):
            handle.write(f"{keys[2 * i]} {keys[2 * i + 1]} {scores[i]:.5f} "
                         f"{'target' if labels[i] else 'nontarget'} {mags[i, 0]:.4f} "
                         f"{mags[i, 1]:.4f} {means[i, 0]:.4f} {means[i, 1]:.4f}\n")


def test_qmf_improves_cllr_over_raw_and_score_only_calibration(tmp_path):
    rng = np.random.default_rng(0)
    utt2dur = str(tmp_path / "utt2dur")
    write_synthetic_norm_file(tmp_path / "cali.score", utt2dur, rng, 3000, "c")
    write_synthetic_norm_file(tmp_path / "eval.score", utt2dur, rng, 3000, "e")
    for name in ("cali", "eval"):
        count = gather_calibration_factors(str(tmp_path / f"{name}.score"),
                                           str(tmp_path / f"{name}.calibration"), utt2dur, 20)
        assert count == 3000
    model_path = str(tmp_path / "calibration_model.pt")
    train_calibration_file(str(tmp_path / "cali.calibration"), model_path)
    infer_calibration_file(str(tmp_path / "eval.calibration"), model_path,
                           str(tmp_path / "eval.cali.score"))
    calibrated, labels = read_labelled_scores(str(tmp_path / "eval.cali.score"))
    raw, raw_labels = read_labelled_scores(str(tmp_path / "eval.score"))
    np.testing.assert_array_equal(labels, raw_labels)
    features, cal_labels = read_calibration_factors(str(tmp_path / "cali.calibration"))
    assert features.shape[1] == 13  # score + 3 measures x (min, max, diff, ratio)
    score_only = train_calibration(features[:, :1], cal_labels)
    eval_features, _ = read_calibration_factors(str(tmp_path / "eval.calibration"))
    score_only_llr = score_only(eval_features[:, :1])

    def cost(llr):
        return cllr(llr[labels == 1], llr[labels == 0])
    assert cost(calibrated) < cost(raw)
    assert cost(calibrated) < cost(score_only_llr) - 0.05
    # the duration minimum carries the correction: its weight is clearly non-zero
    model = load_calibration(model_path)
    assert abs(model.weight[1]) > 0.05


def rounded_qmf_features(rng, num_trials):
    """Score + 3 quality measures x (min, max, diff, ratio), rounded as the factor file is.

    min, max and max - min of each measure are collinear up to the rounding.
    """
    labels = rng.random(num_trials) < 0.3
    durations = rng.uniform(1.0, 20.0, size=(num_trials, 2))
    magnitudes = rng.uniform(5, 15, size=(num_trials, 2))
    cohort_means = rng.uniform(0.05, 0.4, size=(num_trials, 2))
    short = durations.min(axis=1) / 20
    scores = (4.0 * labels - 2 + 2.0 * (1 - short) + 3.0 * cohort_means.max(axis=1)
              + rng.normal(size=num_trials) * (1.5 - short))
    columns = [np.round(scores, 5)]
    for pairs in (durations, magnitudes, cohort_means):
        features = np.array([pair_features(first, second) for first, second in pairs])
        columns.extend(np.round(features, 4).T)
    return np.stack(columns, axis=1), labels


def test_regularised_qmf_keeps_weights_bounded_at_the_same_cllr_and_eer():
    features, labels = rounded_qmf_features(np.random.default_rng(0), 20000)
    free = train_calibration(features, labels, l2=0.0)
    ridge = train_calibration(features, labels)
    # the unpenalised fit chases the rounding noise of the collinear columns
    assert np.abs(free.weight).max() > 100
    assert np.abs(ridge.weight).max() < 20

    def cllr_and_eer(model):
        llr = model(features)
        return cllr(llr[labels], llr[~labels]), compute_eer(llr, labels.astype(int))
    free_cllr, free_eer = cllr_and_eer(free)
    ridge_cllr, ridge_eer = cllr_and_eer(ridge)
    assert ridge_cllr == pytest.approx(free_cllr, rel=0.01)
    assert ridge_eer == pytest.approx(free_eer, rel=0.01)
    with pytest.raises(ValueError, match="l2"):
        train_calibration(features, labels, l2=-1.0)


def test_gather_features_and_duration_cap(tmp_path):
    (tmp_path / "utt2dur").write_text("a 30.0\nb 5.0\n")
    (tmp_path / "n.score").write_text("a b 1.50000 target 10.0 12.0 0.2 0.1\n")
    gather_calibration_factors(str(tmp_path / "n.score"), str(tmp_path / "f"),
                               str(tmp_path / "utt2dur"), max_dur=20)
    fields = (tmp_path / "f").read_text().split()
    assert fields[:4] == ["a", "b", "target", "1.50000"]
    np.testing.assert_allclose([float(v) for v in fields[4:]],
                               [5, 20, 15, 4, 10, 12, 2, 1.2, 0.1, 0.2, 0.1, 2], atol=1e-4)
    gather_calibration_factors(str(tmp_path / "n.score"), str(tmp_path / "g"),
                               drop_duration=True)
    assert len((tmp_path / "g").read_text().split()) == 4 + 8
    # an S-Norm cohort mean written as 0.0000 gives a large but finite ratio
    (tmp_path / "s.score").write_text("a b 1.5 target 10.0 12.0 0.0000 0.0200\n")
    gather_calibration_factors(str(tmp_path / "s.score"), str(tmp_path / "h"),
                               drop_duration=True)
    assert float((tmp_path / "h").read_text().split()[-1]) == pytest.approx(0.02 / 1e-4)


def test_gather_errors_name_the_line(tmp_path):
    (tmp_path / "utt2dur").write_text("a 3.0\nb 5.0\n")
    (tmp_path / "n.score").write_text("a b 1.0 target 1 1 0.2 0.2\na c 1.0 target 1 1 0.2 0.2\n")
    with pytest.raises(DataFormatError,
                       match=r"n\.score:2: utterance 'c' has no \(or a zero\) duration"):
        gather_calibration_factors(str(tmp_path / "n.score"), str(tmp_path / "f"),
                                   str(tmp_path / "utt2dur"))
    (tmp_path / "m.score").write_text("a b 1.0 target 1 1 0.2\n")
    with pytest.raises(DataFormatError, match=r"m\.score:1: expected 'enroll test score \[label\]"):
        gather_calibration_factors(str(tmp_path / "m.score"), str(tmp_path / "f"),
                                   str(tmp_path / "utt2dur"))
    assert not (tmp_path / "f").exists()


def make_speaker_durations(rng, num_speakers=12):
    durations = {}
    for s in range(num_speakers):
        for u in range(10):
            durations[f"id{s:02d}/vid/{u:05d}.wav"] = float(rng.uniform(1.0, 12.0))
    return durations


def test_calibration_trials_are_duration_stratified():
    durations = make_speaker_durations(np.random.default_rng(1))
    trials = generate_calibration_trials(durations, each_trial_num=200, seed=3)
    assert len(trials) == 600
    assert generate_calibration_trials(durations, each_trial_num=200, seed=3) == trials

    def is_short(utt):
        return 2 < durations[utt] < 6
    kinds = {"target": [], "nontarget": []}
    for index, (enroll, test, label) in enumerate(trials):
        same = enroll.split("/")[0] == test.split("/")[0]
        assert same == (label == "target")
        assert enroll != test
        pairing = (index // 2) % 3  # short-short, short-long, long-long
        assert is_short(enroll) == (pairing < 2)
        assert is_short(test) == (pairing == 0)
        assert durations[test] > 2 and durations[enroll] > 2
        kinds[label].append(pairing)
    assert kinds["target"].count(0) == kinds["nontarget"].count(2) == 100


def test_calibration_trials_need_eligible_speakers():
    with pytest.raises(ValueError, match="at least two speakers"):
        generate_calibration_trials({"a/x/1": 3.0, "a/x/2": 3.5, "a/x/3": 8.0, "a/x/4": 9.0})


def test_utt2dur_from_wav_scp(tmp_path):
    for name, seconds, rate in (("a", 1.5, 16000), ("b", 0.25, 8000)):
        soundfile.write(str(tmp_path / f"{name}.flac"), np.zeros(int(seconds * rate)), rate)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path}/a.flac\nb {tmp_path}/b.flac\n")
    count, total = compute_utt2dur(str(tmp_path / "wav.scp"), str(tmp_path / "utt2dur"))
    assert count == 2 and total == pytest.approx(1.75)
    assert read_utt2dur(str(tmp_path / "utt2dur"), max_dur=1.0) == {"a": 1.0, "b": 0.25}
    (tmp_path / "bad.scp").write_text(f"a {tmp_path}/a.flac\nc {tmp_path}/none.wav\n")
    with pytest.raises(DataFormatError, match=r"bad\.scp:2: cannot read"):
        compute_utt2dur(str(tmp_path / "bad.scp"), str(tmp_path / "utt2dur2"))
    # a pipe is run and measured by the audio it gives; one that fails names its line
    (tmp_path / "pipe.scp").write_text(f"a cat {tmp_path}/a.flac |\nb {tmp_path}/b.flac\n"
                                       f"c cat {tmp_path}/none.flac |\n")
    with pytest.raises(DataFormatError, match=r"pipe\.scp:3: cannot read 'cat .*none\.flac \|'"):
        compute_utt2dur(str(tmp_path / "pipe.scp"), str(tmp_path / "utt2dur3"))
    (tmp_path / "pipe.scp").write_text(f"a cat {tmp_path}/a.flac |\nb {tmp_path}/b.flac\n")
    assert compute_utt2dur(str(tmp_path / "pipe.scp"), str(tmp_path / "utt2dur3")) == (2, 1.75)
    assert read_utt2dur(str(tmp_path / "utt2dur3")) == {"a": 1.5, "b": 0.25}


def test_infer_calibration_with_a_model_that_is_no_torch_file_says_so_in_one_line(tmp_path):
    # the reader's message itself: test_user_messages.py
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a model\n")
    with pytest.raises(ModelSourceError) as raised:
        load_calibration(str(garbage))
    factors = tmp_path / "f.calibration"
    factors.write_text("a b target 1.0 2.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "wespeaker_py.bin.score_calibration", "infer_calibration",
         "--calibration_factor_file", str(factors), "--save_model_path", str(garbage),
         "--calibration_score_file", str(tmp_path / "out.score")],
        capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"score_calibration.py: error: {raised.value} (run with --debug for the traceback)"]
    assert not (tmp_path / "out.score").exists()
