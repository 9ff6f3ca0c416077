"""Diarization building blocks: VAD, windows, turns, RTTM, DER/JER
(clustering: test_diarization_clustering.py)."""
import os

import numpy as np
import pytest

from wespeaker_py.audio import INT16_SCALE, load_audio
from wespeaker_py.diarization.metrics import (align, count_speakers, error_times,
                                              score_recordings, speaker_jaccard)
from wespeaker_py.diarization.rttm import read_rttm, read_speaker_counts, read_uem, write_rttm
from wespeaker_py.diarization.segmentation import subsegments
from wespeaker_py.diarization.turns import (Turn, clip_turns, frames_to_turns,
                                            windows_to_turns)
from wespeaker_py.diarization.vad import EnergyVAD, SileroVAD, probabilities_to_regions
from wespeaker_py.utils.tables import DataFormatError

SR = 16000
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "mini", "data", "librispeech_tc100")


def speech_like(seconds, rng, level=0.1):
    """Noise shaped by a 4 Hz syllable-rate envelope: loud, voiced-looking bursts."""
    t = np.arange(int(seconds * SR)) / SR
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (level * envelope * rng.standard_normal(t.size)).astype(np.float32)


def two_bursts_between_silences():
    """Faint noise with speech-like bursts at 1-3 s and 4.5-5.5 s (5.5 s in all)."""
    rng = np.random.default_rng(0)

    def quiet(seconds):
        return (1e-4 * rng.standard_normal(int(seconds * SR))).astype(np.float32)

    return np.concatenate([quiet(1.0), speech_like(2.0, rng), quiet(1.5),
                           speech_like(1.0, rng), quiet(0.5)])


# ---------------------------------------------------------------- VAD

def test_energy_vad_finds_generated_speech_between_silences():
    regions = EnergyVAD()(two_bursts_between_silences(), SR)
    assert len(regions) == 2
    (s1, e1), (s2, e2) = regions
    assert abs(s1 - 1.0) < 0.06 and abs(e1 - 3.0) < 0.06
    assert abs(s2 - 4.5) < 0.06 and abs(e2 - 5.5) < 0.06


def test_energy_vad_takes_the_region_durations_and_refuses_a_probability_threshold():
    from wespeaker_py.diarization.options import ClusteringOptionError, DiarizationOptions
    from wespeaker_py.diarization.vad import build_vad

    audio = two_bursts_between_silences()

    def regions(**settings):
        options = DiarizationOptions.from_settings(vad="energy", **settings)
        return build_vad(options.vad, options.region_rules())(audio, SR)

    assert len(regions()) == 2
    (start, end), = regions(min_silence=2.0)            # the 1.5 s pause bridged
    assert abs(start - 1.0) < 0.06 and abs(end - 5.5) < 0.06
    (start, end), = regions(min_speech=1.5)             # the 1 s burst dropped
    assert abs(start - 1.0) < 0.06 and abs(end - 3.0) < 0.06
    with pytest.raises(ClusteringOptionError, match="vad_threshold.*energy VAD takes none"):
        DiarizationOptions.from_settings(vad="energy", vad_threshold=0.8)


def test_energy_vad_finds_nothing_in_silence_or_faint_noise():
    rng = np.random.default_rng(1)
    assert EnergyVAD()(np.zeros(3 * SR, dtype=np.float32), SR) == []
    assert EnergyVAD()((1e-4 * rng.standard_normal(3 * SR)).astype(np.float32), SR) == []
    assert EnergyVAD()(np.zeros(100, dtype=np.float32), SR) == []


def test_region_rules_bridge_short_pauses_and_drop_short_bursts():
    hop = 0.01
    probs = np.zeros(300)
    probs[10:60] = 1      # 0.10-0.60 s
    probs[65:120] = 1     # a 0.05 s pause: bridged
    probs[200:210] = 1    # 0.1 s burst: dropped (< 0.25 s)
    regions = probabilities_to_regions(probs, hop, 3.0)
    assert regions == [(pytest.approx(0.07), pytest.approx(1.23))]


def test_silero_vad_finds_real_speech_and_not_silence():
    path = os.path.join(CORPUS, "wav", "26", "26-495-0000-s0.flac")
    speech = load_audio(path, SR) / INT16_SCALE
    audio = np.concatenate([np.zeros(SR, np.float32), speech, np.zeros(2 * SR, np.float32)])
    vad = SileroVAD()
    regions = vad(audio, SR)
    assert regions, "no speech found in a LibriSpeech utterance"
    assert regions[0][0] > 0.9 and regions[-1][1] < 1.0 + speech.size / SR + 0.1
    voiced = sum(e - s for s, e in regions)
    assert voiced > 0.5 * speech.size / SR
    assert vad(np.zeros(3 * SR, dtype=np.float32), SR) == []


# ---------------------------------------------------------------- windows

def test_subsegments_follow_wespeaker_windows():
    pieces = subsegments([(0.0, 1.0), (2.0, 5.0), (10.0, 11.6)], window=1.5, shift=0.75)
    assert pieces == [(0.0, 1.0),                                  # shorter than a window
                      (2.0, 3.5), (2.75, 4.25), (3.5, 5.0),        # 3 s: exact cover
                      (10.0, 11.5), (10.75, 11.6)]                 # last one cut at the end
    assert subsegments([(1.0, 2.5)]) == [(1.0, 2.5)]
    assert subsegments([]) == []


def test_subsegments_cover_each_region_exactly():
    regions = [(0.37, 7.21), (9.0, 9.3), (12.0, 20.05)]
    pieces = subsegments(regions)
    for start, end in regions:
        inside = [p for p in pieces if start - 1e-9 <= p[0] and p[1] <= end + 1e-9]
        assert inside[0][0] == pytest.approx(start) and inside[-1][1] == pytest.approx(end)
        assert all(b - a <= 1.5 + 1e-9 for a, b in inside)
        assert all(n[0] < p[1] or n[0] == pytest.approx(p[1]) for p, n in zip(inside, inside[1:]))


@pytest.mark.parametrize("resolution", [None, 0.1])
def test_no_turn_ends_past_the_recording(resolution):
    # 2.0063 s is 200.63 grid steps: the last window, cut on the grid, ends at 2.01
    from wespeaker_py.diarization import DiarizationOptions, Diarizer
    from diarization_helpers import SR, speakers_in_turn, whole_recording
    audio = (0.3 * np.random.default_rng(0).standard_normal(int(2.0063 * SR))).astype(np.float32)
    options = DiarizationOptions(vad="energy", resolution=resolution)
    turns = Diarizer(speakers_in_turn(2), options, whole_recording).diarize(audio, SR).turns
    assert max(turn.end for turn in turns) == pytest.approx(audio.size / SR)
    assert all(turn.start < turn.end for turn in turns)


def test_a_min_speakers_the_speech_cannot_give_is_warned_about(caplog):
    # it was dropped silently, where num_speakers was warned about
    from wespeaker_py.diarization import DiarizationOptions, Diarizer
    from diarization_helpers import SR, speakers_in_turn, whole_recording
    audio = (0.3 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)
    diarizer = Diarizer(speakers_in_turn(2), DiarizationOptions(vad="energy"), whole_recording)
    result = diarizer.diarize(audio, SR, min_speakers=3, recording="short")
    assert result.num_speakers < 3
    assert (f"short: min_speakers=3 but only 2 window(s) of speech: {result.num_speakers} "
            f"speaker(s)") in caplog.text


def test_speech_shorter_than_min_speech_says_so_instead_of_no_reason(tmp_path):
    # a 0.2 s clip of speech was "no speech found" with no word of min_speech
    from wespeaker_py.diarization import DiarizationOptions, Diarizer
    from diarization_helpers import SR, speakers_in_turn
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(SR // 2), 0.5 * rng.standard_normal(SR // 5),
                            np.zeros(SR // 2)]).astype(np.float32)
    diarizer = Diarizer(speakers_in_turn(1), DiarizationOptions(vad="energy"))
    result = diarizer.diarize(audio, SR)
    assert result.turns == [] and result.silence == (
        "the VAD kept no speech of at least min_speech 0.25 s")
    taken = Diarizer(speakers_in_turn(1), DiarizationOptions(vad="energy", min_speech=0.1))
    assert taken.diarize(audio, SR).turns


def test_clip_turns_cuts_an_end_past_the_recording_and_drops_what_starts_there():
    turns = [Turn(0.0, 1.0, "a"), Turn(1.0, 2.01, "b"), Turn(2.0063, 2.01, "a")]
    assert clip_turns(turns, 2.0063) == [Turn(0.0, 1.0, "a"), Turn(1.0, 2.0063, "b")]


# ---------------------------------------------------------------- turns and RTTM

def test_overlapping_windows_split_at_midpoints_and_merge_by_speaker():
    windows = [(0.0, 1.5), (0.75, 2.25), (1.5, 3.0), (2.25, 3.2), (5.0, 6.0)]
    turns = windows_to_turns(windows, [0, 0, 1, 1, 1])
    assert turns == [Turn(0.0, 1.875, "spk0"), Turn(1.875, 3.2, "spk1"),
                     Turn(5.0, 6.0, "spk1")]
    assert windows_to_turns([], []) == []
    with pytest.raises(ValueError, match="sorted"):
        windows_to_turns([(2.0, 3.0), (1.0, 2.0)], [0, 0])


def test_rttm_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "out.rttm")
    turns = {"rec1": [Turn(1.5, 2.25, "spk1"), Turn(0.0, 1.2345, "spk0")],
             "rec2": [], "rec3": [Turn(0.1, 0.2, "A")]}
    write_rttm(path, turns)
    lines = open(path).read().splitlines()
    assert lines[0] == "SPEAKER rec1 1 0.000 1.234 <NA> <NA> spk0 <NA> <NA>" or \
        lines[0] == "SPEAKER rec1 1 0.000 1.235 <NA> <NA> spk0 <NA> <NA>"
    back = read_rttm(path)
    assert list(back) == ["rec1", "rec3"]
    assert [t.speaker for t in back["rec1"]] == ["spk0", "spk1"]
    assert back["rec1"][1].start == 1.5 and back["rec1"][1].end == pytest.approx(2.25)
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER r 1 0.0 1.0 <NA> <NA> a <NA> <NA>\nSPEAKER r 1 x 1.0 <NA> <NA> b\n")
    with pytest.raises(DataFormatError, match=r"bad.rttm:2"):
        read_rttm(str(bad))


def test_rttm_turns_on_fractional_frames_touch_and_slivers_are_left_out(tmp_path):
    step = 0.0333
    turns = [Turn(round(index * step, 6), round((index + 1) * step, 6), f"spk{index % 2}")
             for index in range(30)]
    turns.append(Turn(1.0, 1.0004, "spk2"))   # under a millisecond: no line
    path = str(tmp_path / "frames.rttm")
    write_rttm(path, {"rec": turns})
    fields = [line.split() for line in open(path).read().splitlines()]
    assert len(fields) == 30 and {f[7] for f in fields} == {"spk0", "spk1"}
    spans = [(int(round(float(f[3]) * 1000)), int(round(float(f[4]) * 1000))) for f in fields]
    for (start, length), (next_start, _) in zip(spans, spans[1:]):
        assert start + length == next_start      # each line ends where the next begins


@pytest.mark.parametrize("start, duration", [("nan", "1.0"), ("0.5", "nan"), ("inf", "1.0"),
                                             ("0.5", "inf"), ("0.5", "-inf")])
def test_rttm_refuses_times_that_are_not_finite(tmp_path, start, duration):
    # nan < 0 is False: such a turn was read, and scored as perfect
    path = tmp_path / "ref.rttm"
    path.write_text("SPEAKER r 1 0.0 1.0 <NA> <NA> a <NA> <NA>\n"
                    f"SPEAKER r 1 {start} {duration} <NA> <NA> b <NA> <NA>\n")
    with pytest.raises(DataFormatError, match=r"ref.rttm:2: start and duration must be finite"):
        read_rttm(str(path))


def test_uem_refuses_an_end_that_is_not_finite(tmp_path):
    path = tmp_path / "all.uem"
    path.write_text("r 1 0.0 10.0\nr 1 12.0 inf\n")
    with pytest.raises(DataFormatError, match=r"all.uem:2: need 0 <= start < end, both finite"):
        read_uem(str(path))


def test_rttm_uem_and_speaker_counts_read_past_a_byte_order_mark(tmp_path):
    # a Windows editor's BOM made the first RTTM field "\ufeffSPEAKER": its turn was lost
    rttm, uem, counts = tmp_path / "ref.rttm", tmp_path / "all.uem", tmp_path / "reco2num_spk"
    rttm.write_text("SPEAKER rec1 1 0.0 1.0 <NA> <NA> a <NA> <NA>\n"
                    "SPEAKER rec1 1 1.0 1.0 <NA> <NA> b <NA> <NA>\n", encoding="utf-8-sig")
    uem.write_text("rec1 1 0.0 2.0\n", encoding="utf-8-sig")
    counts.write_text("rec1 2\n", encoding="utf-8-sig")
    assert [t.speaker for t in read_rttm(str(rttm))["rec1"]] == ["a", "b"]
    assert read_uem(str(uem)) == {"rec1": [(0.0, 2.0)]}
    assert read_speaker_counts(str(counts)) == {"rec1": 2}


def test_speaker_counts_name_both_lines_of_a_repeated_recording(tmp_path):
    counts = tmp_path / "reco2num_spk"
    counts.write_text("rec1 2\nrec2 3\nrec1 4\n")
    with pytest.raises(DataFormatError,
                       match=r"reco2num_spk:3: duplicate recording 'rec1', already on line 1"):
        read_speaker_counts(str(counts))


def test_score_diarization_refuses_a_reference_without_speaker_lines(tmp_path, capsys):
    from wespeaker_py.bin.score_diarization import main
    ref, sys_rttm = tmp_path / "ref.rttm", tmp_path / "sys.rttm"
    ref.write_text(";; a header, and no turn\n")
    write_rttm(str(sys_rttm), {"rec1": [Turn(0.0, 5.0, "x")]})
    with pytest.raises(SystemExit) as stop:     # was DER 0.00 and exit status 0
        main(["--ref_rttm", str(ref), "--sys_rttm", str(sys_rttm)])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert f"{ref}: the reference holds no SPEAKER lines" in err
    # an empty system output is scored: all speech missed
    write_rttm(str(ref), {"rec1": [Turn(0.0, 5.0, "A")]})
    sys_rttm.write_text("")
    with pytest.raises(SystemExit) as stop:
        main(["--ref_rttm", str(ref), "--sys_rttm", str(sys_rttm), "--collars", "0"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "| all (1) | 0 | scored | 100.00 | 0.00 | 0.00 | 100.00 |" in out


def test_rttm_reads_the_other_nist_line_types_and_refuses_a_line_of_none(tmp_path):
    rttm = tmp_path / "ref.rttm"
    rttm.write_text(";; a comment\n\nSPKR-INFO rec1 1 <NA> <NA> <NA> unknown a <NA> <NA>\n"
                    "NOSCORE rec1 1 0.0 1.0 <NA> <NA> <NA> <NA> <NA>\n"
                    "SPEAKER rec1 1 1.0 2.0 <NA> <NA> a <NA> <NA>\n"
                    "speaker rec1 1 3.0 1.0 <NA> <NA> b <NA> <NA>\n")   # types in any case
    turns = read_rttm(str(rttm))["rec1"]
    assert [(t.start, t.speaker) for t in turns] == [(1.0, "a"), (3.0, "b")]
    scp = tmp_path / "two.scp"
    scp.write_text("rec1 /data/rec1.wav\nrec2 /data/rec2.wav\n")
    with pytest.raises(DataFormatError, match=r"two.scp:1: not an RTTM line: 'rec1 /data"):
        read_rttm(str(scp))


@pytest.mark.parametrize("flag", ["--ref_rttm", "--sys_rttm"])
def test_score_diarization_refuses_a_wav_scp_for_either_rttm(tmp_path, capsys, flag):
    # a wav.scp given as the system RTTM scored DER 100.00 with exit status 0
    from wespeaker_py.bin.score_diarization import main
    rttm, scp = tmp_path / "ref.rttm", tmp_path / "two.scp"
    write_rttm(str(rttm), {"rec1": [Turn(0.0, 5.0, "A")]})
    scp.write_text("rec1 /data/rec1.wav\nrec2 /data/rec2.wav\n")
    files = {"--ref_rttm": str(rttm), "--sys_rttm": str(rttm), flag: str(scp)}
    with pytest.raises(SystemExit) as stop:
        main([arg for item in files.items() for arg in item])
    captured = capsys.readouterr()
    assert stop.value.code == 2 and captured.out == ""
    assert f"{scp}:1: not an RTTM line" in captured.err


@pytest.mark.parametrize("step", [0.3, 0.1, 0.07, 0.25])
def test_frame_turns_are_never_empty_at_a_rounding_edge(step):
    # 41 * 0.3 is 12.299999999999999: the frame [12.3, 12.6) reached 1e-15 s into the
    # region ending at 12.3, and the next region's window, another speaker's, covers
    # it: Turn(12.3, 12.3, "spk1") was written to the RTTM as a turn of 0.000 s
    c0, c1 = np.eye(4)[0], np.eye(4)[1]
    for windows in ([(10.88, 12.3), (12.45, 13.95)], [(11.0, 12.3000001), (12.4, 13.0)],
                    [(10.5, 12.0), (11.25, 12.3)], [(0.0, 1.5), (0.75, 2.1), (3.0, 4.2)]):
        labels = np.arange(len(windows)) % 2
        embeddings = np.stack([(c0, c1)[label] for label in labels])
        turns = frames_to_turns(windows, labels, embeddings, step)
        assert all(turn.end > turn.start for turn in turns), (windows, turns)
        assert turns[-1].end == pytest.approx(windows[-1][1], abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(100):
        starts = np.round(np.cumsum(rng.uniform(0.3, 3.0, 6)), 2)
        regions = [(float(a), float(a + rng.uniform(0.05, 6.0))) for a in starts * 3]
        windows = subsegments(regions)
        labels = rng.integers(0, 3, len(windows))
        turns = frames_to_turns(windows, labels, rng.standard_normal((len(windows), 8)), step)
        assert all(turn.end > turn.start for turn in turns)


# ---------------------------------------------------------------- DER / JER, hand-computed

def T(start, end, speaker):
    return Turn(float(start), float(end), speaker)


def test_der_perfect_and_relabelled_hypothesis_is_zero():
    ref = [T(0, 10, "A"), T(10, 20, "B")]
    assert error_times(ref, [T(0, 10, "x"), T(10, 20, "y")]).der == 0.0


def test_der_confusion_with_and_without_collar():
    ref = [T(0, 10, "A"), T(10, 20, "B")]
    sys = [T(0, 12, "X"), T(12, 20, "Y")]
    times = error_times(ref, sys)
    assert (times.scored, times.missed, times.false_alarm) == (20.0, 0.0, 0.0)
    assert times.confusion == pytest.approx(2.0) and times.der == pytest.approx(10.0)
    # collar 0.25 removes [0, .25], [9.75, 10.25], [19.75, 20]: 19 s scored, 1.75 s confused
    times = error_times(ref, sys, collar=0.25)
    assert times.scored == pytest.approx(19.0)
    assert times.der == pytest.approx(100 * 1.75 / 19.0)


def test_der_missed_and_false_alarm():
    times = error_times([T(0, 10, "A")], [T(2, 12, "X")])
    assert times.missed == pytest.approx(2.0) and times.false_alarm == pytest.approx(2.0)
    assert times.der == pytest.approx(40.0)


def test_der_overlap_included_and_excluded():
    ref = [T(0, 10, "A"), T(5, 15, "B")]
    sys = [T(0, 10, "X"), T(10, 15, "Y")]
    # 5-10: two speakers, one found -> 5 s missed of 20 s reference speech
    assert error_times(ref, sys).der == pytest.approx(25.0)
    assert error_times(ref, sys, ignore_overlaps=True).der == pytest.approx(0.0)
    # one system speaker for everything: A -> X; B is confused 5-10? no: missed there,
    # and confused 10-15 (X talks, B is the reference): (5 + 5) / 20
    assert error_times(ref, [T(0, 15, "X")]).der == pytest.approx(50.0)


def test_der_edge_cases():
    assert error_times([], []).der == 0.0
    assert error_times([], [T(0, 1, "X")]).der == 100.0
    assert error_times([T(0, 4, "A")], []).der == 100.0


def test_jer_hand_computed():
    ref = [T(0, 10, "A"), T(10, 20, "B")]
    sys = [T(0, 12, "X"), T(12, 20, "Y")]
    # A~X: 10/12 shared, B~Y: 8/10 shared -> mean(1/6, 1/5)
    assert speaker_jaccard(ref, sys).jer == pytest.approx(100 * (1 / 6 + 1 / 5) / 2)
    # an unpaired reference speaker counts fully
    assert speaker_jaccard(ref, [T(0, 20, "X")]).jer == pytest.approx(100 * (0.5 + 1) / 2)
    assert speaker_jaccard([], []).jer == 0.0
    assert speaker_jaccard([T(0, 1, "A")], []).jer == 100.0


def test_scores_pool_over_recordings():
    ref = {"r1": [T(0, 10, "A"), T(10, 20, "B")], "r2": [T(0, 10, "C")]}
    sys = {"r1": [T(0, 12, "X"), T(12, 20, "Y")]}   # r2 missing: all missed
    per, overall = score_recordings(ref, sys)
    assert per["r2"].der == 100.0
    assert overall.der == pytest.approx(100 * (2 + 10) / 30)
    assert overall.jer == pytest.approx(100 * (1 / 6 + 1 / 5 + 1) / 3)


def test_only_the_references_recordings_are_pooled(caplog):
    # md-eval loops over the reference's files: a recording only the system output has
    # (a whole wav.scp diarized, a subset's reference) is left out, and the log names it
    ref = {"dev1": [T(0, 10, "A"), T(10, 20, "B")]}
    sys = {"dev1": [T(0, 10, "x"), T(10, 20, "y")], "test7": [T(0, 100, "x")]}
    per, overall = score_recordings(ref, sys)
    assert list(per) == ["dev1"] and overall.der == 0.0 and overall.jer == 0.0
    assert "not in the reference" in caplog.text and "test7" in caplog.text
    assert count_speakers(ref, sys).total == 1
    # a recording the scoring regions name is scored even without reference speech:
    # its system speech is false alarm, and no reference speech means no shares
    regions = {"dev1": [(0.0, 20.0)], "test7": [(0.0, 100.0)]}
    per, overall = score_recordings(ref, sys, evaluation_maps=regions)
    assert list(per) == ["dev1", "test7"] and per["test7"].der == 100.0
    assert per["test7"].times.parts_percent() == ("n/a", "n/a", "n/a")
    assert overall.der == pytest.approx(500.0)
    assert overall.times.parts_percent(1) == ("0.0", "500.0", "0.0")


def test_turns_are_trimmed_to_the_evaluation_map_first():
    # as dscore: a reference speaker who talks only outside the UEM does not exist
    ref = [T(0, 10, "A"), T(10, 20, "B"), T(25, 30, "C")]
    sys = [T(0, 10, "x"), T(10, 20, "y")]
    uem = [(0.0, 20.0)]
    jaccard = speaker_jaccard(ref, sys, uem)
    assert jaccard.jer == 0.0 and jaccard.num_ref == 2
    counts = count_speakers({"r": ref}, {"r": sys}, {"r": uem})
    assert counts.right == 1
    assert count_speakers({"r": ref}, {"r": sys}).too_few == 1   # all 30 s: C counts
    # and a reference turn cut by the UEM's edge gets a collar there
    ref = [T(0, 10, "A"), T(10, 20, "B")]
    sys = [T(0, 2.2, "y"), T(2.2, 10, "x"), T(10, 20, "y")]   # wrong just after 2 s
    times = error_times(ref, sys, collar=0.25, evaluation_map=[(2.0, 20.0)])
    assert times.scored == pytest.approx(17.0) and times.confusion == 0.0
    # a turn across a gap between two regions is cut at both of its edges
    times = error_times([T(0, 10, "A")], [T(0, 10, "x")], collar=0.5,
                        evaluation_map=[(0.0, 4.0), (6.0, 10.0)])
    assert times.scored == pytest.approx(6.0)


def test_der_pairs_speakers_over_the_evaluation_map_before_exclusions():
    # md-eval pairs speakers over the whole evaluation map, then scores what is left
    # after the collar and overlap exclusions: A talks with X for 6 s (mostly in
    # overlap with C), B with X for 2 s outside it; A, not B, is X's partner
    ref = [T(0, 1, "A"), T(1, 3, "B"), T(3, 8, "A"), T(3, 8, "C"), T(8, 9, "C")]
    sys = [T(0, 8, "X"), T(8, 9, "Y")]
    alignment = align(ref, sys, ignore_overlaps=True)
    assert alignment.pairs == {"A": "X", "C": "Y"}
    times = alignment.times()
    assert (times.scored, times.missed, times.false_alarm) == (4.0, 0.0, 0.0)
    assert times.confusion == pytest.approx(2.0)   # B's 2 s, given to A's X


def test_uem_limits_the_scored_time(tmp_path):
    uem = tmp_path / "all.uem"
    uem.write_text("r1 1 0.0 10.0\nr1 1 20.0 30.0\n")
    regions = read_uem(str(uem))
    assert regions == {"r1": [(0.0, 10.0), (20.0, 30.0)]}
    ref, sys = [T(0, 10, "A")], [T(0, 12, "X")]
    assert error_times(ref, sys).der == pytest.approx(20.0)   # 10-12 is false alarm
    assert error_times(ref, sys, evaluation_map=regions["r1"]).der == 0.0
    uem.write_text("r1 1 5.0 2.0\n")
    with pytest.raises(DataFormatError, match="all.uem:1"):
        read_uem(str(uem))


def test_collars_go_around_a_speakers_overlapping_turns_joined():
    # A's two turns overlap: md-eval and dscore join them first, so no collar at 5 or 10
    ref = [T(0, 10, "A"), T(5, 15, "A"), T(15, 20, "B")]
    sys = [T(0, 4, "x"), T(4, 20, "y")]
    times = error_times(ref, sys, collar=0.25)
    assert times.scored == pytest.approx(19.0)                 # was 18.0
    assert times.confusion == pytest.approx(3.75 + 4.5)        # A's 0.25-4, B's 15.25-19.75
    assert times.der == pytest.approx(43.42, abs=0.01)
    joined = error_times([T(0, 15, "A"), T(15, 20, "B")], sys, collar=0.25)
    assert (times.scored, times.confusion) == (joined.scored, joined.confusion)
    # turns that only touch stay apart, as dscore leaves them: a collar at 5
    touching = error_times([T(0, 5, "A"), T(5, 15, "A"), T(15, 20, "B")], sys, collar=0.25)
    assert touching.scored == pytest.approx(18.5)


def test_a_negative_or_missing_collar_is_refused():
    for collar in (-0.25, float("nan")):
        with pytest.raises(ValueError, match="collar must be a number of seconds"):
            error_times([T(0, 1, "A")], [T(0, 1, "x")], collar=collar)
