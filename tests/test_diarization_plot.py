"""The diarization time line: DER's alignment, the rows drawn, the PNG and the CLI flag."""
import os

import pytest

from wespeaker_py.diarization.metrics import align, subtract_regions
from wespeaker_py.diarization.plot import (ERROR_COLOURS, UNPAIRED_COLOUR, plot_timeline,
                                           timeline_rows)
from wespeaker_py.diarization.rttm import write_rttm
from wespeaker_py.diarization.turns import Turn

# x talks twice, y once, z briefly at the end; the system merges z into x's cluster
# (s), splits y into t and u, starts x's second turn late and runs t into x's first
REF = [Turn(0.0, 2.0, "x"), Turn(2.0, 4.0, "y"), Turn(4.0, 6.0, "x"), Turn(6.0, 6.5, "z")]
SYS = [Turn(0.0, 2.0, "s"), Turn(1.8, 3.2, "t"), Turn(3.2, 4.0, "u"), Turn(4.5, 6.5, "s")]


def test_align_pairs_speakers_and_sums_the_errors_of_its_pieces():
    alignment = align(REF, SYS)
    assert alignment.pairs == {"x": "s", "y": "t"}
    times = alignment.times()
    assert times.missed == pytest.approx(0.5)        # x's 4.0-4.5
    assert times.false_alarm == pytest.approx(0.2)   # t over x at 1.8-2.0
    assert times.confusion == pytest.approx(0.8 + 0.5)  # u for y, s for z
    assert times.scored == pytest.approx(6.5)


def test_subtract_regions_keeps_what_nothing_excluded_covers():
    # the plot shades [0, end] less the UEM; scoring keeps the UEM less the collars
    assert subtract_regions([(0.0, 10.0)], [(2.0, 3.0), (2.5, 4.0), (9.0, 12.0)]) == [
        (0.0, 2.0), (4.0, 9.0)]
    assert subtract_regions([(5.0, 6.0), (0.0, 1.0)], []) == [(0.0, 1.0), (5.0, 6.0)]
    assert subtract_regions([(0.0, 1.0)], [(0.0, 1.0)]) == []


def test_timeline_rows_show_the_merge_the_split_and_where_the_errors_are():
    rows, times = timeline_rows(REF, SYS)
    labels = [row.label for row in rows]
    assert labels == ["ref x", "ref y", "ref z", "sys s = x", "sys t = y", "sys u (unpaired)",
                      "missed", "false alarm", "confusion"]
    by_label = {row.label: row for row in rows}
    # a paired system speaker wears its reference speaker's colour; z's colour has no
    # system row (merged); u is grey and hatched (split off)
    assert by_label["sys s = x"].colour == by_label["ref x"].colour
    assert by_label["sys t = y"].colour == by_label["ref y"].colour
    assert len({by_label[f"ref {n}"].colour for n in "xyz"}) == 3
    assert by_label["ref z"].colour not in [row.colour for row in rows[3:6]]
    assert (by_label["sys u (unpaired)"].colour, by_label["sys u (unpaired)"].hatch) == (
        UNPAIRED_COLOUR, "///")
    assert by_label["ref x"].spans == [(0.0, 2.0), (4.0, 2.0)]

    def spans(label):
        return [(round(a, 6), round(w, 6)) for a, w in by_label[label].spans]
    assert spans("missed") == [(4.0, 0.5)]
    assert spans("false alarm") == [(1.8, 0.2)]
    assert spans("confusion") == [(3.2, 0.8), (6.0, 0.5)]
    assert {by_label[kind].colour for kind in ERROR_COLOURS} == set(ERROR_COLOURS.values())
    assert times.der == pytest.approx(100 * 2.0 / 6.5)


def test_timeline_rows_without_a_system_mark_everything_missed():
    rows, times = timeline_rows(REF, [])
    assert [row.label for row in rows][:3] == ["ref x", "ref y", "ref z"]
    assert rows[3].label == "missed" and rows[3].spans == [(0.0, 6.5)]
    assert times.der == pytest.approx(100.0)


def test_timeline_rows_without_a_reference_give_each_system_speaker_a_colour():
    rows, times = timeline_rows(None, SYS)
    assert times is None
    assert [row.label for row in rows] == ["s", "t", "u"]
    assert len({row.colour for row in rows}) == 3 and not any(row.hatch for row in rows)
    assert rows[0].spans == [(0.0, 2.0), (4.5, 2.0)]


def test_plot_timeline_writes_a_png_and_nothing_else(tmp_path):
    path = tmp_path / "rec.png"
    plot_timeline(REF, SYS, str(path), "rec", evaluation_map=[(0.0, 5.0)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_timeline([], [], str(tmp_path / "empty.png"))
    plot_timeline(None, SYS, str(tmp_path / "system.png"), "rec")
    assert sorted(os.listdir(tmp_path)) == ["empty.png", "rec.png", "system.png"]


def test_score_diarization_draws_each_recording(tmp_path, capsys):
    from wespeaker_py.bin.score_diarization import main
    write_rttm(str(tmp_path / "ref.rttm"), {"a": REF, "b": [Turn(0.0, 1.0, "x")]})
    write_rttm(str(tmp_path / "sys.rttm"), {"a": SYS})   # b: all missed
    plots = tmp_path / "plots"
    with pytest.raises(SystemExit) as stop:
        main(["--ref_rttm", str(tmp_path / "ref.rttm"), "--sys_rttm", str(tmp_path / "sys.rttm"),
              "--plot_dir", str(plots)])
    assert stop.value.code == 0
    assert sorted(os.listdir(plots)) == ["a.png", "b.png"]
    assert f"2 time lines in {plots}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--ref_rttm", str(tmp_path / "ref.rttm"), "--plot_dir", str(plots), "--systems",
              f"mine={tmp_path}/sys.rttm", f"perfect={tmp_path}/ref.rttm"])
    assert stop.value.code == 0
    assert sorted(os.listdir(plots / "mine")) == sorted(os.listdir(plots / "perfect")) == [
        "a.png", "b.png"]


def test_recordings_whose_ids_differ_only_by_a_slash_get_their_own_plots(tmp_path):
    from wespeaker_py.diarization.report import plot_recordings
    from wespeaker_py.diarization.plot import file_name
    names = ["a/b", "a_b", "a%2Fb"]
    assert len({file_name(name) for name in names}) == 3       # '/' -> '_' made two alike
    write_rttm(str(tmp_path / "ref.rttm"), {name: REF for name in names})
    write_rttm(str(tmp_path / "sys.rttm"), {name: SYS for name in names})
    plots = tmp_path / "plots"
    assert plot_recordings(str(tmp_path / "ref.rttm"), str(tmp_path / "sys.rttm"),
                           str(plots)) == 3
    assert sorted(os.listdir(plots)) == sorted(f"{file_name(name)}.png" for name in names)
    assert file_name("rec_1") == "rec_1"


@pytest.mark.parametrize("collars", [["-0.25"], ["0", "-1"], ["nan"], ["0.25", "inf"]])
def test_score_diarization_refuses_a_negative_collar_naming_the_flag(tmp_path, capsys, collars):
    from wespeaker_py.bin.score_diarization import main
    write_rttm(str(tmp_path / "ref.rttm"), {"a": REF})
    with pytest.raises(SystemExit) as stop:     # was scored as 0 and labelled negative
        main(["--ref_rttm", str(tmp_path / "ref.rttm"), "--sys_rttm", str(tmp_path / "ref.rttm"),
              "--collars", *collars])
    assert stop.value.code == 2
    assert (f"argument --collars: must be a finite number >= 0, got {collars[-1]}"
            in capsys.readouterr().err)


def caught_figures(monkeypatch):
    """The figures plot_timeline draws, caught instead of written."""
    from wespeaker_py.diarization import plot
    figures = []
    monkeypatch.setattr(plot, "save_figure", lambda figure, path: figures.append(figure))
    return figures


def test_a_recording_without_turns_is_drawn_over_its_length_and_says_no_speech(monkeypatch):
    figures = caught_figures(monkeypatch)
    plot_timeline(None, [], "silent.png", "silent", duration=12.5)
    plot_timeline(None, [], "unknown.png", "unknown")
    plot_timeline([], [], "both_empty.png", "both", duration=3.0)
    plot_timeline(None, SYS, "talk.png", "talk", duration=10.0)
    silent, unknown, both, talk = [figure.axes[0] for figure in figures]

    def notes(axes):
        return [text.get_text() for text in axes.texts]
    assert silent.get_xlim() == (0.0, 12.5) and notes(silent) == ["no speech"]   # was 0-0.001 s
    # no turn and no length: no made-up times on the axis
    assert unknown.get_xlim() == (0.0, 1.0) and list(unknown.get_xticks()) == []
    assert notes(unknown) == ["no speech"] and "length unknown" in unknown.get_xlabel()
    assert both.get_xlim() == (0.0, 3.0) and notes(both) == ["no speech"]
    # turns: the axis runs to the recording's end (past the last turn), and no note
    assert talk.get_xlim() == (0.0, 10.0) and notes(talk) == []


def test_score_diarization_reads_each_rttm_once_for_the_table_and_the_plots(tmp_path, capsys):
    """A warning of reading (a system recording the reference lacks) is said once, not once
    for the table and again for the plots (the command's log goes to stderr)."""
    from wespeaker_py.bin.score_diarization import main
    write_rttm(str(tmp_path / "ref.rttm"), {"a": REF})
    write_rttm(str(tmp_path / "sys.rttm"), {"a": SYS, "stray": SYS})
    ref, hyp, plots = str(tmp_path / "ref.rttm"), str(tmp_path / "sys.rttm"), tmp_path / "plots"
    for flags in (["--sys_rttm", hyp], ["--systems", f"mine={hyp}", f"again={hyp}"]):
        with pytest.raises(SystemExit) as stop:
            main(["--ref_rttm", ref, "--plot_dir", str(plots), *flags])
        assert stop.value.code == 0
        said = capsys.readouterr().err
        systems = 2 if "--systems" in flags else 1
        assert said.count("left out of the scores") == systems, said
    assert sorted(os.listdir(plots)) == ["a.png", "again", "mine"]
