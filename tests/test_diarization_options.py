"""Clustering settings that would be ignored are refused, naming the setting and why."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from wespeaker_py.diarization import (ClusterOptions, DiarizationOptions, Diarizer,
                                      cluster_windows, diarize_wav_scp)
from wespeaker_py.diarization.options import ClusteringOptionError, check_cluster_options
from wespeaker_py.errors import MissingPackagesError, WespeakerError

SR = 16000
# the refinements of an estimated count, each with the method that reads it
REFINEMENTS = [("min_cluster_size", 3, "spectral-norm"), ("merge_threshold", 0.8, "spectral"),
               ("ahc_threshold", 0.4, "agglomerative")]


def two_speakers(per_speaker=20, dim=16, seed=0):
    """Windows of two speakers: their own direction plus a little noise."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:2] * 5.0
    return np.concatenate([centre + 0.3 * rng.standard_normal((per_speaker, dim))
                           for centre in centres])


def never_called(pieces):
    raise AssertionError("the windows were embedded before the settings were checked")


@pytest.mark.parametrize("method", ["spectral-norm", "spectral", "nme-sc", "umap-hdbscan"])
def test_ahc_threshold_is_refused_by_the_methods_that_never_read_it(method):
    with pytest.raises(ClusteringOptionError, match=f"ahc_threshold \\(0.4\\).*{method} takes"):
        DiarizationOptions.from_settings(cluster_method=method, ahc_threshold=0.4)
    with pytest.raises(ClusteringOptionError, match="ahc_threshold"):
        cluster_windows(two_speakers(), ClusterOptions(method, ahc_threshold=0.4))
    try:
        DiarizationOptions.from_settings(cluster_method=method)   # left at its default: no choice
    except MissingPackagesError:
        assert method == "umap-hdbscan"   # umap-learn is an extra


def test_a_threshold_given_at_its_default_value_is_still_refused_where_it_does_nothing():
    from wespeaker_py.diarization.options import DEFAULT_AHC_THRESHOLD, DEFAULT_VAD_THRESHOLD
    with pytest.raises(ClusteringOptionError, match=f"ahc_threshold \\({DEFAULT_AHC_THRESHOLD:g}"
                                                    f"\\).*spectral-norm takes none"):
        DiarizationOptions.from_settings(ahc_threshold=DEFAULT_AHC_THRESHOLD)
    with pytest.raises(ClusteringOptionError, match="ahc_threshold.*num_speakers=2"):
        DiarizationOptions.from_settings(cluster_method="agglomerative", num_speakers=2,
                                         ahc_threshold=DEFAULT_AHC_THRESHOLD)
    with pytest.raises(ClusteringOptionError, match="vad_threshold.*energy VAD takes none"):
        DiarizationOptions.from_settings(vad="energy", vad_threshold=DEFAULT_VAD_THRESHOLD)
    # left out, they take their defaults
    options = DiarizationOptions.from_settings(cluster_method="agglomerative")
    assert options.cluster_options().resolved_ahc_threshold() == DEFAULT_AHC_THRESHOLD
    assert options.region_rules().threshold == DEFAULT_VAD_THRESHOLD
    assert DiarizationOptions.from_settings(vad_threshold=0.3).region_rules().threshold == 0.3


def test_agglomerative_reads_its_ahc_threshold():
    embeddings = two_speakers()
    counts = [cluster_windows(embeddings, ClusterOptions("agglomerative", ahc_threshold=cut),
                              max_speakers=40).num_speakers for cut in (0.05, 1.9)]
    assert counts[0] > counts[1] == 1       # a lower cut merges less


@pytest.mark.parametrize("name, value, method", REFINEMENTS)
def test_refinements_of_an_estimated_count_are_refused_with_a_given_count(name, value, method):
    settings = {name: value, "cluster_method": method}
    with pytest.raises(ClusteringOptionError,
                       match=f"{name} \\({value:g}\\) shapes an estimated.*num_speakers=2"):
        DiarizationOptions.from_settings(num_speakers=2, **settings)
    options = ClusterOptions(method, **{name: value})
    with pytest.raises(ClusteringOptionError, match=f"{name}.*num_speakers=2"):
        cluster_windows(two_speakers(), options, num_speakers=2)
    assert cluster_windows(two_speakers(), options).num_speakers >= 1   # estimated: used
    # given per call, before the recording is read or embedded
    diarizer = Diarizer(never_called, DiarizationOptions.from_settings(vad="energy",
                                                                       **settings))
    with pytest.raises(ClusteringOptionError, match=f"{name}.*num_speakers=3"):
        diarizer.diarize(np.zeros(SR, np.float32), SR, num_speakers=3)


@pytest.mark.parametrize("name, value, method", REFINEMENTS)
def test_speaker_counts_refuse_the_refinements_before_any_work(tmp_path, name, value, method):
    wav_scp, rttm = tmp_path / "wav.scp", str(tmp_path / "sys.rttm")
    wav_scp.write_text(f"talk {tmp_path}/talk.wav\n")
    diarizer = Diarizer(never_called, DiarizationOptions.from_settings(
        vad="energy", cluster_method=method, **{name: value}))
    with pytest.raises(ClusteringOptionError, match=f"{name}.*speaker_counts"):
        diarize_wav_scp(diarizer, str(wav_scp), rttm, show_progress=False,
                        speaker_counts={"talk": 2})
    assert not os.path.exists(rttm)


def test_speaker_counts_and_num_speakers_are_not_given_together(tmp_path):
    wav_scp, rttm = tmp_path / "wav.scp", str(tmp_path / "sys.rttm")
    wav_scp.write_text(f"talk {tmp_path}/talk.wav\n")
    diarizer = Diarizer(never_called, DiarizationOptions(vad="energy"))
    with pytest.raises(ClusteringOptionError, match="num_speakers.*speaker_counts.*not both"):
        diarize_wav_scp(diarizer, str(wav_scp), rttm, show_progress=False,
                        speaker_counts={"talk": 2}, num_speakers=3)


def test_cli_refuses_a_refinement_with_num_speakers_before_loading(tmp_path, capsys):
    from wespeaker_py.cli.main import main
    missing_model = str(tmp_path / "no_model")   # never loaded: the checks come first
    for flags, named in ((["--min_cluster_size", "3"], "min_cluster_size (3) shapes"),
                         (["--merge_threshold", "0.8"], "merge_threshold (0.8) shapes"),
                         (["--ahc_threshold", "0.4"], "ahc_threshold (0.4) is where")):
        with pytest.raises(SystemExit) as stop:
            main(["diarize", "--model", missing_model, "--num_speakers", "2", *flags,
                  str(tmp_path / "a.wav")])
        assert stop.value.code == 2 and named in capsys.readouterr().err, flags


def test_cli_refuses_a_refinement_with_reco2num_spk_before_loading(tmp_path, capsys):
    from wespeaker_py.cli.main import main
    (tmp_path / "wav.scp").write_text("a a.wav\n")
    (tmp_path / "reco2num_spk").write_text("a 2\n")
    with pytest.raises(SystemExit) as stop:
        main(["diarize", "--model", str(tmp_path / "no_model"), "--wav_scp",
              str(tmp_path / "wav.scp"), "--reco2num_spk", str(tmp_path / "reco2num_spk"),
              "--output", str(tmp_path / "out.rttm"), "--merge_threshold", "0.8"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "merge_threshold (0.8) shapes" in err
    assert "--reco2num_spk" in err and "no_model" not in err   # refused before the load


@pytest.mark.parametrize("bound", [{"min_speakers": 1}, {"max_speakers": 10},
                                   {"max_speakers": 2}])
def test_speaker_bounds_given_with_a_count_are_refused_even_at_their_defaults(bound):
    (name, value), = bound.items()
    with pytest.raises(ClusteringOptionError, match=f"{name} \\({value}\\) bounds an "
                                                    f"estimated.*num_speakers=3"):
        DiarizationOptions.from_settings(num_speakers=3, **bound)
    with pytest.raises(ClusteringOptionError, match=f"{name} \\({value}\\) bounds"):
        cluster_windows(two_speakers(), ClusterOptions(), num_speakers=3, **bound)
    assert cluster_windows(two_speakers(), ClusterOptions(), num_speakers=3).num_speakers == 3


def test_options_check_a_given_count_against_their_refinements_and_a_calls_bounds():
    # one check for the command line (before the model loads) and the list run
    given = "--reco2num_spk counts"
    with pytest.raises(ClusteringOptionError, match="^merge_threshold \\(0.8\\) shapes an "
                                                    "estimated.*--reco2num_spk counts"):
        DiarizationOptions(merge_threshold=0.8).check_count_given(given)
    with pytest.raises(ClusteringOptionError, match="^min_speakers \\(2\\) bounds.*--reco2num"):
        DiarizationOptions().check_count_given(given, min_speakers=2)
    with pytest.raises(ClusteringOptionError, match="^max_speakers \\(4\\) bounds"):
        DiarizationOptions(max_speakers=4).check_count_given(given, max_speakers=None)
    DiarizationOptions().check_count_given(given)   # nothing that a given count leaves idle


@pytest.mark.parametrize("name, value", [("num_speakers", "3"), ("num_speakers", 2.0),
                                         ("max_speakers", True), ("min_speakers", "1")])
def test_a_count_that_is_not_a_whole_number_is_named(name, value):
    wanted = f"{name} must be a whole number or None, got {type(value).__name__} {value!r}"
    with pytest.raises(ClusteringOptionError, match=re.escape(wanted)):
        DiarizationOptions.from_settings(**{name: value})
    with pytest.raises(ClusteringOptionError, match=re.escape(wanted)):   # given per call
        cluster_windows(two_speakers(), ClusterOptions(), **{name: value})
    assert DiarizationOptions.from_settings(num_speakers=np.int64(2)).num_speakers == 2


@pytest.mark.parametrize("settings, wanted", [
    (dict(vad="webrtc"), "vad must be one of ['silero', 'energy'], got 'webrtc'"),
    (dict(vad_threshold=1.0), "vad_threshold must be above 0 and below 1, got 1.0"),
    (dict(min_speech=-0.5), "min_speech must be at least 0 seconds, got -0.5"),
    (dict(dither=float("nan")), "dither must be a number, got NaN"),
    (dict(window="1.5"), "window must be a number, got str '1.5'"),
    (dict(merge_threshold=-1.5), "merge_threshold must be at least -1 and at most 1 (a cosine), "
                                 "got -1.5"),
    (dict(cluster_method="agglomerative", ahc_threshold=2.0),
     "ahc_threshold must be above 0 and below 2 (a cosine distance), got 2.0"),
])
def test_a_setting_its_declaration_refuses_is_named_with_what_it_takes(settings, wanted):
    with pytest.raises(ClusteringOptionError, match=f"^{re.escape(wanted)}$"):
        DiarizationOptions.from_settings(**settings)


def test_the_clusterings_ranges_hold_for_its_own_options():
    with pytest.raises(ClusteringOptionError, match="^merge_threshold must be at least -1 and "
                                                    "at most 1"):
        cluster_windows(two_speakers(), ClusterOptions("spectral", merge_threshold=1.2))
    with pytest.raises(ClusteringOptionError, match="^edge_weights must be one of"):
        cluster_windows(two_speakers(), ClusterOptions("spectral", edge_weights="gauss"))


def test_a_list_run_checks_its_counts_and_its_output_before_any_work(tmp_path):
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"a {tmp_path}/a.wav\nb {tmp_path}/b.wav\n")
    diarizer = Diarizer(never_called, DiarizationOptions(vad="energy"))
    rttm = str(tmp_path / "out.rttm")
    with pytest.raises(ClusteringOptionError, match="the speaker count of b: num_speakers must "
                                                    "be at least 1, got 0"):
        diarize_wav_scp(diarizer, str(wav_scp), rttm, speaker_counts={"a": 3, "b": 0})
    with pytest.raises(ClusteringOptionError, match="max_speakers \\(4\\) bounds"):
        diarize_wav_scp(diarizer, str(wav_scp), rttm, speaker_counts={"a": 3, "b": 2},
                        max_speakers=4)
    # bounds in the options count too, also beside a per-call None (diarize_many's default)
    # before any recording (an error raised on one would name it first)
    bounded = Diarizer(never_called, DiarizationOptions(vad="energy", max_speakers=4))
    with pytest.raises(ClusteringOptionError, match="^max_speakers \\(4\\) bounds"):
        diarize_wav_scp(bounded, str(wav_scp), rttm, speaker_counts={"a": 3, "b": 2},
                        max_speakers=None)
    before = wav_scp.read_bytes()
    with pytest.raises(WespeakerError, match="the output RTTM .*wav.scp is the wav.scp"):
        diarize_wav_scp(diarizer, str(wav_scp), str(wav_scp))
    assert wav_scp.read_bytes() == before
    with pytest.raises(WespeakerError, match="recordings must be the path of a wav.scp file or "
                                             "a {recording: audio path} mapping, got a list"):
        diarize_wav_scp(diarizer, [str(tmp_path / "a.wav")], rttm)
    assert not os.path.exists(rttm)


def test_min_speakers_above_the_default_max_says_to_raise_max_speakers():
    with pytest.raises(ClusteringOptionError, match=r"^min_speakers=12 is above max_speakers "
                       r"\(default 10\): raise max_speakers \(--max_speakers\) to 12"):
        check_cluster_options("spectral", None, min_speakers=12)
    with pytest.raises(ClusteringOptionError, match="got 12, 11"):
        check_cluster_options("spectral", None, min_speakers=12, max_speakers=11)


def hide_umap(monkeypatch):
    """Make umap-learn look uninstalled, whether it is or not."""
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "umap"
                        else real_find_spec(name, *args))


def test_umap_hdbscan_without_umap_learn_names_the_extra_before_any_work(monkeypatch, tmp_path,
                                                                         capsys):
    from wespeaker_py.cli.main import main
    from wespeaker_py.diarization.density import umap_hdbscan_labels
    hide_umap(monkeypatch)
    wanted = "'umap-hdbscan' needs the package\\(s\\) umap-learn.*wespeaker_py\\[diar-umap\\]"
    with pytest.raises(MissingPackagesError, match=wanted):
        DiarizationOptions.from_settings(cluster_method="umap-hdbscan")
    with pytest.raises(MissingPackagesError, match=wanted):
        Diarizer(never_called, DiarizationOptions(vad="energy", cluster_method="umap-hdbscan"))
    with pytest.raises(MissingPackagesError, match=wanted):     # called directly
        umap_hdbscan_labels(two_speakers())
    with pytest.raises(SystemExit) as stop:
        main(["diarize", "--model", str(tmp_path / "no_model"), "--cluster_method",
              "umap-hdbscan", str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "diar-umap" in err and "no_model" not in err


@pytest.mark.parametrize("settings, wanted", [
    (dict(shift=0.001), "shift must be at least 0.01 seconds"),
    (dict(window=0.004, shift=0.004), "window must be at least 0.01 seconds, got 0.004"),
    (dict(window=float("inf"), shift=float("inf")), "window must be finite"),
    (dict(window=float("nan")), "window must be a number, got NaN"),
    (dict(shift=0.006, window=0.5), "shift must be at least 0.01"),
    (dict(shift=0.015), "shift must be a multiple of 0.01 seconds"),
    (dict(window=1.505), "window must be a multiple of 0.01 seconds"),
    (dict(resolution=float("inf")), "resolution must be at least 0.001 seconds.*at most shift"),
    (dict(resolution=0.0005), "resolution must be at least 0.001"),
    (dict(resolution=1.0, shift=0.75), "resolution must be .*at most shift \\(0.75"),
])
def test_windows_and_frames_the_code_cannot_use_are_refused(settings, wanted):
    with pytest.raises(ClusteringOptionError, match=wanted):
        DiarizationOptions.from_settings(**settings)


def test_windows_and_frames_on_their_grids_are_taken():
    for settings in (dict(window=0.2, shift=0.05), dict(window=0.01, shift=0.01),
                     dict(window=1.0, shift=0.5, resolution=0.5), dict(resolution=0.0333),
                     dict(resolution=0.001)):
        DiarizationOptions.from_settings(**settings)


def test_cli_refuses_an_off_grid_shift_before_loading(tmp_path, capsys):
    from wespeaker_py.cli.main import main
    with pytest.raises(SystemExit) as stop:
        main(["diarize", "--model", str(tmp_path / "no_model"), "--shift", "0.015",
              str(tmp_path / "a.wav")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "shift must be a multiple of 0.01" in err


def test_the_options_import_no_numpy_and_keep_the_window_lda_names():
    # the command line builds its diarize flags from this module before anything heavy loads
    script = ("import sys\n"
              "from wespeaker_py.diarization import options\n"
              "light = 'numpy' not in sys.modules\n"
              "from wespeaker_py.io import layout\n"
              "print(light, options.WINDOW_LDA_NAME == layout.WINDOW_LDA_NAME,\n"
              "      options.NARROWBAND_WINDOW_LDA == layout.NARROWBAND_WINDOW_LDA,\n"
              "      options.window_lda_name(8000),\n"
              "      options.narrowband_rate_of('window_lda_8000hz.npz'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "window_lda_8000hz.npz", "8000"]
