"""The DER/JER tables of wespeaker_py.diarization.report, called from Python, checked against
hand-computed scores."""
import logging
import os

import pytest

import wespeaker_py.diarization as diarization
from wespeaker_py.diarization import metrics, report
from wespeaker_py.diarization.plot import file_name
from wespeaker_py.diarization.report import (comparison_table, plot_systems, read_scored,
                                             score_system, score_table)
from wespeaker_py.diarization.rttm import write_rttm
from wespeaker_py.diarization.turns import Turn

# x talks 0-4, y 4-6; the system holds x's speaker (s) on until 5, so y's 4-5 is confused
REF = {"a": [Turn(0.0, 4.0, "x"), Turn(4.0, 6.0, "y")]}
HYP = {"a": [Turn(0.0, 5.0, "s"), Turn(5.0, 6.0, "t")]}
# By hand (x pairs with s, y with t):
#   collar 0:   confusion 1 s of 6 s scored                        -> DER 16.67 %
#   collar 0.5: no-score zones [0, 0.5], [3.5, 4.5], [5.5, 6] leave 4 s scored, of which
#               4.5-5 is confused                                  -> DER 0.5 / 4 = 12.50 %
#   JER: x~s 1 - 4/5 = 0.2, y~t 1 - 1/2 = 0.5, mean over x and y   -> 35.00 % at any collar
DER_BY_COLLAR = {0.0: 100.0 / 6, 0.5: 12.5}
JER = 35.0


def test_score_system_gives_the_hand_computed_der_per_collar_and_one_jer():
    score = score_system(REF, HYP, [0.0, 0.5])
    assert score.der_by_collar == pytest.approx(DER_BY_COLLAR)
    assert list(score.der_by_collar) == [0.0, 0.5]
    assert score.jer == pytest.approx(JER)
    with pytest.raises(ValueError, match="collars is empty"):
        score_system(REF, HYP, [])


@pytest.fixture
def rttms(tmp_path):
    ref, hyp = str(tmp_path / "ref.rttm"), str(tmp_path / "sys.rttm")
    write_rttm(ref, REF)
    write_rttm(hyp, {**HYP, "only_in_sys": [Turn(0.0, 1.0, "s")]})
    return ref, hyp


def test_comparison_table_rows_hold_the_hand_computed_scores(rttms):
    ref, hyp = rttms
    table = comparison_table(ref, {"mine": hyp, "perfect": ref}, [0.0, 0.5])
    assert table.splitlines() == [
        "| system | DER % (collar 0) | DER % (collar 0.5) | JER % | right count | too few "
        "| too many |",
        "|---|---|---|---|---|---|---|",
        "| mine | 16.67 | 12.50 | 35.00 | 100% (1/1) | 0 | 0 |",
        "| perfect | 0.00 | 0.00 | 0.00 | 100% (1/1) | 0 | 0 |"]


def test_score_table_pools_each_condition(rttms):
    ref, hyp = rttms
    table, pooled = score_table(ref, hyp, [0.0, 0.5], per_file=True)
    assert list(pooled) == [(0.0, True), (0.0, False), (0.5, True), (0.5, False)]
    for (collar, _), score in pooled.items():   # no overlapped speech: excluding it is moot
        assert score.der == pytest.approx(DER_BY_COLLAR[collar])
        assert score.jer == pytest.approx(JER)
    assert "| a | 0.5 | scored | 0.00 | 0.00 | 12.50 | 12.50 | 35.00 |" in table.splitlines()
    assert "| all (1) | 0 | excluded | 0.00 | 0.00 | 16.67 | 16.67 | 35.00 |" in table.splitlines()


def test_read_scored_leaves_out_and_names_the_system_s_other_recordings(rttms, caplog):
    ref, hyp = rttms
    with caplog.at_level(logging.WARNING, logger="wespeaker_py.diarization.report"):
        scored = read_scored(ref, hyp)
    assert sorted(scored.hyp) == ["a"] and scored.regions is None
    assert "1 recordings are not in" in caplog.text and "only_in_sys" in caplog.text


def test_plot_systems_draws_each_system_in_its_own_folder(rttms, tmp_path):
    ref, hyp = rttms
    plots = str(tmp_path / "plots")
    drawn = plot_systems(ref, {"mine/v2": hyp, "perfect": ref}, plots)
    # the reference's recording and the system's left-out one are not drawn
    assert drawn == {os.path.join(plots, file_name("mine/v2")): 1,
                     os.path.join(plots, "perfect"): 1}
    for folder in drawn:
        assert os.listdir(folder) == ["a.png"]


# Recording b: x talks 0-3, y 2-4 (both 2-3); the system has s 0-4 and t 4-5, so the default
# evaluation map is 0-5. x pairs with s (3 s shared); t shares nothing, so y has no partner.
# Pieces: 0-2 x~s right; 2-3 x and y against s alone: 1 s missed; 3-4 y against s: 1 s
# confused; 4-5 t alone: 1 s false alarm. As (scored, missed, false alarm, confusion):
#   collar 0, overlap scored:   5 (x 3 + y 2), 1, 1, 1                     -> DER 3/5 = 60 %
#   collar 0, overlap excluded: 2-3 out: 3, 0, 1, 1                        -> DER 2/3
#   collar 0.5 (either): zones [-0.5, 0.5], [1.5, 2.5], [2.5, 3.5], [3.5, 4.5] leave
#       0.5-1.5 (x~s, 1 s) and 4.5-5 (t alone, 0.5 s false alarm): 1, 0, 0.5, 0 -> DER 50 %
#   JER: x~s 1 - 3/4 = 0.25 and y unpaired 1 (sum 1.25; y~s, x unpaired: 1.5) -> 62.5 %
# Recording a (REF/HYP above) has no overlapped speech, so excluding it changes nothing:
#   collar 0: 6, 0, 0, 1; collar 0.5: 4, 0, 0, 0.5; JER errors 0.2 and 0.5.
# Pooled: collar 0 scored 11 s, 4 s wrong (36.36 %); collar 0 without overlap 9 s, 3 s
# wrong (33.33 %); collar 0.5 5 s, 1 s wrong (20 %); JER mean(0.2, 0.5, 0.25, 1) = 48.75 %.
TWO_REF = {**REF, "b": [Turn(0.0, 3.0, "x"), Turn(2.0, 4.0, "y")]}
TWO_HYP = {**HYP, "b": [Turn(0.0, 4.0, "s"), Turn(4.0, 5.0, "t")]}
TIMES_BY_CONDITION = {   # recording -> (scored, missed, false alarm, confusion) seconds
    (0.0, True): {"a": (6, 0, 0, 1), "b": (5, 1, 1, 1)},
    (0.0, False): {"a": (6, 0, 0, 1), "b": (3, 0, 1, 1)},
    (0.5, True): {"a": (4, 0, 0, 0.5), "b": (1, 0, 0.5, 0)},
    (0.5, False): {"a": (4, 0, 0, 0.5), "b": (1, 0, 0.5, 0)}}
POOLED_DER = {(0.0, True): 400 / 11, (0.0, False): 100 / 3, (0.5, True): 20.0,
              (0.5, False): 20.0}
JER_BY_RECORDING = {"a": 35.0, "b": 62.5}


def _seconds(times: metrics.ErrorTimes):
    return times.scored, times.missed, times.false_alarm, times.confusion


def test_score_conditions_gives_the_hand_computed_scores_with_one_jer_per_recording(
        monkeypatch):
    calls = []
    counted = metrics.speaker_jaccard
    monkeypatch.setattr(metrics, "speaker_jaccard",
                        lambda *args: calls.append(args[0]) or counted(*args))
    scores = metrics.score_conditions(TWO_REF, TWO_HYP, list(TIMES_BY_CONDITION))
    assert len(calls) == 2   # once per recording, not once per recording and condition
    assert list(scores) == list(TIMES_BY_CONDITION)
    for condition, (files, pooled) in scores.items():
        assert {name: _seconds(score.times) for name, score in files.items()} == {
            name: pytest.approx(times) for name, times in TIMES_BY_CONDITION[condition].items()}
        assert {name: score.jer for name, score in files.items()} == pytest.approx(
            JER_BY_RECORDING)
        assert pooled.der == pytest.approx(POOLED_DER[condition])
        assert pooled.jer == pytest.approx(48.75)


def test_the_report_functions_are_exported_by_the_diarization_package():
    public = [name for name in dir(report) if not name.startswith("_")
              and getattr(getattr(report, name), "__module__", None) == report.__name__]
    assert public and set(public) <= set(diarization.__all__)
    for name in public:
        assert getattr(diarization, name) is getattr(report, name)
