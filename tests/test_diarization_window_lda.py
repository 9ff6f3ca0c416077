"""The window LDA: fitting, its file, the diarizer's projection, the API and the command."""
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr

from api_helpers import MINI_CORPUS
from tests.inference_helpers import make_experiment
from wespeaker_py.diarization.options import DiarizationOptions
from wespeaker_py.diarization.pipeline import Diarizer
from wespeaker_py.diarization.projection import WindowLDA, WindowLDAError, fit_window_lda
from wespeaker_py.errors import WespeakerError
from wespeaker_py.runtime.identity import ModelMismatchError


def speakers_in_noise(num_speakers=6, per_speaker=40, dim=24, seed=0):
    """Speakers that differ in 3 directions, hidden under larger shared noise in all of them."""
    rng = np.random.default_rng(seed)
    offsets = np.zeros((num_speakers, dim))
    offsets[:, :3] = rng.standard_normal((num_speakers, 3))
    noise_scale = np.full(dim, 0.3)
    noise_scale[3:] = 2.0                          # nuisance: larger than the speaker offsets
    base = 5.0 * np.ones(dim)                      # embeddings share a direction, as real ones do
    points = [base + offsets[s] + noise_scale * rng.standard_normal((per_speaker, dim))
              for s in range(num_speakers)]
    labels = np.repeat([f"spk{s}" for s in range(num_speakers)], per_speaker)
    return np.concatenate(points), labels


def separation(points, labels):
    """Between-speaker over within-speaker spread of unit rows (higher: easier to cluster)."""
    unit = points / np.linalg.norm(points, axis=1, keepdims=True)
    centroids = {name: unit[labels == name].mean(axis=0) for name in np.unique(labels)}
    within = np.mean([np.sum((row - centroids[name]) ** 2) for row, name in zip(unit, labels)])
    overall = unit.mean(axis=0)
    between = np.mean([np.sum((c - overall) ** 2) for c in centroids.values()])
    return between / within


def test_lda_keeps_the_directions_that_tell_speakers_apart():
    train, train_labels = speakers_in_noise(seed=1)
    lda = fit_window_lda(train, train_labels, dim=3, identity="abc")
    assert (lda.input_dim, lda.output_dim) == (24, 3)
    assert (lda.num_speakers, lda.num_windows, lda.identity) == (6, 240, "abc")
    test, test_labels = speakers_in_noise(seed=2)     # other speakers, same kind of voices
    projected = lda.project(test)
    assert projected.shape == (240, 3)
    assert separation(projected, test_labels) > 3 * separation(test, test_labels)


def test_dim_is_capped_and_bad_training_data_is_refused(caplog):
    points, labels = speakers_in_noise(num_speakers=4)
    with caplog.at_level(logging.WARNING):
        assert fit_window_lda(points, labels, dim=32).output_dim == 3   # speakers - 1
    assert "learnt from 4 speakers (24-dim embeddings) keeps 3 dimensions, not the 32" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fit_window_lda(points, labels, dim=3)
    assert caplog.text == ""
    with pytest.raises(WindowLDAError, match="at least two speakers"):
        fit_window_lda(points[:10], ["one"] * 10)
    with pytest.raises(WindowLDAError, match="more windows than speakers"):
        fit_window_lda(points[:3], ["a", "b", "c"])
    with pytest.raises(WindowLDAError, match="3 speaker labels"):
        fit_window_lda(points, labels[:3])
    with pytest.raises(WindowLDAError, match="takes 24-dim"):
        fit_window_lda(points, labels).project(np.ones((5, 8)))


def test_file_round_trip_and_bad_files_name_themselves(tmp_path):
    points, labels = speakers_in_noise()
    lda = fit_window_lda(points, labels, dim=4, identity="deadbeef")
    path = str(tmp_path / "window_lda.npz")
    lda.save(path)
    again = WindowLDA.load(path)
    assert again.identity == "deadbeef" and again.describe() == lda.describe()
    np.testing.assert_array_equal(again.project(points), lda.project(points))
    with pytest.raises(WindowLDAError, match="missing.npz does not exist"):
        WindowLDA.load(str(tmp_path / "missing.npz"))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz file")
    with pytest.raises(WindowLDAError, match="broken.npz: not a window LDA written by"):
        WindowLDA.load(str(broken))
    # a file from before heard_rate was recorded counts as learnt at the model's rate
    np.savez(tmp_path / "older.npz", mean=lda.mean, matrix=lda.matrix, identity=np.array("x"),
             num_speakers=6, num_windows=240)
    assert WindowLDA.load(str(tmp_path / "older.npz")).heard_rate == 0
    np.savez(tmp_path / "odd.npz", mean=np.zeros(3), matrix=np.zeros((4, 2)),
             identity=np.array(""), num_speakers=2, num_windows=5)
    with pytest.raises(WindowLDAError, match="odd.npz: mean"):
        WindowLDA.load(str(tmp_path / "odd.npz"))


def test_a_file_that_is_no_window_lda_says_so_without_numpys_pickle_advice(tmp_path):
    # a .wav was refused with numpy's advice to load it unsafely with allow_pickle=
    wav = tmp_path / "some.wav"
    sf.write(str(wav), np.zeros(1600, dtype=np.float32), 16000)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    partial = tmp_path / "partial.npz"
    np.savez(partial, mean=np.zeros(3))
    cases = [(wav, "not an .npz archive"), (single, "a single array, not an .npz archive"),
             (partial, "no matrix, identity, num_speakers, num_windows array(s)")]
    for path, why in cases:
        with pytest.raises(WindowLDAError) as refused:
            WindowLDA.load(str(path))
        assert str(refused.value) == (f"{path}: not a window LDA written by "
                                      f"`wespeaker-py window-lda` ({why})")


def random_embedder(rng, dim=16):
    """An EmbedFunction giving every window a random ``dim``-dim embedding."""
    return lambda pieces: rng.standard_normal((len(pieces), dim))


def test_the_diarizer_clusters_the_projected_windows():
    rng = np.random.default_rng(0)
    seen = []
    embed = random_embedder(rng)      # no speaker structure at all in the model's embeddings
    centres = np.array([[10.0, 0.0, 0.0, 0.0], [0.0, 10.0, 0.0, 0.0]])

    def projection(embeddings):
        """The first half of the windows onto one centre, the rest onto another far away."""
        seen.append(embeddings.shape)
        side = (np.arange(len(embeddings)) >= len(embeddings) // 2).astype(int)
        return centres[side] + 0.1 * embeddings[:, :4]

    audio = (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32)
    diarizer = Diarizer(embed, DiarizationOptions(vad="energy"), projection=projection)
    result = diarizer.diarize(audio, 16000)             # the count is estimated
    assert len(seen) == 1 and seen[0][1] == 16        # once, on the model's embeddings
    num_windows = seen[0][0]
    assert num_windows >= 10
    assert result.num_speakers == 2
    # two turns, split where the projection split the windows: between window
    # num_windows // 2 - 1 and the next (starts every 0.75 s, 1.5 s long), at their midpoint
    assert len(result.turns) == 2 and result.turns[0].speaker != result.turns[1].speaker
    half = num_windows // 2
    boundary = 0.5 * ((half - 1) * 0.75 + 1.5 + half * 0.75)
    assert result.turns[0].end == pytest.approx(boundary)
    assert result.turns[1].start == pytest.approx(boundary)


def test_a_narrowband_projection_serves_recordings_at_or_below_its_rate():
    rng = np.random.default_rng(0)
    used = []
    embed = random_embedder(rng)

    def projection(name):
        def project(embeddings):
            used.append(name)
            return embeddings[:, :4]
        return project

    diarizer = Diarizer(embed, DiarizationOptions(vad="energy"), projection=projection("wide"),
                        narrowband_projections={8000: projection("8k"),
                                                11025: projection("11k")})
    for rate in (16000, 8000, 6000, 11025, 12000):
        audio = (0.1 * rng.standard_normal(rate * 6)).astype(np.float32)
        diarizer.diarize(audio, rate, num_speakers=2)
    assert used == ["wide", "8k", "8k", "11k", "wide"]
    assert Diarizer(embed, projection=projection("only")).projection_for(8000) is not None
    with pytest.raises(ValueError, match="below the model's 16000 Hz, got \\[16000\\]"):
        Diarizer(embed, narrowband_projections={16000: projection("x")})


def test_api_learns_saves_and_uses_a_window_lda(tmp_path, labelled_dir, caplog):
    from wespeaker_py import load_model
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    assert model.diarizer(vad="energy").projection is None        # none yet
    lda = model.train_window_lda(labelled_dir, dim=4, progress=False)
    assert os.path.isfile(os.path.join(folder, "window_lda.npz"))
    assert lda.num_speakers == 6 and lda.output_dim == 4 and lda.identity == model.identity
    assert model.diarizer(vad="energy").projection is not None    # found beside the model
    assert model.diarizer(vad="energy", window_lda="off").projection is None
    # read once while the file stays the same, again when it is learnt anew
    with caplog.at_level(logging.INFO):
        caplog.clear()
        first = model.diarizer(vad="energy").projection
        assert model.diarizer(vad="energy").projection == first
        assert "window LDA" not in caplog.text                   # read above already
        relearnt = model.train_window_lda(labelled_dir, dim=3, progress=False)
        # the LDA beside the model is replaced, and the log says what by what (a warning:
        # it was this model's)
        assert "replacing the window LDA" in caplog.text
        assert [r.levelname for r in caplog.records if "replacing" in r.message] == ["WARNING"]
        assert "-> 4 dims" in caplog.text and "with one of" in caplog.text
        caplog.clear()
        projection = model.diarizer(vad="energy").projection
        assert "-> 3 dims" in caplog.text and projection != first
        assert projection(np.ones((2, relearnt.input_dim))).shape == (2, 3)
    with pytest.raises(WindowLDAError, match="nowhere.npz does not exist"):
        model.diarizer(vad="energy", window_lda=str(tmp_path / "nowhere.npz"))
    # another model's LDA is refused, unless forced
    other_folder = str(tmp_path / "other")
    make_experiment(other_folder, bare=True, seed=1)
    other = load_model(other_folder, device="cpu")
    stray = os.path.join(folder, "window_lda.npz")
    with pytest.raises(ModelMismatchError, match="window LDA was made with model"):
        other.diarizer(vad="energy", window_lda=stray)
    forced = load_model(other_folder, device="cpu", force=True)
    with caplog.at_level(logging.WARNING):
        assert forced.diarizer(vad="energy", window_lda=stray).projection is not None
    assert "used anyway" in caplog.text
    # learning over another model's LDA (a recipe rerun after training again) or over a
    # broken file is a note, not a warning, and the new LDA is written
    for old_file in ("stray", b"", b"PK\x03\x04garbage"):
        target = os.path.join(other_folder, "window_lda.npz")
        if old_file == "stray":
            shutil.copy(stray, target)
        else:
            with open(target, "wb") as handle:
                handle.write(old_file)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            relearnt = other.train_window_lda(labelled_dir, dim=3, progress=False)
        replacing = [r for r in caplog.records if r.message.startswith("replacing")]
        assert [r.levelname for r in replacing] == ["INFO"]
        assert WindowLDA.load(target).identity == relearnt.identity == other.identity


def test_api_learns_a_narrowband_one_that_diarization_finds_by_rate(tmp_path, labelled_dir,
                                                                    caplog):
    from wespeaker_py import load_model
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    for wrong in (16000, 8000.0, True, -8000):
        with pytest.raises(WespeakerError, match="heard_rate must be a whole number of Hz "
                                                 "below the model's 16000 Hz"):
            model.train_window_lda(labelled_dir, heard_rate=wrong, progress=False)
    wide = model.train_window_lda(labelled_dir, dim=4, progress=False)
    narrow = model.train_window_lda(labelled_dir, dim=4, progress=False, heard_rate=8000)
    path = os.path.join(folder, "window_lda_8000hz.npz")
    assert model.window_lda_file(8000) == path and os.path.isfile(path)
    assert narrow.heard_rate == 8000 and WindowLDA.load(path).heard_rate == 8000
    assert wide.heard_rate == 0 and "heard at 8000 Hz" in narrow.describe()
    # the same utterances heard through an 8 kHz channel give other windows, another LDA
    assert not np.allclose(narrow.mean, wide.mean)
    diarizer = model.diarizer(vad="energy")
    assert diarizer.projection is not None and set(diarizer.narrowband_projections) == {8000}
    assert model.diarizer(vad="energy", window_lda="off").narrowband_projections == {}

    # files: an 8 kHz call gets the narrowband LDA, a 16 kHz recording the model-rate one
    recording = os.path.join(MINI_CORPUS, open(os.path.join(labelled_dir, "wav.scp"))
                             .readline().split()[1])
    audio, rate = sf.read(recording, dtype="float32")
    sf.write(tmp_path / "call_8k.wav", soxr.resample(audio, rate, 8000), 8000)
    with caplog.at_level(logging.DEBUG, logger="wespeaker_py.diarization.pipeline"):
        model.diarize(str(tmp_path / "call_8k.wav"), vad="energy", num_speakers=1)
        assert "at 8000 Hz: projected with the narrowband one for 8000 Hz" in caplog.text
        caplog.clear()
        model.diarize(recording, vad="energy", num_speakers=1)
        assert "projected with the narrowband one" not in caplog.text

    # given by name, a narrowband one serves every recording, and says so
    with caplog.at_level(logging.WARNING):
        named = model.diarizer(vad="energy", window_lda=path)
    assert named.narrowband_projections == {} and "projects every recording" in caplog.text
    # a name that is not window_lda_<HZ>hz.npz is ignored, with a warning
    WindowLDA(narrow.mean, narrow.matrix, narrow.identity, 6, 10, 8000).save(
        os.path.join(folder, "window_lda_old_8000hz.npz"))
    with caplog.at_level(logging.WARNING):
        assert set(model.diarizer(vad="energy").narrowband_projections) == {8000}
    assert "ignoring" in caplog.text and "window_lda_old_8000hz.npz" in caplog.text
    # a file whose name and content disagree, or at the model's own rate, is refused
    WindowLDA(narrow.mean, narrow.matrix, narrow.identity, 6, 10, 0).save(
        os.path.join(folder, "window_lda_11025hz.npz"))
    with pytest.raises(ModelMismatchError, match="window_lda_11025hz.npz: its name says 11025 "
                                                 "Hz but it was learnt .* at 16000 Hz"):
        model.diarizer(vad="energy")
    os.remove(os.path.join(folder, "window_lda_11025hz.npz"))
    # a narrowband LDA saved under the model-rate name is refused, with the name to give it
    os.replace(path, os.path.join(folder, "window_lda.npz"))
    with pytest.raises(ModelMismatchError, match="rename it window_lda_8000hz.npz"):
        model.diarizer(vad="energy")


def test_an_onnx_model_keeps_its_window_ldas_beside_it(tmp_path, labelled_dir, capsys):
    """Beside ``model.onnx`` the companions are ``model.window_lda.npz`` and
    ``model.window_lda_<HZ>hz.npz``, and diarization finds both."""
    from wespeaker_py import load_model
    from wespeaker_py.cli.main import main
    folder = str(tmp_path / "exp")
    make_experiment(folder, bare=True)
    onnx = str(tmp_path / "model.onnx")
    for args in (["export", "--model", folder, "--onnx", onnx, "--with_frontend"],
                 ["window-lda", "--model", onnx, "--data", labelled_dir, "--dim", "2"],
                 ["window-lda", "--model", onnx, "--data", labelled_dir, "--dim", "2",
                  "--heard_rate", "8000"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 0, capsys.readouterr().err
    assert {"model.window_lda.npz", "model.window_lda_8000hz.npz"} <= set(os.listdir(tmp_path))
    diarizer = load_model(onnx).diarizer(vad="energy")
    assert diarizer.projection is not None and set(diarizer.narrowband_projections) == {8000}


def test_command_learns_one_and_diarize_uses_it(tmp_path, labelled_dir, capsys, caplog):
    from wespeaker_py.cli.main import main
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as stop:
        main(["window-lda", "--model", folder, "--data", labelled_dir, "--dim", "3"])
    assert stop.value.code == 0
    err = capsys.readouterr().err
    assert f"window LDA written to {os.path.join(folder, 'window_lda.npz')}: " in err
    assert "-> 3 dims" in err and "of 6 speakers" in err
    assert "skipping broken-utt" in caplog.text and "utterances skipped: 1" in caplog.text
    recording = os.path.join(MINI_CORPUS, open(os.path.join(labelled_dir, "wav.scp"))
                             .readline().split()[1])
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as stop:
        main(["diarize", "--model", folder, "--vad", "energy", recording])
    assert stop.value.code == 0
    assert "window LDA" in caplog.text and "-> 3 dims" in caplog.text
    with pytest.raises(SystemExit) as stop:
        main(["window-lda", "--model", folder, "--data", labelled_dir, "--dim", "3",
              "--heard_rate", "8000"])
    assert stop.value.code == 0
    err = capsys.readouterr().err
    assert f"window LDA written to {os.path.join(folder, 'window_lda_8000hz.npz')}: " in err
    assert "heard at 8000 Hz" in err
    with pytest.raises(SystemExit) as stop:
        main(["window-lda", "--model", folder, "--data", str(tmp_path / "nothing")])
    assert stop.value.code != 0
    assert "nothing" in capsys.readouterr().err


def _without_read_permission(path, monkeypatch):
    """``path`` made unreadable; root reads any file, so for root os.access says it cannot."""
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        access = os.access
        monkeypatch.setattr(os, "access", lambda name, mode, **kwargs: (
            False if str(name) == str(path) and mode & os.R_OK else access(name, mode, **kwargs)))


def test_diarize_refuses_an_unreadable_window_lda_file_before_the_model_loads(
        tmp_path, capsys, monkeypatch):
    """Found with the other argument checks: the model named here does not even exist."""
    from tests.tool_helpers import run_cli
    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "locked.npz").write_bytes(b"PK")
    _without_read_permission(tmp_path / "locked.npz", monkeypatch)
    for given, why in (("gone.npz", "does not exist"), ("empty.npz", "is empty"),
                       ("folder.npz", "is a folder, not a file"),
                       ("locked.npz", "cannot be read (no read permission)")):
        status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model",
                                 "--vad", "energy", tmp_path / "a.wav",
                                 "--window_lda", tmp_path / given)
        assert status == 2 and f"--window_lda {tmp_path / given} {why}" in err, err
    # the same input check, naming its flag, for diarize's other input file
    (tmp_path / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\n")
    status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model",
                             "--vad", "energy", "--wav_scp", tmp_path / "wav.scp",
                             "-o", tmp_path / "sys.rttm", "--reco2num_spk", tmp_path / "locked.npz")
    assert status == 2 and (f"--reco2num_spk {tmp_path / 'locked.npz'} cannot be read "
                            f"(no read permission)") in err, err
    # auto and off name no file
    for choice in ("auto", "off", "OFF", "none"):
        status, _, err = run_cli(capsys, "diarize", "--model", tmp_path / "no_model",
                                 "--vad", "energy", tmp_path / "a.wav", "--window_lda", choice)
        assert status == 2 and "--window_lda" not in err and "no_model" in err, err
