"""What a diarization run shows (diarization user hunt, findings 5 and 9): the window LDA file
each recording rate uses (in the log, once per diarizer and rate, and in the model's info),
and a bar over the windows of a long recording."""
import json
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from tests.inference_helpers import make_experiment
from tool_helpers import run_cli
from wespeaker_py import load_model
from wespeaker_py.diarization.options import DiarizationOptions
from wespeaker_py.diarization.pipeline import PROGRESS_WINDOWS, Diarizer
from wespeaker_py.diarization.projection import WindowLDA

RATE = 16000


def noise(seconds, rate=RATE, seed=0):
    """Steady noise: speech throughout to the energy VAD."""
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
            ).astype(np.float32)


def random_embed(pieces):
    rng = np.random.default_rng(len(pieces))
    return np.stack([rng.standard_normal(8) for _ in pieces])


def keep_four(embeddings):
    return embeddings[:, :4]


def lda_lines(caplog):
    return [record.getMessage() for record in caplog.records
            if record.levelno == logging.INFO and record.getMessage().startswith("window LDA for")]


def test_the_log_names_the_window_lda_of_each_rate_once_per_diarizer(caplog):
    diarizer = Diarizer(random_embed, DiarizationOptions(vad="energy"), projection=keep_four,
                        narrowband_projections={8000: keep_four},
                        projection_files={0: "m/window_lda.npz",
                                          8000: "m/window_lda_8000hz.npz"})
    with caplog.at_level(logging.INFO):
        for rate in (16000, 8000, 16000, 6000, 12000, 8000):   # a batch of six recordings
            diarizer.diarize(noise(4, rate), rate, num_speakers=1)
    assert lda_lines(caplog) == [
        "window LDA for recordings above 8000 Hz: m/window_lda.npz",
        "window LDA for recordings at or below 8000 Hz: m/window_lda_8000hz.npz"]
    # another diarizer says it again; none, or one without a file, is said as well
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for diarizer in (Diarizer(random_embed, DiarizationOptions(vad="energy")),
                         Diarizer(random_embed, DiarizationOptions(vad="energy"),
                                  projection=keep_four)):
            for _ in range(2):
                diarizer.diarize(noise(4), RATE, num_speakers=1)
    assert lda_lines(caplog) == ["window LDA for all recordings: none",
                                 "window LDA for all recordings: one given without a file"]


def write_ldas(model, folder):
    """A window LDA of the model's rate and one for 8 kHz, beside the model; their paths."""
    rng = np.random.default_rng(0)
    paths = {}
    for heard_rate, name in ((0, "window_lda.npz"), (8000, "window_lda_8000hz.npz")):
        paths[heard_rate] = os.path.join(folder, name)
        WindowLDA(rng.standard_normal(model.embed_dim), rng.standard_normal((model.embed_dim, 3)),
                  model.identity, 4, 40, heard_rate).save(paths[heard_rate])
    return paths


@pytest.fixture
def model_folder(tmp_path):
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    return folder


def test_info_and_the_diarize_log_name_the_window_lda_files_in_use(model_folder, caplog,
                                                                   capsys):
    model = load_model(model_folder, device="cpu")
    assert model.info()["window_ldas"] == {}
    paths = write_ldas(model, model_folder)
    assert model.info()["window_ldas"] == {RATE: paths[0], 8000: paths[8000]}
    status, out, err = run_cli(capsys, "info", "--model", model_folder, "--json")
    assert status == 0, err
    assert json.loads(out)["window_ldas"] == {str(RATE): paths[0], "8000": paths[8000]}
    status, out, _ = run_cli(capsys, "info", "--model", model_folder)
    assert status == 0 and "window_ldas" in out and paths[8000] in out

    caplog.clear()
    with caplog.at_level(logging.INFO):
        diarizer = model.diarizer(vad="energy")
        for rate in (8000, RATE, 8000):
            diarizer.diarize(noise(3, rate), rate, num_speakers=1)
    assert lda_lines(caplog) == [f"window LDA for recordings at or below 8000 Hz: {paths[8000]}",
                                 f"window LDA for recordings above 8000 Hz: {paths[0]}"]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        model.diarizer(vad="energy", window_lda=paths[0]).diarize(noise(3, 8000), 8000,
                                                                  num_speakers=1)
        model.diarize(noise(3), RATE, vad="energy", window_lda="off", num_speakers=1)
    assert lda_lines(caplog) == [f"window LDA for all recordings: {paths[0]}",
                                 "window LDA for all recordings: none"]

    # one that cannot be used is reported, as band fills are, not raised
    with open(paths[8000], "wb") as handle:
        handle.write(b"not an npz")
    assert load_model(model_folder, device="cpu").info()["window_ldas"].startswith(
        f"not used: {paths[8000]}: not a window LDA")


def test_window_ldas_in_use_names_the_files_diarization_would_project_with(model_folder):
    model = load_model(model_folder, device="cpu")
    assert model.window_ldas_in_use() == {}
    paths = write_ldas(model, model_folder)
    assert model.window_ldas_in_use() == {RATE: paths[0], 8000: paths[8000]}
    with open(paths[8000], "wb") as handle:
        handle.write(b"not an npz")
    assert model.window_ldas_in_use().startswith(f"not used: {paths[8000]}: not a window LDA")


def test_the_diarize_command_names_its_window_ldas(model_folder, tmp_path, capsys,
                                                   monkeypatch):
    from wespeaker_py.api.model import SpeakerModel
    paths = write_ldas(load_model(model_folder, device="cpu"), model_folder)

    def slow_info(model):
        raise AssertionError("diarize asked info(), which hashes the weights")
    monkeypatch.setattr(SpeakerModel, "info", slow_info)
    wav = str(tmp_path / "call.wav")
    sf.write(wav, noise(3), RATE)
    args = ("diarize", "--model", model_folder, wav, "--vad", "energy", "--num_speakers", "1")
    status, out, err = run_cli(capsys, *args)
    assert status == 0, err
    assert f"window LDA: {paths[0]}" in err.splitlines()
    assert f"window LDA for recordings at or below 8000 Hz: {paths[8000]}" in err.splitlines()
    status, _, err = run_cli(capsys, *args, "--window_lda", paths[0])
    assert status == 0 and f"window LDA {paths[0]} for every recording" in err.splitlines()
    status, _, err = run_cli(capsys, *args, "--window_lda", "off")
    assert status == 0 and "window LDA" not in err


def windows_bar(err):
    return [line for line in err.splitlines() if line.startswith("embedding rec:")]


def test_a_recording_of_many_windows_shows_a_bar_over_them(capsys, monkeypatch):
    monkeypatch.setenv("WESPEAKER_PY_PROGRESS_INTERVAL", "0")   # a line per refresh
    options = DiarizationOptions(vad="energy", window=0.2, shift=0.1)
    audio = noise(50)
    for show_progress in (True, False):
        diarizer = Diarizer(random_embed, options, show_progress=show_progress)
        for seconds in (40.1, 40.2):          # 400 windows, then 401
            windows, _ = diarizer.window_embeddings(audio, [(0.0, seconds)], name="rec")
            assert len(windows) == {40.1: PROGRESS_WINDOWS, 40.2: PROGRESS_WINDOWS + 1}[seconds]
            bar = windows_bar(capsys.readouterr().err)
            if show_progress and len(windows) > PROGRESS_WINDOWS:
                assert "401/401" in bar[-1] and "win" in bar[-1]
            else:
                assert bar == []


def test_the_api_shows_the_bar_unless_progress_is_off(model_folder, capsys, monkeypatch):
    monkeypatch.setenv("WESPEAKER_PY_PROGRESS_INTERVAL", "0")
    model = load_model(model_folder, device="cpu")
    settings = dict(vad="energy", window=0.5, shift=0.05, num_speakers=2)
    audio = noise(25)
    result = model.diarize(audio, RATE, progress=False, **settings)
    assert result.num_speakers == 2 and windows_bar(capsys.readouterr().err) == []
    model.diarizer(**settings).diarize(audio, RATE, recording="rec")
    bar = windows_bar(capsys.readouterr().err)
    # the embedding loop takes the windows one by one: the bar moves as they are embedded
    assert len(bar) > 2 and bar[-1].split("|")[0].strip().endswith("100%")
    assert not model.diarizer(vad="energy", progress=False).show_progress


def test_a_batch_counts_a_silent_chosen_channel_apart_from_silent_audio(model_folder, tmp_path):
    talk = noise(3)
    sf.write(tmp_path / "a.wav", talk, RATE)
    sf.write(tmp_path / "b.wav", noise(3, seed=1), RATE)
    sf.write(tmp_path / "right.wav", np.stack([np.zeros_like(talk), talk], axis=1), RATE)
    sf.write(tmp_path / "zeros.wav", np.zeros((RATE, 2), np.float32), RATE)
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("".join(f"{key} {tmp_path / key}.wav\n"
                               for key in ("a", "b", "right", "zeros")))
    summary = load_model(model_folder, device="cpu").diarize_many(
        str(wav_scp), str(tmp_path / "out.rttm"), vad="energy", num_speakers=1, progress=False)
    assert summary.reasons == {"silent_channel": 1} and list(summary.failed) == ["right"]
    assert summary.silent == ["zeros"]


def test_a_resumed_run_finds_the_window_lda_digests_it_recorded(model_folder, tmp_path, caplog):
    from wespeaker_py.diarization.batch import FOLDER_WORK, MANIFEST
    from wespeaker_py.utils.paths import file_digest
    model = load_model(model_folder, device="cpu")
    paths = write_ldas(model, model_folder)
    for seed, key in enumerate(("a", "b")):
        sf.write(tmp_path / f"{key}.wav", noise(3, seed=seed), RATE)
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("".join(f"{key} {tmp_path / key}.wav\n" for key in ("a", "b")))
    output = str(tmp_path / "rttm") + os.sep
    settings = dict(vad="energy", num_speakers=1, progress=False)
    assert model.diarize_many(str(wav_scp), output, **settings).resumed == 0
    with open(os.path.join(output, FOLDER_WORK, MANIFEST), encoding="utf-8") as handle:
        recorded = json.load(handle)["model"]["window_ldas"]
    assert recorded == {str(rate): file_digest(path) for rate, path in paths.items()}
    # the same model (its window LDAs read already) and a fresh one (reading them again)
    for again in (model, load_model(model_folder, device="cpu")):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wespeaker_py.diarization.batch"):
            assert again.diarize_many(str(wav_scp), output, **settings).resumed == 2
        assert "2 of 2 recordings already diarized" in caplog.text
