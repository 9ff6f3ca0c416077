"""The diarization command, API method, scorer and recipe (tiny random model: plumbing only)."""
import os
from dataclasses import fields

import numpy as np
import pytest
import soundfile as sf

from recipe_helpers import REPO, run_script
from tests.inference_helpers import make_experiment
from wespeaker_py.diarization import read_rttm, write_rttm
from wespeaker_py.diarization.turns import Turn

RECIPE = os.path.join(REPO, "examples", "diarization")
CORPUS = os.path.join(REPO, "examples", "mini", "data", "librispeech_tc100")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tiny_exp"))
    make_experiment(root, bare=True)
    return root


def cli(capsys, *args):
    """Run ``wespeaker-py ARGS`` in this process: (exit status, stdout, stderr)."""
    from wespeaker_py.cli.main import main
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def test_recipe_on_synthetic_conversations(tmp_path, tiny_model):
    data, exp = str(tmp_path / "data"), str(tmp_path / "exp")
    run_script(RECIPE, "run.sh", "--model", tiny_model, "--num_conversations", "2",
               "--conversation_seconds", "15", "--max_conv_speakers", "3", "--vad", "energy",
               "--data", data, "--exp", exp, "--stop_stage", "4")
    reference, system = read_rttm(f"{data}/ref.rttm"), read_rttm(f"{exp}/sys.rttm")
    assert set(system) == set(reference) and len(reference) == 2
    table = open(f"{exp}/der.md").read()
    rows = [line for line in table.splitlines() if line.startswith("| all (2)")]
    assert len(rows) == 4  # collars 0 / 0.25, overlap scored / excluded
    ders = [float(row.split("|")[7]) for row in rows]
    assert all(0 <= der < 200 for der in ders)
    assert sorted(os.listdir(f"{exp}/plots")) == sorted(f"{key}.png" for key in reference)
    # stage 4: one row per method and the true-count reference row, which is always right
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in open(f"{exp}/methods.md").read().splitlines()
            if line.startswith("| ") and not line.startswith("| system")}
    assert list(rows) == ["spectral", "spectral-norm", "nme-sc", "agglomerative",
                          "spectral-norm+true_count"]
    assert rows["spectral-norm+true_count"][3].strip() == "100% (2/2)"
    # the default method's row scores what stage 2 (the same settings) wrote
    assert float(rows["spectral-norm"][0]) == pytest.approx(ders[0], abs=0.01)
    # the same set again from --data_dir (the user-data path of stage 1)
    run_script(RECIPE, "run.sh", "--stop_stage", "1", "--data_dir", data,
               "--data", str(tmp_path / "copy"))
    assert open(tmp_path / "copy" / "wav.scp").read() == open(f"{data}/wav.scp").read()


def test_recipe_rebuilds_a_synthetic_set_made_with_other_settings(tmp_path):
    data = str(tmp_path / "data")
    stage1 = ("--stop_stage", "1", "--conversation_seconds", "10", "--data", data)
    run_script(RECIPE, "run.sh", *stage1, "--num_conversations", "2")
    first = open(f"{data}/wav.scp").read()
    again = run_script(RECIPE, "run.sh", *stage1, "--num_conversations", "2")
    assert "exists" in again.stdout and open(f"{data}/wav.scp").read() == first
    changed = run_script(RECIPE, "run.sh", *stage1, "--num_conversations", "3")
    assert "built with other settings (" in changed.stdout and "count=2" in changed.stdout
    assert len(read_rttm(f"{data}/ref.rttm")) == 3
    assert len(open(f"{data}/wav.scp").read().splitlines()) == 3
    # a set the user put there (no settings file beside it) is kept whatever the flags
    os.remove(f"{data}/synthetic_settings")
    kept = run_script(RECIPE, "run.sh", *stage1, "--num_conversations", "2")
    assert "kept as given" in kept.stdout and len(read_rttm(f"{data}/ref.rttm")) == 3


def test_prepare_data_names_the_missing_reference_ref_rttm(tmp_path):
    # it named the fallback alone: ".../rttm does not exist"
    given = tmp_path / "set"
    given.mkdir()
    (given / "wav.scp").write_text("rec1 /data/rec1.wav\n")
    result = run_script(RECIPE, "local/prepare_data.sh", "--data_dir", str(given),
                        "--data", str(tmp_path / "data"), check=False)
    assert result.returncode != 0
    assert f"{given}/ref.rttm does not exist (nor its fallback {given}/rttm)" in result.stderr


def test_score_diarization_compares_systems(tmp_path, capsys):
    from wespeaker_py.bin.score_diarization import main
    ref = {"a": [Turn(0, 2, "x"), Turn(2, 4, "y")], "b": [Turn(0, 4, "x")]}
    systems = {"right": ref,
               "merged": {"a": [Turn(0, 4, "s")], "b": [Turn(0, 4, "s")]},
               "split": {"a": [Turn(0, 2, "s"), Turn(2, 4, "t")],
                         "b": [Turn(0, 1, "s"), Turn(1, 4, "t")]}}
    write_rttm(str(tmp_path / "ref.rttm"), ref)
    for name, turns in systems.items():
        write_rttm(str(tmp_path / f"{name}.rttm"), turns)
    args = ["--ref_rttm", str(tmp_path / "ref.rttm"), "--collars", "0", "--systems"]
    with pytest.raises(SystemExit) as stop:
        main(args + [f"{name}={tmp_path}/{name}.rttm" for name in systems])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:-1]]
            for line in out.splitlines()[2:]}
    assert stop.value.code == 0
    # DER: merged loses y's 2 s of 8; split gives 1 s of b to t.
    # JER: the mean over the 3 reference speakers (a's x and y, b's x) of 1 - shared / union:
    #   merged: a's x paired with s [0,4]: 1 - 2/4 = 0.5; a's y unpaired: 1; b's x = s: 0
    #           -> (0.5 + 1 + 0) / 3 = 50.00 %
    #   split:  a's x = s, a's y = t: 0, 0; b's x [0,4] paired with t [1,4]: 1 - 3/4 = 0.25
    #           -> (0 + 0 + 0.25) / 3 = 8.33 %
    assert rows == {"right": ["0.00", "0.00", "100% (2/2)", "0", "0"],
                    "merged": ["25.00", "50.00", "50% (1/2)", "1", "0"],
                    "split": ["12.50", "8.33", "50% (1/2)", "0", "1"]}
    with pytest.raises(SystemExit) as stop:
        main(args + ["no_equals_sign"])
    assert stop.value.code == 2 and "NAME=RTTM" in capsys.readouterr().err


def test_score_diarization_scores_the_references_recordings(tmp_path, capsys):
    from wespeaker_py.bin.score_diarization import main
    ref = {"recA": [Turn(0, 10, "A")], "recB": [Turn(0, 10, "B")]}
    sys = {"recA": [Turn(0, 10, "x")], "recC": [Turn(0, 5, "x")], "extra": [Turn(0, 100, "x")]}
    write_rttm(str(tmp_path / "ref.rttm"), ref)
    write_rttm(str(tmp_path / "sys.rttm"), sys)
    # recB has no scoring region: scored from its first to last turn; recC has one but
    # no reference speech (false alarm, no shares); extra is only in the system output
    (tmp_path / "all.uem").write_text("recA 1 0.000 10.000\nrecC 1 0.000 5.000\n")
    with pytest.raises(SystemExit) as stop:
        main(["--ref_rttm", str(tmp_path / "ref.rttm"), "--sys_rttm", str(tmp_path / "sys.rttm"),
              "--uem", str(tmp_path / "all.uem"), "--collars", "0", "--per_file"])
    out, err = capsys.readouterr()
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[4:-1]]
            for line in out.splitlines()[2:6]}
    assert stop.value.code == 0
    assert rows == {"recA": ["0.00", "0.00", "0.00", "0.00", "0.00"],
                    "recB": ["100.00", "0.00", "0.00", "100.00", "100.00"],
                    "recC": ["n/a", "n/a", "n/a", "100.00", "100.00"],
                    "all (3)": ["50.00", "25.00", "0.00", "75.00", "50.00"]}
    assert "does not name 1 recordings" in err and "recB" in err
    assert "1 recordings are not in" in err and "extra" in err


def test_recipe_prepares_voxconverse_style_folders(tmp_path):
    audio, rttms, uems = tmp_path / "audio", tmp_path / "rttm", tmp_path / "uem"
    audio.mkdir(), rttms.mkdir(), uems.mkdir()
    # AMI's channels: the mix is preferred to the far-field array that sorts first;
    # a plain <id>.wav (VoxConverse) to anything else
    files = {"abjxc": ["abjxc.Array1-01.wav", "abjxc.Headset-0.wav", "abjxc.Mix-Headset.wav"],
             "afjiv": ["afjiv.Array1-01.wav", "afjiv.Mix-Headset.wav", "afjiv.wav"]}
    for rec, names in files.items():
        for name in names:
            sf.write(audio / name, np.zeros(1600, np.float32), 16000)
        write_rttm(str(rttms / f"{rec}.rttm"), {rec: [Turn(0.0, 0.05, "A")]})
    (uems / "abjxc.uem").write_text("abjxc 1 0.000 0.100\n")
    write_rttm(str(rttms / "noaudio.rttm"), {"noaudio": [Turn(0.0, 1.0, "A")]})
    result = run_script(RECIPE, "run.sh", "--stop_stage", "1", "--audio_dir", str(audio),
                        "--rttm_dir", str(rttms), "--uem_dir", str(uems),
                        "--data", str(tmp_path / "set"))
    assert "no audio for noaudio" in result.stderr
    assert "afjiv is scored from its first to last turn" in result.stderr
    assert open(tmp_path / "set" / "all.uem").read() == "abjxc 1 0.000 0.100\n"
    lines = open(tmp_path / "set" / "wav.scp").read().split("\n")
    assert [line.split() for line in lines if line] == [
        ["abjxc", str(audio / "abjxc.Mix-Headset.wav")], ["afjiv", str(audio / "afjiv.wav")]]
    assert "3 audio files for abjxc" in result.stderr
    assert set(read_rttm(str(tmp_path / "set" / "ref.rttm"))) == {"abjxc", "afjiv"}


def test_recipe_keeps_only_the_references_with_audio(tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    sf.write(given / "rec1.wav", np.zeros(1600, np.float32), 16000)
    (given / "wav.scp").write_text(f"rec1 {given}/rec1.wav\n")
    write_rttm(str(given / "ref.rttm"),
               {"rec1": [Turn(0.0, 0.05, "A")], "rec2": [Turn(0.0, 500.0, "B")]})
    (given / "all.uem").write_text("rec1 1 0.000 0.100\nrec2 1 0.000 500.000\n")
    result = run_script(RECIPE, "run.sh", "--stop_stage", "1", "--data_dir", str(given),
                        "--data", str(tmp_path / "set"))
    # rec2 has no audio: left out (kept, it would be scored as 500 s of missed speech)
    assert "1 recordings of" in result.stdout and "no audio in wav.scp" in result.stdout
    assert list(read_rttm(str(tmp_path / "set" / "ref.rttm"))) == ["rec1"]
    assert open(tmp_path / "set" / "all.uem").read() == "rec1 1 0.000 0.100\n"


def test_recipe_without_model_says_what_to_do(tmp_path):
    result = run_script(RECIPE, "run.sh", "--stage", "2", "--data", str(tmp_path), check=False)
    assert result.returncode != 0 and "--model" in result.stderr


def test_cli_diarize_one_file_and_silence(tmp_path, tiny_model, capsys):
    from wespeaker_py.diarization.synthetic import SpeakerCorpus, build_conversation
    corpus = SpeakerCorpus(CORPUS, os.path.join(CORPUS, "test_spk"))
    audio, _ = build_conversation(corpus, corpus.speakers[:2], 10.0,
                                  np.random.default_rng(0))
    sf.write(tmp_path / "talk.wav", audio, 16000)
    status, out, err = cli(capsys, "diarize", "--model", tiny_model, "--vad", "energy",
                           "--num_speakers", "2", str(tmp_path / "talk.wav"),
                           "--plot", str(tmp_path / "talk.png"))
    out = out.splitlines()
    assert status == 0 and out and all(line.startswith("SPEAKER talk 1 ") for line in out)
    assert {line.split()[7] for line in out} == {"spk0", "spk1"}
    assert f"time line in {tmp_path}/talk.png" in err
    assert (tmp_path / "talk.png").read_bytes()[:4] == b"\x89PNG"
    status, _, err = cli(capsys, "diarize", "--model", tiny_model, "--wav_scp", "w.scp",
                         "-o", "s.rttm", "--plot", "p.png")
    assert status == 2 and "--plot draws one audio file" in err
    # a file name with spaces: RTTM ids cannot hold them, so they become _ (and the log
    # says so) instead of a failure after all the work
    sf.write(tmp_path / "my  team meeting.wav", audio, 16000)
    status, out, err = cli(capsys, "diarize", "--model", tiny_model, "--vad", "energy",
                           "--num_speakers", "2", str(tmp_path / "my  team meeting.wav"),
                           "-o", str(tmp_path / "meeting.rttm"))
    assert status == 0 and "recording id 'my_team_meeting'" in err
    assert list(read_rttm(str(tmp_path / "meeting.rttm"))) == ["my_team_meeting"]

    quiet = 1e-4 * np.random.default_rng(0).standard_normal(16000)
    sf.write(tmp_path / "quiet.wav", quiet.astype(np.float32), 16000, subtype="FLOAT")
    status, _, err = cli(capsys, "diarize", "--model", tiny_model, "--vad", "energy",
                         str(tmp_path / "quiet.wav"), "-o", str(tmp_path / "quiet.rttm"))
    assert status == 0 and "no speech found" in err
    assert os.path.getsize(tmp_path / "quiet.rttm") == 0
    # digital silence (a muted recording) has no speech either, and the log says why
    sf.write(tmp_path / "zeros.wav", np.zeros(16000, np.int16), 16000)
    status, _, err = cli(capsys, "diarize", "--model", tiny_model, "--vad", "energy",
                         str(tmp_path / "zeros.wav"), "-o", str(tmp_path / "zeros.rttm"))
    assert status == 0 and f"{tmp_path}/zeros.wav is silent" in err and "no speech" in err
    assert os.path.getsize(tmp_path / "zeros.rttm") == 0

    status, _, err = cli(capsys, "diarize", "--model", tiny_model, "--min_speakers", "3",
                         "--max_speakers", "2", "--vad", "energy", str(tmp_path / "talk.wav"))
    assert status == 2 and "min_speakers" in err
    status, _, err = cli(capsys, "diarize", "--model", tiny_model, str(tmp_path / "none.wav"))
    assert status == 2 and "none.wav does not exist" in err


def test_api_diarize_accepts_arrays(tiny_model):
    from wespeaker_py import load_model
    model = load_model(tiny_model, device="cpu")
    rng = np.random.default_rng(0)
    t = np.arange(3 * 8000) / 8000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) * (1 + rng.standard_normal(t.size)),
                       np.zeros_like(t)]).astype(np.float32)   # [channels, samples] at 8 kHz
    result = model.diarize(stereo, sample_rate=8000, vad="energy")
    assert result.num_speakers >= 1 and result.turns
    # 3 s of 8 kHz audio: the last turn ends at 3 s (1.5 s if the rate were taken as 16 kHz)
    assert result.turns[-1].end == pytest.approx(3.0, abs=0.1)


def test_api_diarize_many_writes_what_diarize_gives_per_recording(tmp_path, tiny_model):
    from wespeaker_py import load_model
    from wespeaker_py.diarization.synthetic import SpeakerCorpus, build_conversation
    corpus = SpeakerCorpus(CORPUS, os.path.join(CORPUS, "test_spk"))
    audio, _ = build_conversation(corpus, corpus.speakers[:2], 8.0, np.random.default_rng(1))
    sf.write(tmp_path / "talk.wav", audio, 16000)
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"talk {tmp_path}/talk.wav\ngone {tmp_path}/gone.wav\n")
    model = load_model(tiny_model, device="cpu")
    options = dict(vad="energy", num_speakers=2)
    summary = model.diarize_many(str(wav_scp), str(tmp_path / "sys.rttm"), progress=False,
                                 **options)
    assert summary.diarized == 1 and list(summary.failed) == ["gone"]
    single = model.diarize(str(tmp_path / "talk.wav"), **options)
    written = read_rttm(str(tmp_path / "sys.rttm"))["talk"]
    assert [turn.speaker for turn in written] == [turn.speaker for turn in single.turns]
    np.testing.assert_allclose([(turn.start, turn.end) for turn in written],
                               [(turn.start, turn.end) for turn in single.turns],
                               atol=1e-3)   # RTTM keeps 3 decimals


def test_cli_diarize_flags_match_the_options_and_reach_the_diarizer(
        tmp_path, tiny_model, capsys):
    from wespeaker_py import load_model
    from wespeaker_py.cli.main import build_parser
    from wespeaker_py.diarization import DiarizationOptions
    from wespeaker_py.diarization.synthetic import SpeakerCorpus, build_conversation
    parsed = build_parser().parse_args(["diarize", "--model", "m", "a.wav"])
    defaults = DiarizationOptions()
    for item in fields(DiarizationOptions):   # cmd_diarize reads each from its flag
        assert getattr(parsed, item.name) == getattr(defaults, item.name), item.name

    corpus = SpeakerCorpus(CORPUS, os.path.join(CORPUS, "test_spk"))
    audio, _ = build_conversation(corpus, corpus.speakers[:2], 12.0, np.random.default_rng(2))
    sf.write(tmp_path / "talk.wav", audio, 16000)
    settings = dict(window=1.0, shift=0.5, resolution=0.25, cluster_method="agglomerative",
                    ahc_threshold=0.3, min_cluster_size=2, merge_threshold=0.9,
                    vad_threshold=0.4, min_speech=0.3, min_silence=0.2)
    flags = [part for name, value in settings.items() for part in (f"--{name}", str(value))]
    status, out, _ = cli(capsys, "diarize", "--model", tiny_model, *flags,
                         str(tmp_path / "talk.wav"))
    model = load_model(tiny_model, device="cpu")
    expected = model.diarize(str(tmp_path / "talk.wav"), **settings).turns
    default = model.diarize(str(tmp_path / "talk.wav")).turns
    turns = [line.split() for line in out.splitlines()]
    assert status == 0
    assert [(float(t[3]), t[7]) for t in turns] == [(round(e.start, 3), e.speaker)
                                                    for e in expected]
    assert [(t.start, t.end) for t in expected] != [(t.start, t.end) for t in default]
    # on 0.25 s frames every boundary not at a speech edge is on the frame grid
    inner = [a.end for a, e in zip(expected, expected[1:]) if abs(a.end - e.start) < 1e-9]
    assert all(abs(x / 0.25 - round(x / 0.25)) < 1e-6 for x in inner)
    # the Silero flags reach the VAD: no speech survives a 60 s minimum
    status, _, err = cli(capsys, "diarize", "--model", tiny_model, "--min_speech", "60",
                         str(tmp_path / "talk.wav"))
    assert status == 0 and "no speech found" in err


def test_cli_diarize_checks_settings_before_loading(tmp_path, capsys):
    missing_model = str(tmp_path / "no_model")   # never loaded: the checks come first
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    for flags, named in ((["--shift", "2"], "shift must be"),
                         (["--vad_threshold", "0"], "vad_threshold must be"),
                         (["--merge_threshold", "3"], "merge_threshold must be"),
                         (["--cluster_method", "kmeans"], "kmeans"),
                         (["--reco2num_spk", "counts"], "--reco2num_spk goes with --wav_scp")):
        status, _, err = cli(capsys, "diarize", "--model", missing_model, *flags,
                             str(tmp_path / "a.wav"))
        assert status == 2 and named in err, (flags, err)


def test_cli_diarize_reco2num_spk_from_reference_rttm(tmp_path, tiny_model, capsys):
    data = str(tmp_path / "data")
    run_script(RECIPE, "run.sh", "--stop_stage", "1", "--num_conversations", "2",
               "--conversation_seconds", "15", "--min_conv_speakers", "2",
               "--max_conv_speakers", "3", "--data", data)
    status, _, _ = cli(capsys, "diarize", "--model", tiny_model, "--vad", "energy",
                       "--wav_scp", f"{data}/wav.scp", "--reco2num_spk", f"{data}/ref.rttm",
                       "-o", str(tmp_path / "sys.rttm"))
    reference = read_rttm(f"{data}/ref.rttm")
    system = read_rttm(str(tmp_path / "sys.rttm"))
    assert status == 0
    assert ({key: len({t.speaker for t in turns}) for key, turns in system.items()}
            == {key: len({t.speaker for t in turns}) for key, turns in reference.items()})
