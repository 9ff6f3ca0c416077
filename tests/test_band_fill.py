"""Narrow-band fill: which bins, the fit, the file, the front-end, the API and the command."""
import logging
import os

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from api_helpers import MINI_CORPUS
from tests.inference_helpers import FEAT_DIM, make_experiment
from wespeaker_py.audio import load_audio, narrowband
from wespeaker_py.frontend import FbankFeatures, apply_cmn
from wespeaker_py.frontend.band_fill import (BandFill, BandFillError, band_fill_rate_of,
                                             fit_band_fill, split_bins)
from wespeaker_py.frontend.fbank import mel_bin_tops
from wespeaker_py.diarization.options import DiarizationOptions
from wespeaker_py.diarization.pipeline import Diarizer
from wespeaker_py.errors import RunFailedError, WespeakerError
from wespeaker_py.runtime.identity import ModelMismatchError

RATE = 16000


def corpus_files(count, skip=0):
    """``count`` mini-corpus utterances (paths), after the first ``skip``."""
    with open(os.path.join(MINI_CORPUS, "wav.scp")) as handle:
        paths = [os.path.join(MINI_CORPUS, line.split()[1]) for line in handle]
    return paths[skip:skip + count]


def write_call(wide_path, target):
    """An 8 kHz copy of the wide-band file ``wide_path`` written to ``target``; its path."""
    sf.write(target, soxr.resample(load_audio(wide_path, RATE) / 32768.0, RATE, 8000), 8000,
             subtype="FLOAT")
    return str(target)


def data_dir(folder, wav_scp):
    """A data directory ``folder`` holding ``wav.scp`` (``{key: path}``); its path."""
    folder.mkdir()
    (folder / "wav.scp").write_text("".join(f"{key} {path}\n" for key, path in wav_scp.items()))
    return str(folder)


def test_the_bins_above_the_low_rate_are_filled_from_those_below():
    kept, filled = split_bins(RATE, 80, 25, 8000)
    tops = mel_bin_tops(RATE, 80, 25)
    assert sorted(np.concatenate([kept, filled]).tolist()) == list(range(80))
    assert kept.max() < filled.min()                      # the top of the spectrum is filled
    assert tops[kept].max() < 3900 <= tops[filled].min()
    assert (kept.size, filled.size) == (59, 21)
    # a lower rate leaves more empty
    assert split_bins(RATE, 80, 25, 4000)[1].size > filled.size
    for wrong in (0, 16000, 22050):
        with pytest.raises(BandFillError, match="heard_rate must be between 0 and the "
                                                "model's 16000 Hz"):
            split_bins(RATE, 80, 25, wrong)
    assert band_fill_rate_of("band_fill_8000hz.npz") == 8000
    assert band_fill_rate_of("band_fill_old.npz") is None


def test_the_fit_recovers_a_linear_relation_and_apply_changes_only_the_filled_bins():
    kept, filled = split_bins(RATE, 24, 25, 8000)
    rng = np.random.default_rng(0)
    mapping = rng.normal(size=(kept.size, filled.size)) / kept.size
    bias = rng.normal(size=filled.size)

    def pair(frames):
        narrow = rng.normal(3.0, 2.0, size=(frames, 24))
        wide = narrow.copy()
        wide[:, filled] = narrow[:, kept] @ mapping + bias
        narrow[:, filled] = -15.9                          # the empty band at the log floor
        return wide, narrow

    fill = fit_band_fill((pair(500) for _ in range(6)), 8000, RATE, 24, 25)
    assert fill.num_frames == 3000 and fill.weights.shape == (kept.size + 1, filled.size)
    np.testing.assert_allclose(fill.weights[:-1], mapping, atol=0.01)
    np.testing.assert_allclose(fill.weights[-1], bias, atol=0.05)
    wide, narrow = pair(40)
    out = fill.apply(torch.tensor(narrow[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_array_equal(out[:, kept], narrow[:, kept].astype(np.float32))
    np.testing.assert_allclose(out[:, filled], wide[:, filled], atol=0.05)
    with pytest.raises(BandFillError, match="for 24 mel bins, the features have 80"):
        fill.apply(torch.zeros(1, 5, 80))
    with pytest.raises(BandFillError, match="needs more than"):
        fit_band_fill([pair(3)], 8000, RATE, 24, 25)


def test_file_round_trip_and_bad_files_name_themselves(tmp_path):
    kept, filled = split_bins(RATE, 24, 25, 8000)
    fill = BandFill(8000, RATE, 24, kept, filled,
                    np.arange((kept.size + 1) * filled.size, dtype=float).reshape(-1, filled.size),
                    1234)
    path = str(tmp_path / "band_fill_8000hz.npz")
    fill.save(path)
    again = BandFill.load(path)
    assert again.describe() == fill.describe() and again.digest == fill.digest
    assert "learnt from 1234 frames" in again.describe()
    np.testing.assert_array_equal(again.weights, fill.weights)
    with pytest.raises(BandFillError, match="missing.npz does not exist"):
        BandFill.load(str(tmp_path / "missing.npz"))
    (tmp_path / "broken.npz").write_bytes(b"not an npz")
    with pytest.raises(BandFillError, match="broken.npz cannot be read"):
        BandFill.load(str(tmp_path / "broken.npz"))
    BandFill(8000, RATE, 24, kept, filled, fill.weights[:-1], 5).save(str(tmp_path / "odd.npz"))
    with pytest.raises(BandFillError, match="odd.npz: bins .* do not fit together"):
        BandFill.load(str(tmp_path / "odd.npz"))
    other = BandFill(8000, RATE, 24, kept, filled, fill.weights + 1.0, 1234)
    assert other.digest != fill.digest


def test_the_band_fills_handed_over_are_the_files_stamped(tmp_path, monkeypatch):
    """One that appears while the files are being stamped waits for the next refresh."""
    from types import SimpleNamespace
    from wespeaker_py.api import band_fill_files as module
    kept, filled = split_bins(RATE, 24, 25, 8000)
    weights = np.zeros((kept.size + 1, filled.size))
    BandFill(8000, RATE, 24, kept, filled, weights, 1).save(str(tmp_path / "band_fill_8000hz.npz"))
    late = str(tmp_path / "band_fill_11025hz.npz")
    stamp = module.file_stamp

    def stamp_as_another_appears(path):
        if not os.path.exists(late):
            kept, filled = split_bins(RATE, 24, 25, 11025)
            BandFill(11025, RATE, 24, kept, filled, np.zeros((kept.size + 1, filled.size)),
                     1).save(late)
        return stamp(path)

    monkeypatch.setattr(module, "file_stamp", stamp_as_another_appears)
    handed = []
    backend = SimpleNamespace(takes_band_fills=True, set_band_fills=handed.append)
    model = SimpleNamespace(companion_prefix=os.path.join(str(tmp_path), ""), backend=backend,
                            source="model")
    files = module.BandFillFiles()
    files.refresh(model)
    assert [fill.heard_rate for fill in handed[-1]] == [8000]
    assert [path for path, _ in files.stamps] == [str(tmp_path / "band_fill_8000hz.npz")]
    files.refresh(model)
    assert [fill.heard_rate for fill in handed[-1]] == [11025, 8000]


def test_on_real_speech_the_filled_bins_come_close_to_the_wide_band_ones():
    frontend = FbankFeatures(RATE, 80, cmn=False)

    def log_mel(samples):
        return frontend.log_mel(torch.as_tensor(samples)[None])[0].numpy()

    def pairs(paths):
        for path in paths:
            wide = load_audio(path, RATE)
            yield log_mel(wide), log_mel(narrowband(wide, 8000, RATE))

    fill = fit_band_fill(pairs(corpus_files(24)), 8000, RATE, 80, 25)
    errors_before, errors_after = [], []
    for wide, narrow in pairs(corpus_files(6, skip=100)):      # other speakers
        count = min(len(wide), len(narrow))
        filled = fill.apply(torch.tensor(narrow[None]))[0].numpy()
        errors_before.append(np.abs(narrow - wide)[:count, fill.filled].mean())
        errors_after.append(np.abs(filled - wide)[:count, fill.filled].mean())
        np.testing.assert_array_equal(filled[:, fill.kept], narrow[:, fill.kept])
    # the empty band sits ~10 log units under the real one; the estimate within ~2
    assert np.mean(errors_before) > 6.0
    assert np.mean(errors_after) < 0.35 * np.mean(errors_before)


def test_the_front_end_fills_before_cmn_whole_or_in_chunks():
    wide = load_audio(corpus_files(1)[0], RATE)
    narrow = torch.as_tensor(narrowband(wide, 8000, RATE))
    kept, filled = split_bins(RATE, 80, 25, 8000)
    weights = np.zeros((kept.size + 1, filled.size))
    weights[-1] = 12.0                                        # a constant fill
    fill = BandFill(8000, RATE, 80, kept, filled, weights, 1)
    with_cmn = FbankFeatures(RATE, 80, cmn=True).eval()
    expected = apply_cmn(fill.apply(with_cmn.log_mel(narrow[None])))
    torch.testing.assert_close(with_cmn(narrow[None], fill), expected)
    torch.testing.assert_close(with_cmn.features_in_chunks(narrow, 97, fill), expected)
    # after CMN a constant fill leaves zeros, so it came before
    assert with_cmn(narrow[None], fill)[0][:, filled].abs().max() < 1e-4
    assert not torch.allclose(with_cmn(narrow[None]), expected)


def test_narrowband_keeps_the_length_and_empties_the_band_above_the_low_rate():
    rng = np.random.default_rng(0)
    noise = (1000 * rng.standard_normal(RATE)).astype(np.float32)
    out = narrowband(noise, 8000, RATE)
    assert out.shape == noise.shape and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out)) ** 2
    freqs = np.fft.rfftfreq(out.size, 1 / RATE)
    assert spectrum[freqs > 4200].sum() < 1e-4 * spectrum[freqs < 3800].sum()


def test_api_learns_one_and_uses_it_for_audio_that_came_at_the_low_rate(tmp_path, labelled_dir,
                                                                        caplog):
    from wespeaker_py import load_model
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    wide = load_audio(corpus_files(1, skip=200)[0], RATE) / 32768.0
    call = soxr.resample(wide, RATE, 8000)
    plain = load_model(folder, device="cpu")
    before_call, before_wide = plain.embed(call, sample_rate=8000), plain.embed(wide, RATE)

    model = load_model(folder, device="cpu")
    with caplog.at_level(logging.WARNING):
        fill = model.train_band_fill(labelled_dir, 8000, progress=False)
    assert "skipping broken-utt" in caplog.text
    assert os.path.isfile(os.path.join(folder, "band_fill_8000hz.npz"))
    assert model.band_fill_file(8000) == os.path.join(folder, "band_fill_8000hz.npz")
    assert fill.num_mel_bins == FEAT_DIM and fill.heard_rate == 8000
    after_call = model.embed(call, sample_rate=8000)
    assert not np.allclose(after_call, before_call, atol=1e-4)       # the call is filled
    np.testing.assert_allclose(model.embed(wide, RATE), before_wide, atol=1e-5)  # 16 kHz not
    # a freshly loaded model finds the file; only audio heard at exactly 8 kHz is filled
    again = load_model(folder, device="cpu")
    np.testing.assert_allclose(again.embed(call, sample_rate=8000), after_call, atol=1e-5)
    assert again.backend.band_fill_for(8000).digest == fill.digest
    assert all(again.backend.band_fill_for(rate) is None for rate in (0, 6000, 11025))
    assert again.info()["band_fills"] == {8000: model.band_fill_file(8000)}
    assert plain.info()["band_fills"] == {8000: model.band_fill_file(8000)}   # found since
    np.testing.assert_allclose(again.embed_waveforms([call, call], 8000), [after_call] * 2,
                               atol=1e-5)
    # a file is filled by its own rate, one by one or in a list
    sf.write(tmp_path / "call.wav", call, 8000, subtype="FLOAT")
    sf.write(tmp_path / "wide.wav", wide, RATE, subtype="FLOAT")
    from_file = again.embed(str(tmp_path / "call.wav"))
    np.testing.assert_allclose(from_file, after_call, atol=1e-5)
    listed = again.embed_many([str(tmp_path / "call.wav"), str(tmp_path / "wide.wav")],
                              progress=False).embeddings
    np.testing.assert_allclose(listed[str(tmp_path / "call.wav")], from_file, atol=1e-5)
    np.testing.assert_allclose(listed[str(tmp_path / "wide.wav")],
                               again.embed(str(tmp_path / "wide.wav")), atol=1e-5)
    # the model loaded before the fill was learnt uses it now that it is there
    np.testing.assert_allclose(plain.embed_many([str(tmp_path / "call.wav")], progress=False)
                               .embeddings[str(tmp_path / "call.wav")], from_file, atol=1e-5)
    # and drops it when it is gone; a broken one fails every time, naming itself
    os.rename(model.band_fill_file(8000), tmp_path / "kept.npz")
    np.testing.assert_allclose(plain.embed(call, sample_rate=8000), before_call, atol=1e-5)
    with open(model.band_fill_file(8000), "wb") as handle:
        handle.write(b"not an npz")
    for _ in range(2):
        with pytest.raises(BandFillError, match="band_fill_8000hz.npz cannot be read"):
            plain.embed(call, sample_rate=8000)
    assert plain.info()["band_fills"].startswith("not used: band fill ")
    with pytest.raises(WespeakerError, match="heard_rate must be a whole number of Hz below"):
        model.train_band_fill(labelled_dir, 16000, progress=False)
    # data with nothing readable: the job's error, naming the data, and nothing written
    unreadable = data_dir(tmp_path / "unreadable", {"a": tmp_path / "missing.wav"})
    with pytest.raises(RunFailedError, match="unreadable.*no band fill was learnt"):
        model.train_band_fill(unreadable, 8000, output=str(tmp_path / "x.npz"), progress=False)
    assert not os.path.exists(tmp_path / "x.npz")


def test_utterances_that_came_narrow_band_are_counted_apart_not_as_failures(
        tmp_path, caplog, capsys):
    from wespeaker_py import load_model
    from wespeaker_py.cli.main import main
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    wide_paths = corpus_files(3)
    calls = {f"call{i}": write_call(path, tmp_path / f"call{i}.wav")
             for i, path in enumerate(wide_paths)}
    # two of four entries at 8 kHz and one missing: 3 of 4 skipped, but only the missing one
    # failed (1 of 2 at the model's rate, within --max_fail_fraction 0.5)
    mixed = data_dir(tmp_path / "mixed", {"wide": wide_paths[0], "call0": calls["call0"],
                                          "call1": calls["call1"],
                                          "gone": tmp_path / "missing.wav"})
    with caplog.at_level(logging.INFO):
        model.train_band_fill(mixed, 8000, output=str(tmp_path / "fill.npz"), progress=False)
    assert os.path.exists(tmp_path / "fill.npz")
    warnings = [record.getMessage() for record in caplog.records
                if record.levelno == logging.WARNING]
    # the one that failed has its own line; those at 8 kHz are one count in the last line
    assert sum(message.startswith("skipping gone: ") for message in warnings) == 1
    assert not any("call" in message for message in warnings)
    assert warnings[-1] == (f"band fill for 8000 Hz learnt from 1 utterance(s) of {mixed}; "
                            f"skipped 3: 2 came at 8000 Hz (below the model's 16000 Hz), "
                            f"1 missing_file")
    # only 8 kHz audio: the error says what a band fill learns from
    narrow = data_dir(tmp_path / "narrow", calls)
    expected = (f"nothing learnt from {narrow}: 3 came at 8000 Hz (below the model's 16000 "
                f"Hz). A band fill learns from speech at the model's 16000 Hz (e.g. the "
                f"model's own training data)")
    with pytest.raises(RunFailedError) as refused:
        model.train_band_fill(narrow, 8000, output=str(tmp_path / "none.npz"), progress=False)
    assert str(refused.value).startswith(expected)
    assert "the 8000 Hz audio has no wide band to teach it" in str(refused.value)
    assert not os.path.exists(tmp_path / "none.npz")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["band-fill", "--model", folder, "--data", narrow, "--heard_rate", "8000"])
    assert stop.value.code == 1 and expected in capsys.readouterr().err
    assert not os.path.exists(model.band_fill_file(8000))


def test_window_lda_windows_of_a_narrow_band_utterance_are_embedded_as_when_diarized(
        tmp_path):
    from wespeaker_py.diarization.pipeline import labelled_window_embeddings
    heard = []

    def narrowband_embed(pieces, rate):
        heard.append(rate)
        return np.ones((len(pieces), 4))

    diarizer = Diarizer(lambda pieces: heard.append(0) or np.ones((len(pieces), 4)),
                        DiarizationOptions(vad="energy"), narrowband_embed=narrowband_embed)
    wide_path = corpus_files(1)[0]
    wav_scp = tmp_path / "wav.scp"
    for key, path, as_heard in (("wide", wide_path, [0, 8000]),
                                ("call", write_call(wide_path, tmp_path / "call.wav"),
                                 [8000, 8000])):
        wav_scp.write_text(f"{key} {path}\n")
        heard.clear()
        labelled_window_embeddings(diarizer, str(wav_scp), {key: "s"}, show_progress=False,
                                   heard_rates=(0, 8000))
        assert heard == as_heard, key


def test_narrowband_audio_is_warned_about_only_when_no_band_fill_fills_it(tmp_path,
                                                                          monkeypatch, caplog):
    from wespeaker_py import load_model
    from wespeaker_py.audio import samples as audio_samples
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    call = soxr.resample(load_audio(corpus_files(1)[0], RATE) / 32768.0, RATE, 8000)

    def warnings():
        return [r.getMessage() for r in caplog.records if "Hz audio (first" in r.getMessage()]

    with caplog.at_level(logging.WARNING):
        model.embed(call, sample_rate=8000)
        model.embed_waveforms([call, call], 8000)
        model.embed(call, sample_rate=11025)                # above 8 kHz: not narrow-band
    [message] = warnings()
    assert message.startswith("8000 Hz audio (first: <ndarray of shape")
    assert "no band fill for 8000 Hz (learn one: 'wespeaker-py band-fill')" in message
    # with a fill beside the model, 8 kHz audio is filled and not warned about
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    caplog.clear()
    kept, filled = split_bins(RATE, FEAT_DIM, 25, 8000)
    BandFill(8000, RATE, FEAT_DIM, kept, filled, np.zeros((kept.size + 1, filled.size)),
             100).save(os.path.join(folder, "band_fill_8000hz.npz"))
    with caplog.at_level(logging.WARNING):
        model.embed(call, sample_rate=8000)
        assert warnings() == []
        model.embed(call, sample_rate=4000)                 # no fill for 4 kHz
    [message] = warnings()
    assert message.startswith("4000 Hz audio") and "no band fill for 4000 Hz" in message


def test_a_narrowband_window_lda_records_its_band_fill(tmp_path, labelled_dir, caplog):
    from wespeaker_py import load_model
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    with caplog.at_level(logging.INFO):
        lda = model.train_window_lda(labelled_dir, dim=3, progress=False, heard_rate=8000)
    assert "learning one from the same data first" in caplog.text          # none was there
    fill = BandFill.load(os.path.join(folder, "band_fill_8000hz.npz"))
    assert lda.band_fill == fill.digest
    # learnt from every window twice, narrow-banded and as it is
    wide = model.train_window_lda(labelled_dir, output=str(tmp_path / "wide.npz"), dim=3,
                                  progress=False)
    assert lda.num_windows == 2 * wide.num_windows
    assert not np.allclose(lda.matrix, wide.matrix)
    assert set(load_model(folder, device="cpu").diarizer(vad="energy")
               .narrowband_projections) == {8000}
    # another band fill (learnt anew, say) no longer matches the LDA: refused, with the fix
    BandFill(8000, fill.sample_rate, fill.num_mel_bins, fill.kept, fill.filled,
             fill.weights * 0.5, 3).save(os.path.join(folder, "band_fill_8000hz.npz"))
    with pytest.raises(ModelMismatchError, match="through another band fill.*learn it again: "
                                                 "wespeaker-py window-lda --heard_rate 8000"):
        load_model(folder, device="cpu").diarizer(vad="energy")
    forced = load_model(folder, device="cpu", force=True)
    with caplog.at_level(logging.WARNING):
        assert set(forced.diarizer(vad="energy").narrowband_projections) == {8000}
    assert "used anyway" in caplog.text
    # with the fill gone, the LDA learnt through one is refused too
    os.remove(os.path.join(folder, "band_fill_8000hz.npz"))
    with pytest.raises(ModelMismatchError, match="but 8000 Hz audio now goes through none"):
        load_model(folder, device="cpu").diarizer(vad="energy")


def test_a_gallery_notices_a_band_fill_learnt_after_its_low_rate_enrolments(
        tmp_path, labelled_dir, caplog):
    from wespeaker_py import load_model
    from wespeaker_py.api.gallery import GalleryFileError, MIXED_FILLS, read_gallery
    folder, gallery = str(tmp_path / "model"), str(tmp_path / "speakers.npz")
    make_experiment(folder, bare=True)
    first, second, third = (load_audio(path, RATE) / 32768.0
                            for path in corpus_files(3, skip=200))
    model = load_model(folder, device="cpu")

    def enroll(name, wide, rate, **flags):
        audio = wide if rate == RATE else soxr.resample(wide, RATE, rate)
        model.enroll(name, audio, gallery=gallery, sample_rate=rate, **flags)

    enroll("alice", first, 8000)
    enroll("dave", third, 8000)
    enroll("bob", second, RATE)
    assert read_gallery(gallery).narrowband == {"alice": {8000: ""}, "dave": {8000: ""}}
    fill = model.train_band_fill(labelled_dir, 8000, progress=False)
    # alice's and dave's centroids were made without the fill 8 kHz audio now goes through
    stale = (r"speaker\(s\) alice, dave were enrolled from 8000 Hz audio .*\(the band fill "
             r"beside the model\).*enroll them again with --replace")
    with pytest.raises(ModelMismatchError, match=stale):
        model.identify(second, gallery, sample_rate=RATE)
    with caplog.at_level(logging.WARNING):
        assert model.identify(second, gallery, top_k=1, sample_rate=RATE, force=True)[0][0] == "bob"
    assert "used anyway" in caplog.text
    # a new speaker compares nothing: allowed; appending to a stale one is not
    enroll("carol", second, RATE)
    with pytest.raises(ModelMismatchError, match=r"speaker\(s\) alice were enrolled"):
        enroll("alice", first, 8000, append=True)
    enroll("alice", first, 8000, append=True, force=True)   # mixed fills: stays stale
    assert read_gallery(gallery).narrowband["alice"] == {8000: MIXED_FILLS}
    # enrolled anew, one by one, they record the fill their audio went through
    enroll("alice", first, 8000, replace=True)
    with pytest.raises(ModelMismatchError, match=r"speaker\(s\) dave were enrolled"):
        model.identify(second, gallery, sample_rate=RATE)
    enroll("dave", third, 8000, replace=True)
    assert read_gallery(gallery).narrowband == {"alice": {8000: fill.digest},
                                                "dave": {8000: fill.digest}}
    assert model.identify(first, gallery, top_k=1, sample_rate=RATE)[0][0] == "alice"
    # the fill removed: their enrolments went through one, 8 kHz audio now through none
    os.remove(model.band_fill_file(8000))
    with pytest.raises(ModelMismatchError, match=r"than such audio goes through now \(none\)"):
        model.identify(second, gallery, sample_rate=RATE)
    # a fill learnt between two recordings of one enrolment: each records its own, so mixed
    embed_heard = model._embed_heard

    def then_learn_fill(*args):
        result = embed_heard(*args)
        fill.save(model.band_fill_file(8000))
        return result

    model._embed_heard = then_learn_fill
    calls = [soxr.resample(wide, RATE, 8000) for wide in (first, third)]
    model.enroll("erin", *calls, gallery=gallery, sample_rate=8000)
    del model._embed_heard
    assert read_gallery(gallery).narrowband["erin"] == {8000: MIXED_FILLS}
    os.remove(model.band_fill_file(8000))
    # a gallery written before band fills has no record and is not checked; one whose
    # record columns disagree or are partly missing is not a gallery
    arrays = dict(np.load(gallery))
    old = {key: value for key, value in arrays.items() if not key.startswith("narrowband")}
    np.savez(str(tmp_path / "old.npz"), **old)
    assert model.identify(first, str(tmp_path / "old.npz"), top_k=1,
                          sample_rate=RATE)[0][0] == "alice"
    for name, broken in (("short", {**arrays, "narrowband_rates": np.array([8000])}),
                         ("partial", {**old, "narrowband_names": arrays["narrowband_names"]})):
        np.savez(str(tmp_path / f"{name}.npz"), **broken)
        with pytest.raises(GalleryFileError, match=f"{name}.npz: not a speaker gallery"):
            read_gallery(str(tmp_path / f"{name}.npz"))


def test_a_calibration_notices_a_band_fill_learnt_after_it(tmp_path, labelled_dir, caplog):
    from wespeaker_py import load_model
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    paths = corpus_files(3, skip=200)
    write_call(paths[1], tmp_path / "call.wav")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"u0 {paths[0]}\nu1 {tmp_path / 'call.wav'}\nu2 {paths[2]}\n")
    trials = tmp_path / "trials"
    trials.write_text("".join(f"u0 u{1 + i % 2} {'target' if i < 10 else 'nontarget'}\n"
                              for i in range(20)))
    model = load_model(folder, device="cpu")
    assert model.calibrate(str(trials), str(wav_scp), progress=False).band_fills == {8000: ""}
    fill = model.train_band_fill(labelled_dir, 8000, progress=False)
    # fitted on 8 kHz scores made without the fill that 8 kHz audio now goes through
    for user in (model, load_model(folder, device="cpu")):
        with pytest.raises(ModelMismatchError, match=r"calibration.json was fitted on scores of "
                                                     r"8000 Hz audio .*calibrate again"):
            user.verify(paths[0], paths[2])
    forced = load_model(folder, device="cpu", force=True)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert forced.verify(paths[0], str(tmp_path / "call.wav")).calibrated
    assert caplog.text.count("used anyway") == 1      # once, not at every use
    # calibrated again, it records the fill; a 16 kHz-only calibration records none
    assert model.calibrate(str(trials), str(wav_scp), progress=False).band_fills == \
        {8000: fill.digest}
    assert load_model(folder, device="cpu").verify(paths[0], paths[2]).calibrated
    # it records the fill its scores went through, not one written while it ran
    embed_many = model.embed_many

    def then_replace_fill(*args, **kwargs):
        results = embed_many(*args, **kwargs)
        BandFill(8000, fill.sample_rate, fill.num_mel_bins, fill.kept, fill.filled,
                 fill.weights * 0.5, 3).save(model.band_fill_file(8000))
        return results

    model.embed_many = then_replace_fill
    assert model.calibrate(str(trials), str(wav_scp), progress=False).band_fills == \
        {8000: fill.digest}
    del model.embed_many
    with pytest.raises(ModelMismatchError, match="calibrate again"):
        load_model(folder, device="cpu").verify(paths[0], paths[2])
    fill.save(model.band_fill_file(8000))
    # a broken fill file: info reports it instead of failing
    with open(model.band_fill_file(8000), "wb") as handle:
        handle.write(b"not an npz")
    assert load_model(folder, device="cpu").info()["calibration"].startswith("not used: ")
    os.remove(model.band_fill_file(8000))
    wav_scp.write_text(f"u0 {paths[0]}\nu1 {paths[1]}\nu2 {paths[2]}\n")
    assert model.calibrate(str(trials), str(wav_scp), progress=False).band_fills == {}


def test_the_command_learns_one(tmp_path, labelled_dir, capsys):
    from wespeaker_py.cli.main import main
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    with pytest.raises(SystemExit) as stop:
        main(["band-fill", "--model", folder, "--data", labelled_dir, "--heard_rate", "8000"])
    assert stop.value.code == 0
    err = capsys.readouterr().err
    assert f"band fill written to {os.path.join(folder, 'band_fill_8000hz.npz')}: " in err
    assert "for 8000 Hz audio at 16000 Hz" in err
    with pytest.raises(SystemExit) as stop:
        main(["band-fill", "--model", folder, "--data", labelled_dir, "--heard_rate", "16000"])
    assert stop.value.code == 2
    assert "heard_rate must be a whole number of Hz below the model's 16000 Hz" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["band-fill", "--model", folder, "--data", str(tmp_path / "nothing"),
              "--heard_rate", "8000"])
    assert stop.value.code == 2 and "nothing" in capsys.readouterr().err


def test_the_diarizer_embeds_a_low_rate_recording_through_the_narrowband_function(
        caplog, monkeypatch):
    from wespeaker_py.audio import samples as audio_samples
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    heard = []

    def narrowband_embed(pieces, rate):
        heard.append(rate)
        return np.ones((len(pieces), 4))

    diarizer = Diarizer(lambda pieces: heard.append(0) or np.ones((len(pieces), 4)),
                        DiarizationOptions(vad="energy", num_speakers=1),
                        narrowband_embed=narrowband_embed)
    wide = load_audio(corpus_files(1)[0], RATE) / 32768.0
    diarizer.diarize(soxr.resample(wide, RATE, 8000), 8000)
    assert heard and set(heard) == {8000}
    heard.clear()
    diarizer.diarize(wide, RATE)
    assert heard and set(heard) == {0}
    heard.clear()
    assert "Hz audio (first" not in caplog.text
    # without a narrowband function, low-rate windows go to the plain one, with a warning
    with caplog.at_level(logging.WARNING):
        Diarizer(lambda pieces: heard.append(0) or np.ones((len(pieces), 4)),
                 DiarizationOptions(vad="energy", num_speakers=1)).diarize(
            soxr.resample(wide, RATE, 8000), 8000)
    assert heard and set(heard) == {0}
    assert "the diarizer has no narrowband embedding function" in caplog.text


def test_extraction_fills_files_that_come_at_the_fills_rate(tmp_path, labelled_dir):
    """bin.extract uses the band fills beside the config, per file by the file's own rate,
    as the API does."""
    import json
    from wespeaker_py import load_model
    from wespeaker_py.bin.extract import main as extract_main
    folder = str(tmp_path / "model")
    config_path, checkpoint, _ = make_experiment(folder, bare=True)
    wide = load_audio(corpus_files(1, skip=200)[0], RATE) / 32768.0
    sf.write(tmp_path / "call.wav", soxr.resample(wide, RATE, 8000), 8000, subtype="FLOAT")
    sf.write(tmp_path / "wide.wav", wide, RATE, subtype="FLOAT")
    data_list = tmp_path / "raw.list"
    data_list.write_text("".join(json.dumps({"key": key, "wav": str(tmp_path / f"{key}.wav"),
                                             "spk": "s"}) + "\n" for key in ("call", "wide")))

    def extract(name):
        ark = str(tmp_path / name / "xvector.ark")
        extract_main(["--config", config_path, "--model_path", checkpoint, "--data_type",
                      "raw", "--data_list", str(data_list), "--embed_ark", ark,
                      "--num-workers", "0", "--gpus", "[]"])
        return {key: np.asarray(vector) for key, vector in
                kaldiio.load_scp(ark.replace(".ark", ".scp")).items()}

    plain = extract("plain")
    model = load_model(folder, device="cpu")
    model.train_band_fill(labelled_dir, 8000, progress=False)
    filled = extract("filled")
    np.testing.assert_allclose(filled["call"], model.embed(str(tmp_path / "call.wav")),
                               atol=1e-5)
    np.testing.assert_allclose(filled["wide"], plain["wide"], atol=1e-6)
    assert not np.allclose(filled["call"], plain["call"], atol=1e-4)


@pytest.mark.gpu
def test_the_fill_on_cuda_matches_the_cpu():
    kept, filled = split_bins(RATE, 80, 25, 8000)
    rng = np.random.default_rng(1)
    fill = BandFill(8000, RATE, 80, kept, filled,
                    rng.normal(size=(kept.size + 1, filled.size)) / kept.size, 1)
    narrow = torch.as_tensor(narrowband(load_audio(corpus_files(1)[0], RATE), 8000, RATE))
    frontend = FbankFeatures(RATE, 80, cmn=True).eval()
    on_cpu = frontend(narrow[None], fill)
    on_gpu = frontend(narrow[None].cuda(), fill)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(frontend(narrow[None], fill), on_cpu)   # the CPU cache still


def test_the_narrowband_warning_of_diarization_names_the_recording(tmp_path, monkeypatch,
                                                                   caplog):
    from wespeaker_py import load_model
    from wespeaker_py.audio import samples as audio_samples
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    folder = str(tmp_path / "model")
    make_experiment(folder, bare=True)
    model = load_model(folder, device="cpu")
    call = str(tmp_path / "call.wav")
    write_call(corpus_files(1)[0], call)
    with caplog.at_level(logging.WARNING):
        model.diarizer(vad="energy", window_lda="off").diarize(call, num_speakers=1)
    [message] = [r.getMessage() for r in caplog.records if "Hz audio (first" in r.getMessage()]
    assert message.startswith(f"8000 Hz audio (first: {call} window 0)")
    # a function without a name keyword is called as before, and the recording is named
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        plain = Diarizer(lambda pieces: np.ones((len(pieces), 4)),
                         DiarizationOptions(vad="energy", num_speakers=1))
        plain.diarize(call, recording="rec-7")
    assert "8000 Hz audio (first: rec-7)" in caplog.text
