"""Trial lists without repeats (tools/make_trials.py, read_trials) and the QMF files read
and written through the one score-file reader and writer."""
import logging
from collections import Counter

import numpy as np
import pytest

from wespeaker_py.errors import WespeakerError
from wespeaker_py.scoring import qmf
from wespeaker_py.scoring.make_trials import TrialDesignError, sample_balanced_trials
from wespeaker_py.scoring.trials import read_score_file, read_trials, write_score_file
from wespeaker_py.utils.tables import DataFormatError


def corpus(speakers: int, per_speaker: int):
    return {f"s{s}-u{u}": f"s{s}" for s in range(speakers) for u in range(per_speaker)}


def check_trials(utt2spk, trials):
    """Every trial pairs two utterances once, labelled by their speakers."""
    pairs = [frozenset(trial[:2]) for trial in trials]
    assert len(set(pairs)) == len(pairs)
    for enroll, test, label in trials:
        assert enroll != test
        assert label == ("target" if utt2spk[enroll] == utt2spk[test] else "nontarget")


# -- random trials --------------------------------------------------------------------------

@pytest.mark.parametrize("num_trials", [200, 201, 7])
def test_random_trials_are_distinct_balanced_and_exactly_as_many_as_asked(num_trials):
    utt2spk = corpus(20, 30)   # 8700 target and 171000 nontarget pairs: drawn one by one
    trials = sample_balanced_trials(utt2spk, num_trials, seed=3)
    check_trials(utt2spk, trials)
    labels = Counter(label for _, _, label in trials)
    assert labels == {"target": num_trials // 2, "nontarget": num_trials - num_trials // 2}
    assert trials == sample_balanced_trials(utt2spk, num_trials, seed=3)
    assert trials != sample_balanced_trials(utt2spk, num_trials, seed=4)


def test_nearly_all_pairs_asked_for_are_a_sample_of_them_all():
    utt2spk = corpus(4, 5)     # 40 target and 150 nontarget pairs
    trials = sample_balanced_trials(utt2spk, 70, seed=0)
    check_trials(utt2spk, trials)
    assert Counter(label for _, _, label in trials) == {"target": 35, "nontarget": 35}


def test_too_few_pairs_of_one_kind_are_all_taken_and_the_other_kind_makes_up_the_number(
        caplog):
    utt2spk = corpus(3, 2)     # 3 target and 12 nontarget pairs
    with caplog.at_level(logging.WARNING):
        trials = sample_balanced_trials(utt2spk, 8, seed=0, source="u2s")
    check_trials(utt2spk, trials)
    assert Counter(label for _, _, label in trials) == {"target": 3, "nontarget": 5}
    assert "u2s: its utterances give 3 distinct target and 12 distinct nontarget pairs; of " \
           "8 trials, 4 and 4 would be target and nontarget: writing 3 target and 5 " \
           "nontarget trials, none twice" in caplog.text


def test_more_trials_than_pairs_give_every_pair_once_and_say_how_many(caplog):
    utt2spk = corpus(3, 2)
    with caplog.at_level(logging.WARNING):
        trials = sample_balanced_trials(utt2spk, 2001, seed=0)
    check_trials(utt2spk, trials)
    assert len(trials) == 15
    assert "writing 3 target and 12 nontarget trials, 15 trials in all, none twice" \
        in caplog.text


def test_trials_from_too_few_speakers_are_a_user_error():
    with pytest.raises(TrialDesignError, match=r"u2s: need at least two speakers") as error:
        sample_balanced_trials(corpus(1, 5), 10, source="u2s")
    assert isinstance(error.value, WespeakerError) and isinstance(error.value, ValueError)
    with pytest.raises(TrialDesignError, match="at least 1, got 0"):
        sample_balanced_trials(corpus(3, 3), 0)


# -- repeated trial lines -------------------------------------------------------------------

def test_read_trials_counts_lines_that_repeat_a_pair(tmp_path, caplog):
    path = tmp_path / "trials"
    path.write_text("a b target\nc d nontarget\n\na b target\nc d nontarget\na b target\n"
                    "b a target\n")
    with caplog.at_level(logging.WARNING):
        trials = read_trials(str(path))
    assert len(trials) == 6   # every line is kept
    assert f"{path}: 3 trial(s) repeat the enroll and test keys of an earlier line (the " \
           f"first: line 4, a b) and 1 trial(s) swap the enroll and test keys of an earlier " \
           f"line (the first: line 7, b a); each repeat is scored" in caplog.text


def test_read_trials_counts_pairs_repeated_in_the_other_order_apart(tmp_path, caplog):
    path = tmp_path / "trials"
    path.write_text("a b target\nc d nontarget\nb a target\nb a target\nd c nontarget\n")
    with caplog.at_level(logging.WARNING):
        read_trials(str(path))
    assert f"{path}: 1 trial(s) repeat the enroll and test keys of an earlier line (the " \
           f"first: line 4, b a) and 2 trial(s) swap the enroll and test keys of an earlier " \
           f"line (the first: line 3, b a)" in caplog.text


def test_read_trials_of_distinct_pairs_says_nothing(tmp_path, caplog):
    path = tmp_path / "trials"
    path.write_text("a b target\nb c target\na c nontarget\na a target\n")
    with caplog.at_level(logging.WARNING):
        read_trials(str(path))
    assert "repeat" not in caplog.text


# -- QMF files through the score-file reader and writer --------------------------------------

def test_gather_refuses_a_normalised_file_with_labels_on_some_lines_only(tmp_path):
    (tmp_path / "utt2dur").write_text("a 3.0\nb 5.0\nc 4.0\n")
    norm = tmp_path / "n.score"
    norm.write_text("a b 1.0 target 1 1 0.2 0.2\na c 0.5 1 1 0.2 0.2\n")
    with pytest.raises(DataFormatError, match=r"n\.score:2: label column present on some "
                                              r"lines only"):
        qmf.gather_calibration_factors(str(norm), str(tmp_path / "f"), str(tmp_path / "utt2dur"))
    assert not (tmp_path / "f").exists()


def test_gather_names_the_quality_column_that_is_not_a_finite_number(tmp_path):
    norm = tmp_path / "n.score"
    norm.write_text("a b 1.0 target 1 1 0.2 0.2\na c 0.5 nontarget 1 1 0.2 nan\n")
    with pytest.raises(DataFormatError, match=r"n\.score:2: test_mean 'nan' is not finite"):
        qmf.gather_calibration_factors(str(norm), str(tmp_path / "f"), drop_duration=True)


def test_read_score_file_keeps_the_extra_columns(tmp_path):
    path = tmp_path / "n.score"
    path.write_text("a b 1.0 target 1 2 0.25 0.5\na c 0.5 nontarget 3 4 0.75 1\n")
    trials = read_score_file(str(path), qmf.QMF_NORM_COLUMNS)
    np.testing.assert_array_equal(trials.extra, [[1, 2, 0.25, 0.5], [3, 4, 0.75, 1]])
    np.testing.assert_array_equal(trials.subset(np.array([False, True])).extra,
                                  [[3, 4, 0.75, 1]])
    (tmp_path / "short.score").write_text("a b 1.0 target 1 2 0.25\n")
    with pytest.raises(DataFormatError, match=r"short\.score:1: expected 'enroll test score "
                                              r"\[label\] enroll_mag test_mag enroll_mean "
                                              r"test_mean', got 7 fields"):
        read_score_file(str(tmp_path / "short.score"), qmf.QMF_NORM_COLUMNS)


@pytest.mark.parametrize("labelled", [True, False])
def test_infer_writes_what_write_score_file_writes(tmp_path, labelled):
    factors = tmp_path / "f.calibration"
    lines = [("a", "b", "target", 0.5, 1.0), ("c", "d", "nontarget", -0.25, 2.0),
             ("a", "d", "nontarget", 1e-7, -3.0)]
    factors.write_text("".join(f"{e} {t}{' ' + lab if labelled else ''} {s} {x}\n"
                               for e, t, lab, s, x in lines))
    model = qmf.LinearCalibration(np.array([2.0, 0.5]), -0.125)
    qmf.save_calibration(str(tmp_path / "m.pt"), model)
    count = qmf.infer_calibration_file(str(factors), str(tmp_path / "m.pt"),
                                       str(tmp_path / "out.score"))
    assert count == 3
    llrs = [2.0 * s + 0.5 * x - 0.125 for _, _, _, s, x in lines]
    assert (tmp_path / "out.score").read_text() == "".join(
        f"{e} {t} {llr:.5f}{' ' + lab if labelled else ''}\n"
        for (e, t, lab, _, _), llr in zip(lines, llrs))
    # the one writer: the same trials and scores written by write_score_file
    scored = read_score_file(str(tmp_path / "out.score"))
    write_score_file(str(tmp_path / "again.score"), scored, np.array(llrs))
    assert (tmp_path / "again.score").read_bytes() == (tmp_path / "out.score").read_bytes()
