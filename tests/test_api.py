"""The Python API: load_model on every source kind, embeddings, similarity, calibrated
verification, the speaker gallery, the waveform ONNX graph, and one-line errors."""
import importlib.util
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import wespeaker_py
from api_helpers import MINI_CORPUS, mini_speech, wespeaker_folder
from dataset_helpers import write_audio
from inference_helpers import make_experiment, make_raw_list_corpus
from wespeaker_py.api.calibration import load_calibration
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.errors import AudioInputError, ModelSourceError, WespeakerError
from wespeaker_py.frontend import FbankFeatures
from wespeaker_py.io.ark import load_embeddings
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
from wespeaker_py.scoring.metrics import compute_eer
from wespeaker_py.scoring.trials import read_trials

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed")
# ResNet34's block layout with few channels keeps the test fast; the state_dict
# layout and loading path are those of the full model
SMALL_RESNET34 = {"feat_dim": 80, "embed_dim": 64, "m_channels": 8}
ECAPA_C512 = {"feat_dim": 80, "embed_dim": 192}


@pytest.fixture(scope="module")
def xvec(tmp_path_factory):
    folder, network = wespeaker_folder(str(tmp_path_factory.mktemp("xvec")))
    return wespeaker_py.load_model(folder, device="cpu"), folder, network


@pytest.fixture(scope="module")
def speech():
    return mini_speech(4)


def direct_embedding(network, folder, path):
    """What the network gives for the file through the front-end, bypassing the API."""
    import yaml
    config = yaml.safe_load(open(os.path.join(folder, "config.yaml")))
    frontend = FbankFeatures.from_dataset_args(config["dataset_args"]).eval()
    samples, _ = sf.read(path, dtype="int16")
    with torch.no_grad():
        feats = frontend(torch.from_numpy(samples.astype(np.float32))[None])
        return network(feats)[0].numpy()


@pytest.mark.parametrize("model, args", [("ResNet34", SMALL_RESNET34),
                                         ("ECAPA_TDNN_GLOB_c512", ECAPA_C512)])
def test_wespeaker_model_folders_load_strictly_and_embed(model, args, tmp_path, speech):
    folder, network = wespeaker_folder(str(tmp_path / model), model, args)
    loaded = wespeaker_py.load_model(folder, device="cpu")
    assert isinstance(loaded, wespeaker_py.SpeakerModel)
    embedding = loaded.embed(speech[0])
    assert embedding.shape == (args["embed_dim"],) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, direct_embedding(network, folder, speech[0]),
                               rtol=1e-4, atol=1e-4)
    # strict: one stray tensor in avg_model.pt and the folder no longer loads
    state = torch.load(os.path.join(folder, "avg_model.pt"))
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, os.path.join(folder, "avg_model.pt"))
    with pytest.raises(CheckpointMismatchError, match="extra.weight"):
        wespeaker_py.load_model(folder, device="cpu")


def test_experiment_dir_and_checkpoint_sources_give_the_folder_embeddings(xvec, tmp_path,
                                                                          speech):
    model, folder, _ = xvec
    exp = tmp_path / "exp"
    os.makedirs(exp / "models")
    shutil.copy(os.path.join(folder, "config.yaml"), exp / "config.yaml")
    shutil.copy(os.path.join(folder, "avg_model.pt"), exp / "models" / "avg_model.pt")
    expected = model.embed(speech[0])
    for source, config in ((exp, None), (exp / "models" / "avg_model.pt", None),
                           (os.path.join(folder, "avg_model.pt"),
                            os.path.join(folder, "config.yaml"))):
        other = wespeaker_py.load_model(source, device="cpu", config=config)
        np.testing.assert_array_equal(other.embed(speech[0]), expected)


def test_embed_many_equals_bin_extract(tmp_path):
    config_path, checkpoint, _ = make_experiment(str(tmp_path / "exp"), bare=True)
    list_path, wavs = make_raw_list_corpus(str(tmp_path / "corpus"),
                                           [16000, 12000, 16000, 20000, 16050])
    ark = str(tmp_path / "emb" / "xvector.ark")
    extract_main(["--config", config_path, "--model_path", checkpoint, "--data_type", "raw",
                  "--data_list", list_path, "--embed_ark", ark, "--batch_size", "3",
                  "--num_workers", "0", "--device", "cpu"])
    extracted = load_embeddings(ark[:-4] + ".scp")
    model = wespeaker_py.load_model(str(tmp_path / "exp"), device="cpu")
    results = model.embed_many(wavs, batch_size=3, progress=False)
    assert list(results.embeddings) == list(wavs) and not results.skipped
    for key, embedding in results.embeddings.items():
        np.testing.assert_allclose(embedding, extracted.matrix[extracted.index[key]],
                                   rtol=1e-4, atol=1e-4)
    # batched in-memory waveforms give the same vectors as one by one
    arrays = [sf.read(wavs[key], dtype="float32")[0] for key in wavs]
    batched = model.embed_waveforms(arrays, sample_rate=16000, batch_size=4)
    np.testing.assert_allclose(batched, np.stack(list(results.embeddings.values())),
                               rtol=1e-4, atol=1e-5)


def test_8khz_and_stereo_inputs_follow_the_training_rules(xvec, tmp_path, speech):
    model, _, _ = xvec
    mono, rate = sf.read(speech[0], dtype="float32")
    narrow = soxr.resample(mono, rate, 8000)
    path_8k = write_audio(str(tmp_path / "8k.wav"), narrow, rate=8000, subtype="FLOAT")
    from_file = model.embed(path_8k)
    np.testing.assert_allclose(from_file, model.embed(narrow, sample_rate=8000), rtol=1e-5,
                               atol=1e-6)
    # resampled to 16 kHz, 8 kHz speech is not the 16 kHz original, but close to it
    assert 0.9 < model.score_embeddings(from_file, model.embed(speech[0])) < 1.0

    other, _ = sf.read(speech[1], dtype="float32")
    length = min(len(mono), len(other))
    stereo = np.stack([mono[:length], other[:length]], axis=1)      # [samples, channels]
    path_stereo = write_audio(str(tmp_path / "stereo.wav"), stereo, subtype="FLOAT")
    first_channel = model.embed(mono[:length], sample_rate=rate)
    for audio in (path_stereo, stereo, stereo.T, torch.from_numpy(stereo.T.copy())):
        kwargs = {} if isinstance(audio, str) else {"sample_rate": rate}
        np.testing.assert_allclose(model.embed(audio, **kwargs), first_channel, rtol=1e-5,
                                   atol=1e-6)
    assert not np.allclose(model.embed(other[:length], sample_rate=rate), first_channel)


def test_embed_many_skips_and_reports_bad_items(xvec, tmp_path, speech):
    model, _, _ = xvec
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not a wav file\n")
    short = write_audio(str(tmp_path / "short.wav"),
                        np.random.default_rng(1).integers(-3000, 3000, 800).astype(np.int16))
    silent = write_audio(str(tmp_path / "silent.wav"), np.zeros(16000, np.int16))
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text(f"good1 {speech[0]}\nmissing {tmp_path}/nope.wav\n"
                       f"notaudio {not_audio}\nshort {short}\nsilent {silent}\n"
                       f"good2 {speech[1]}\n")
    results = model.embed_many(str(wav_scp), batch_size=2, progress=False)
    assert list(results.embeddings) == ["good1", "good2"]
    assert set(results.skipped) == {"missing", "notaudio", "short", "silent"}
    assert "does not exist" in results.skipped["missing"]
    assert "needs at least" in results.skipped["short"]
    assert "silent.wav is silent" in results.skipped["silent"]
    np.testing.assert_array_equal(results.embeddings["good2"], model.embed(speech[1]))


def test_a_checkpoint_file_load_says_which_folder_files_it_does_not_use(tmp_path, caplog):
    folder, _ = wespeaker_folder(str(tmp_path / "model"))
    checkpoint = os.path.join(folder, "avg_model.pt")
    with caplog.at_level(logging.WARNING):
        wespeaker_py.load_model(checkpoint, device="cpu")
    assert not caplog.records   # nothing beside it to miss
    np.save(os.path.join(folder, "mean_vec.npy"), np.zeros(8, np.float32))
    with caplog.at_level(logging.WARNING):
        model = wespeaker_py.load_model(checkpoint, device="cpu")
    assert model.mean_vec is None
    assert any("uses avg_model.<name> files, not mean_vec.npy" in record.getMessage()
               for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert wespeaker_py.load_model(folder, device="cpu").mean_vec is not None
    assert not caplog.records


def test_embed_many_embeds_a_path_listed_twice_once_and_says_so(xvec, speech, caplog):
    model, _, _ = xvec
    with caplog.at_level(logging.INFO):
        results = model.embed_many([speech[1], speech[0], speech[1]], progress=False)
    assert list(results.embeddings) == [speech[1], speech[0]]
    assert any("1 paths were listed more than once" in record.getMessage()
               for record in caplog.records)


def test_similarity_is_symmetric_and_one_for_the_same_file(xvec, speech):
    model, _, _ = xvec
    same = model.similarity(speech[0], speech[0])
    assert same == pytest.approx(1.0, abs=1e-6)
    forth, back = model.similarity(speech[0], speech[2]), model.similarity(speech[2], speech[0])
    assert forth == pytest.approx(back, abs=1e-12) and -1.0 <= forth < same


def test_a_very_short_input_is_warned_about(xvec, speech, caplog):
    model, _, _ = xvec
    samples, rate = sf.read(speech[0], dtype="int16")
    with caplog.at_level(logging.WARNING):
        model.similarity(speech[0], speech[1])
        assert caplog.text == ""
        model.similarity(speech[0], samples[:rate // 2], sample_rate=rate)
    assert "0.50 s of audio; the embedding of an input under 1 s is unreliable" in caplog.text


def test_a_mean_vector_in_the_folder_is_subtracted(xvec, tmp_path, speech):
    model, folder, _ = xvec
    copy = shutil.copytree(folder, tmp_path / "with_mean")
    mean = model.embed(speech[3])
    np.save(copy / "mean_vec.npy", mean)
    centred = wespeaker_py.load_model(copy, device="cpu")
    first, second = model.embed(speech[0]), model.embed(speech[1])
    expected = np.dot(first - mean, second - mean) / (
        np.linalg.norm(first - mean) * np.linalg.norm(second - mean))
    assert centred.similarity(speech[0], speech[1]) == pytest.approx(expected, abs=1e-5)


def test_a_recipe_mean_vector_that_the_folder_load_leaves_out_is_named(xvec, tmp_path, caplog):
    _, folder, _ = xvec
    copy = shutil.copytree(folder, tmp_path / "exp")
    with caplog.at_level(logging.INFO):
        wespeaker_py.load_model(copy, device="cpu")
    assert "mean vector" not in caplog.text
    os.makedirs(copy / "embeddings" / "backend")
    recipe_mean = copy / "embeddings" / "backend" / "mean_vec.npy"
    np.save(recipe_mean, np.full(8, 0.1, np.float32))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        wespeaker_py.load_model(copy, device="cpu")
    assert f"the recipe's cosine scores subtracted {recipe_mean}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        wespeaker_py.load_model(copy, device="cpu", mean_vec=str(recipe_mean))
    assert "recipe's cosine scores" not in caplog.text


def test_verify_with_a_calibration_fitted_on_the_mini_corpus(xvec, tmp_path):
    model, folder, _ = xvec
    copy = shutil.copytree(folder, tmp_path / "model")
    model = wespeaker_py.load_model(copy, device="cpu")
    first, second = mini_speech(2)
    uncalibrated = model.verify(first, second)
    assert not uncalibrated.calibrated and uncalibrated.llr is None
    assert "UNCALIBRATED" in uncalibrated.describe()
    # a prior or an operating point means nothing without a calibration: refused, as is
    # an operating point together with a threshold
    for rule in ({"prior": 0.2}, {"operating_point": "fa1"}):
        with pytest.raises(WespeakerError, match="needs a calibration.*wespeaker-py calibrate"):
            model.verify(first, second, **rule)
        with pytest.raises(WespeakerError, match="needs a calibration"):
            model.decide(0.7, **rule)
    assert model.decide(0.7, threshold=0.8).decision is False
    for threshold in (float("nan"), 1.5, -2.0):
        with pytest.raises(WespeakerError, match="cosine score: it must lie between -1 and 1"):
            model.decide(0.7, threshold=threshold)

    # the corpus's first 20 target and 100 nontarget trials (calibrate needs 10 of each)
    trials_path = str(tmp_path / "trials")
    with open(os.path.join(MINI_CORPUS, "trials")) as source:
        corpus_trials = source.readlines()
    lines = [line for line in corpus_trials if line.split()[2] == "target"][:20] + \
        [line for line in corpus_trials if line.split()[2] == "nontarget"][:100]
    with open(trials_path, "w") as out:
        out.writelines(lines)
    needed = {key for line in lines for key in line.split()[:2]}
    wav_scp = tmp_path / "wav.scp"
    with open(os.path.join(MINI_CORPUS, "wav.scp")) as source, open(wav_scp, "w") as out:
        for line in source:
            key, path = line.split()
            if key in needed:
                out.write(f"{key} {os.path.join(MINI_CORPUS, path)}\n")
    calibration = model.calibrate(trials_path, str(wav_scp), progress=False)
    stored = json.loads((copy / "calibration.json").read_text())
    assert stored["weight"] == calibration.weight and stored["bias"] == calibration.bias

    # the stored figures are those of the trial scores, recomputed here independently
    trials = read_trials(trials_path)
    embedded = model.embed_many(str(wav_scp), progress=False).embeddings
    scores = np.array([model.score_embeddings(embedded[trials.enroll_keys[e]],
                                              embedded[trials.test_keys[t]])
                       for e, t in zip(trials.enroll, trials.test)])
    labels = trials.labels.astype(bool)
    assert (stored["num_target"], stored["num_nontarget"]) == (labels.sum(), (~labels).sum())
    assert stored["eer"] == pytest.approx(compute_eer(scores, labels), abs=1e-9)
    fa1 = stored["operating_points"]["fa1"]
    assert np.mean(scores[~labels] > fa1["threshold"]) == pytest.approx(fa1["false_accept"])
    assert fa1["false_accept"] <= 0.01
    eer_point = stored["operating_points"]["eer"]
    assert np.mean(scores[labels] <= eer_point["threshold"]) == \
        pytest.approx(eer_point["false_reject"])
    assert stored["cllr"] <= 1.0 + 1e-9   # never worse than saying nothing

    reloaded = wespeaker_py.load_model(copy, device="cpu")
    assert load_calibration(str(copy / "calibration.json")) == reloaded.calibration
    low, high = (reloaded.verify(first, second, prior=0.2),
                 reloaded.verify(first, first, prior=0.2))
    for result in (low, high):
        # a prior given to a calibrated model: the Bayes rule decides
        assert result.calibrated and (result.rule, result.operating_point) == ("bayes", None)
        assert result.llr == pytest.approx(calibration.weight * result.score + calibration.bias)
        assert result.probability == pytest.approx(
            1 / (1 + np.exp(-(result.llr + np.log(0.2 / 0.8)))))
        assert result.decision == (result.probability > 0.5)
        by_threshold = reloaded.decide(result.score)
        assert (by_threshold.rule, by_threshold.operating_point) == ("threshold", "eer")
        assert by_threshold.decision == (result.score > eer_point["threshold"])
    # a higher score is more likely the same speaker: the LLR orders trials as the score does
    assert calibration.weight > 0
    assert high.score > low.score and high.llr > low.llr
    assert reloaded.verify(first, first, operating_point="fa1").threshold == fa1["threshold"]
    with pytest.raises(WespeakerError, match="operating point .* and a threshold"):
        reloaded.decide(0.3, operating_point="fa1", threshold=0.2)


def test_gallery_round_trip(xvec, tmp_path, speech):
    model, folder, _ = xvec
    gallery = str(tmp_path / "speakers.npz")
    assert model.enroll("alice", speech[0], gallery=gallery) == 1
    assert model.enroll("bob", speech[1], gallery=gallery) == 2
    assert model.enroll("alice", speech[2], gallery=gallery, append=True) == 2
    again = wespeaker_py.load_model(folder, device="cpu")
    ranking = again.identify(speech[1], gallery=gallery, top_k=5)
    assert [name for name, _ in ranking][0] == "bob" and len(ranking) == 2
    assert ranking[0][1] == pytest.approx(1.0, abs=1e-6)
    assert all(-1.0 <= score <= 1.0 for _, score in ranking)
    # alice's entry is the mean of her two recordings
    alice = model.unit(model.embed(speech[0])) + model.unit(model.embed(speech[2]))
    alice /= np.linalg.norm(alice)
    probe = model.unit(model.embed(speech[3]))
    scores = dict(model.identify(speech[3], gallery=gallery))
    assert scores["alice"] == pytest.approx(float(alice @ probe), abs=1e-6)
    assert sorted(os.listdir(tmp_path)) == ["speakers.npz"]   # no temporary files left


def test_a_gallery_of_another_model_is_refused(xvec, tmp_path, speech):
    model, _, _ = xvec
    gallery = str(tmp_path / "g.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    folder, _ = wespeaker_folder(str(tmp_path / "other"), "XVEC",
                                 {"feat_dim": 16, "hid_dim": 16, "stats_dim": 24,
                                  "embed_dim": 6})
    other = wespeaker_py.load_model(folder, device="cpu")
    with pytest.raises(WespeakerError, match="enrolled with XVEC/emb8"):
        other.identify(speech[0], gallery=gallery)


def test_unenroll_removes_a_speaker_and_an_emptied_gallery_is_named_on_identify(
        xvec, tmp_path, speech):
    from wespeaker_py.api.gallery import (EmptyGalleryError, SpeakerNotEnrolledError,
                                          read_gallery)
    model, _, _ = xvec
    gallery = str(tmp_path / "speakers.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    model.enroll("bob", speech[1], gallery=gallery)
    recorded = read_gallery(gallery)
    with pytest.raises(SpeakerNotEnrolledError,
                       match=r"'alcie' is not enrolled; it holds alice, bob; did you mean "
                             r"'alice'\?"):
        model.unenroll("alcie", gallery=gallery)
    assert model.unenroll("alice", gallery=gallery) == 1
    assert [name for name, _ in model.identify(speech[0], gallery=gallery)] == ["bob"]
    assert model.unenroll("bob", gallery=gallery) == 0
    emptied = read_gallery(gallery)   # still a valid gallery, its model records intact
    assert (emptied.names, emptied.counts.tolist(), emptied.sums.shape) == ([], [], (0, 8))
    assert (emptied.model, emptied.identity, emptied.mean_vec) == \
        (recorded.model, recorded.identity, recorded.mean_vec)
    with pytest.raises(EmptyGalleryError) as refused:
        model.identify(speech[0], gallery=gallery)
    assert str(refused.value).startswith(f"gallery {gallery} holds no speakers")
    assert "enroll" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(SpeakerNotEnrolledError, match="it holds no speakers"):
        model.unenroll("bob", gallery=gallery)
    assert model.enroll("carol", speech[2], gallery=gallery) == 1
    assert sorted(os.listdir(tmp_path)) == ["speakers.npz"]   # no temporary files left
    with pytest.raises(WespeakerError, match="none.npz does not exist"):
        model.unenroll("bob", gallery=str(tmp_path / "gone" / "none.npz"))
    assert not (tmp_path / "gone").exists()


def test_a_recording_given_twice_in_one_enrolment_counts_once(xvec, tmp_path, speech, caplog):
    from wespeaker_py.api.gallery import read_gallery
    model, _, _ = xvec
    gallery = str(tmp_path / "speakers.npz")
    with caplog.at_level(logging.WARNING):
        model.enroll("alice", speech[0], speech[1], speech[0], gallery=gallery)
    [warning] = [record.getMessage() for record in caplog.records
                 if "given more than once" in record.getMessage()]
    assert f"recording 3 ({speech[0]}) repeats recording 1 ({speech[0]})" in warning
    stored = read_gallery(gallery)
    assert stored.counts.tolist() == [2]
    np.testing.assert_allclose(stored.sums[0], model.unit(model.embed(speech[0]))
                               + model.unit(model.embed(speech[1])), atol=1e-6)
    # the same audio as arrays, twice
    samples, rate = sf.read(speech[2], dtype="float32")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model.enroll("bob", samples, samples.copy(), gallery=gallery, sample_rate=rate)
    assert any("recording 2 (<ndarray of shape" in r.getMessage() for r in caplog.records)
    assert read_gallery(gallery).counts.tolist() == [2, 1]


def test_a_recording_appended_again_in_a_later_call_counts_once(
        xvec, tmp_path, speech, caplog):
    from wespeaker_py.api.gallery import RECORDING_ARRAYS, read_gallery, save_gallery
    model, _, _ = xvec
    gallery = str(tmp_path / "speakers.npz")
    model.enroll("alice", speech[0], speech[1], gallery=gallery)
    with caplog.at_level(logging.WARNING):
        model.enroll("alice", speech[1], speech[2], gallery=gallery, append=True)
    [warning] = [record.getMessage() for record in caplog.records if "--append" in
                 record.getMessage()]
    assert warning == (f"enroll 'alice' --append: 1 of 2 recordings are already enrolled for "
                       f"this speaker (identical embeddings), not counted again: {speech[1]}")
    stored = read_gallery(gallery)
    assert stored.counts.tolist() == [3]
    units = [model.unit(model.embed(path)) for path in speech[:3]]
    np.testing.assert_allclose(stored.sums[0], sum(units), atol=1e-6)
    # nothing new: the file is left as it is
    before = open(gallery, "rb").read()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert model.enroll("alice", speech[0], gallery=gallery, append=True) == 1
    assert "all recordings are already enrolled" in caplog.text
    assert open(gallery, "rb").read() == before
    # another speaker may hold the same recording; replace forgets what was held
    model.enroll("bob", speech[0], gallery=gallery)
    model.enroll("alice", speech[3], gallery=gallery, replace=True)
    model.enroll("alice", speech[0], gallery=gallery, append=True)
    assert read_gallery(gallery).counts.tolist() == [2, 1]
    # unenrolling forgets them too
    model.unenroll("bob", gallery=gallery)
    model.enroll("bob", speech[0], gallery=gallery)
    assert read_gallery(gallery).counts.tolist() == [2, 1]
    # a gallery written before recordings were recorded knows only those enrolled since
    old = read_gallery(gallery)
    old.recordings = {}
    save_gallery(gallery, old)
    with np.load(gallery) as arrays:
        stored_arrays = {name: arrays[name] for name in arrays.files
                         if name not in RECORDING_ARRAYS}
    np.savez(gallery, **stored_arrays)
    model.enroll("alice", speech[0], gallery=gallery, append=True)
    assert read_gallery(gallery).counts.tolist() == [3, 1]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model.enroll("alice", speech[0], gallery=gallery, append=True)
    assert "already enrolled" in caplog.text and read_gallery(gallery).counts.tolist() == [3, 1]


@needs_onnx
def test_onnx_graph_with_front_end_equals_eager(xvec, tmp_path, speech, caplog, monkeypatch):
    from wespeaker_py.api.exporting import export_waveform_graph
    from wespeaker_py.audio import samples as audio_samples
    model, _, _ = xvec
    path = str(tmp_path / "model.onnx")
    export_waveform_graph(model, path)
    graph = wespeaker_py.load_model(path)
    assert (graph.sample_rate, graph.embed_dim) == (model.sample_rate, model.embed_dim)
    assert graph.min_seconds == pytest.approx(model.min_seconds, abs=1e-3)
    for item in speech[:3]:
        np.testing.assert_allclose(graph.embed(item), model.embed(item), rtol=1e-3, atol=1e-3)
    eight_k = soxr.resample(sf.read(speech[0], dtype="float32")[0], 16000, 8000)
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    with caplog.at_level(logging.WARNING):
        from_graph = graph.embed(eight_k, sample_rate=8000)
    assert "the model has no band fill for 8000 Hz" in caplog.text
    np.testing.assert_allclose(from_graph, model.embed(eight_k, sample_rate=8000),
                               rtol=1e-3, atol=1e-3)


def _made_up_band_fill(prefix, num_mel_bins, heard_rate=8000):
    """A band fill with made-up weights at ``prefix`` + its name (a folder with its
    separator, or ``model.`` beside ``model.onnx``): the graph must apply whatever fill
    it is given, as the torch model does."""
    from wespeaker_py.frontend.band_fill import BandFill, band_fill_name, split_bins
    kept, filled = split_bins(16000, num_mel_bins, 25, heard_rate)
    # weights far from anything learnt, so that filled and unfilled embeddings differ
    weights = np.random.default_rng(3).normal(0.0, 1.0, (kept.size + 1, filled.size))
    fill = BandFill(heard_rate, 16000, num_mel_bins, kept, filled, weights)
    fill.save(prefix + band_fill_name(heard_rate))
    return fill


@needs_onnx
def test_onnx_graph_takes_the_models_band_fill_and_files_along(xvec, tmp_path, speech, caplog,
                                                               monkeypatch):
    from wespeaker_py.audio import load_audio, samples as audio_samples
    from wespeaker_py.cli.main import main as cli_main
    torch_model, source_folder, _ = xvec
    folder = str(tmp_path / "model")
    shutil.copytree(source_folder, folder)
    _made_up_band_fill(os.path.join(folder, ""),
                       torch_model.backend.embedder.frontend.num_mel_bins)
    np.save(os.path.join(folder, "mean_vec.npy"), np.linspace(-1, 1, 8, dtype=np.float32))
    # only read when used: their bytes must travel unchanged
    for name in ("calibration.json", "window_lda.npz", "window_lda_8000hz.npz"):
        with open(os.path.join(folder, name), "w") as handle:
            handle.write(f"stands for {name}")
    model = wespeaker_py.load_model(folder, device="cpu")
    out = tmp_path / "out"
    os.makedirs(out)
    (out / "model.band_fill_11025hz.npz").write_text("an earlier export's")
    path = str(out / "model.onnx")
    with pytest.raises(SystemExit) as finished:
        cli_main(["export", "--model", folder, "--onnx", path, "--with_frontend"])
    assert finished.value.code == 0
    assert sorted(os.listdir(out)) == [
        "model.band_fill_8000hz.npz", "model.calibration.json", "model.mean_vec.npy",
        "model.onnx", "model.window_lda.npz", "model.window_lda_8000hz.npz"]
    for name in ("calibration.json", "window_lda.npz", "window_lda_8000hz.npz"):
        assert (out / f"model.{name}").read_text() == f"stands for {name}"
    graph = wespeaker_py.load_model(path)
    np.testing.assert_array_equal(graph.mean_vec, model.mean_vec)
    assert graph.backend.describe()["band_fill_input"] is True
    assert list(graph.band_fills()) == [8000]

    wide, _ = sf.read(speech[0], dtype="float32")
    narrow = soxr.resample(wide, 16000, 8000)
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    with caplog.at_level(logging.WARNING):
        filled = graph.embed(narrow, sample_rate=8000)
    assert "band fill" not in caplog.text
    np.testing.assert_allclose(filled, model.embed(narrow, sample_rate=8000),
                               rtol=1e-4, atol=1e-4)
    # wide-band audio of the same length in the same call is not filled
    wide_file = write_audio(str(tmp_path / "wide.wav"), wide)
    narrow_file = write_audio(str(tmp_path / "narrow.wav"), narrow, rate=8000)
    assert len(load_audio(wide_file, 16000)) == len(load_audio(narrow_file, 16000))
    both = graph.embed_many([wide_file, narrow_file], batch_size=2, progress=False)
    for alone in (wide_file, narrow_file):
        np.testing.assert_allclose(both.embeddings[alone], graph.embed(alone),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(graph.embed(narrow_file), filled, rtol=1e-4, atol=1e-4)

    os.remove(out / "model.band_fill_8000hz.npz")
    unfilled = wespeaker_py.load_model(path).embed(narrow, sample_rate=8000)
    assert np.abs(unfilled - filled).max() > 1e-3   # ten times the tolerance above


@pytest.mark.gpu
@needs_onnx
def test_a_model_loaded_on_cuda_exports_and_stays_on_cuda(xvec, tmp_path, speech):
    from wespeaker_py.api.exporting import export_waveform_graph
    _, folder, _ = xvec
    model = wespeaker_py.load_model(folder, device="cuda")
    before = model.embed(speech[0])
    [path] = export_waveform_graph(model, str(tmp_path / "model.onnx"))
    assert next(model.backend.embedder.model.parameters()).is_cuda
    np.testing.assert_allclose(model.embed(speech[0]), before, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wespeaker_py.load_model(path).embed(speech[0]), before,
                               rtol=1e-3, atol=1e-3)


@needs_onnx
def test_an_export_with_a_band_fill_that_does_not_fit_writes_nothing(xvec, tmp_path):
    from wespeaker_py.api.exporting import export_waveform_graph
    from wespeaker_py.frontend.band_fill import BandFillError
    _, source_folder, _ = xvec
    folder = str(tmp_path / "model")
    shutil.copytree(source_folder, folder)
    _made_up_band_fill(os.path.join(folder, ""), 80)   # the model's fbank has 16 bins
    model = wespeaker_py.load_model(folder, device="cpu")
    with pytest.raises(BandFillError, match="is for 80 mel bins at 16000 Hz"):
        export_waveform_graph(model, str(tmp_path / "out") + "/")
    assert not (tmp_path / "out").exists()   # the folder it names was left behind, empty


@needs_onnx
def test_a_failed_export_into_a_new_folder_removes_the_folder_it_made(xvec, tmp_path,
                                                                      monkeypatch):
    from wespeaker_py.api import exporting
    _, folder, _ = xvec
    model = wespeaker_py.load_model(folder, device="cpu")

    def fail(*_, **__):
        raise RuntimeError("the graph differs from eager")
    monkeypatch.setattr(exporting, "export_waveform_onnx", fail)
    with pytest.raises(RuntimeError, match="differs"):
        exporting.export_waveform_graph(model, str(tmp_path / "new") + "/")
    assert not (tmp_path / "new").exists()
    os.makedirs(tmp_path / "kept")   # a folder the user made stays
    with pytest.raises(RuntimeError, match="differs"):
        exporting.export_waveform_graph(model, str(tmp_path / "kept") + "/")
    assert os.listdir(tmp_path / "kept") == []


@needs_onnx
@pytest.mark.parametrize("records_frontend, advice", [
    (True, "export it again"),
    (False, "if its front-end is fbank, export it again")])   # graphs of earlier exports
def test_a_graph_exported_without_the_band_fill_input_says_to_export_again(
        xvec, tmp_path, speech, caplog, monkeypatch, records_frontend, advice):
    from wespeaker_py.api import exporting
    from wespeaker_py.audio import samples as audio_samples
    from wespeaker_py.export import waveform_onnx

    class EarlierEmbedder(waveform_onnx.WaveformEmbedder):   # as graphs were exported before
        def __init__(self, features, model):
            super().__init__(features, model)
            self.takes_band_fill = False

    def earlier_export(features, model, output_model, info, min_samples, **kwargs):
        if not records_frontend:
            info = {key: value for key, value in info.items() if key != "frontend"}
        return waveform_onnx.export_waveform_onnx(features, model, output_model, info,
                                                  min_samples, **kwargs)

    monkeypatch.setattr(waveform_onnx, "WaveformEmbedder", EarlierEmbedder)
    monkeypatch.setattr(exporting, "export_waveform_onnx", earlier_export)
    model, _, _ = xvec
    path = str(tmp_path / "model.onnx")
    exporting.export_waveform_graph(model, path)
    _made_up_band_fill(str(tmp_path / "model."), model.backend.embedder.frontend.num_mel_bins)
    graph = wespeaker_py.load_model(path)
    assert not graph.backend.takes_band_fills
    monkeypatch.setattr(audio_samples, "_rates_warned", set())
    narrow = soxr.resample(sf.read(speech[0], dtype="float32")[0], 16000, 8000)
    with caplog.at_level(logging.WARNING):
        graph.embed(narrow, sample_rate=8000)
    assert f"exported without a band_fill input: {advice} ('wespeaker-py" in caplog.text


def test_bad_audio_gives_one_line_errors_naming_the_input(xvec, tmp_path):
    model, _, _ = xvec
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello\n")
    empty = write_audio(str(tmp_path / "empty.wav"), np.zeros(0, np.int16))
    nan = write_audio(str(tmp_path / "nan.wav"), np.full(16000, np.nan, np.float32),
                      subtype="FLOAT")
    short = write_audio(str(tmp_path / "short.wav"),
                        np.random.default_rng(0).integers(-3000, 3000, 1600).astype(np.int16))
    silent = write_audio(str(tmp_path / "silent.wav"), np.zeros(16000, np.int16))
    cases = [(str(tmp_path / "missing.wav"), {}, "missing.wav does not exist"),
             (str(tmp_path), {}, "is a folder"),
             (str(not_audio), {}, "notes.wav"),
             (empty, {}, "empty.wav"),
             (nan, {}, "nan.wav: the audio contains NaN"),
             (np.full(16000, np.nan, np.float32), {"sample_rate": 16000}, "contains NaN"),
             (np.zeros(0, np.float32), {"sample_rate": 16000}, "empty"),
             (np.zeros(16000, np.float32), {}, "give sample_rate="),
             (np.zeros((2, 3, 4), np.float32), {"sample_rate": 16000}, "expected"),
             (short, {},
              r"short.wav: 0.100 s of audio \(1600 samples\); the model needs at least "
              r"0.175 s \(2800\)"),
             (silent, {}, "silent.wav is silent: all 16000 samples are zero"),
             (np.zeros((2, 8000), np.int16), {"sample_rate": 8000}, "is silent")]
    for audio, kwargs, message in cases:
        with pytest.raises(AudioInputError, match=message) as caught:
            model.embed(audio, **kwargs)
        assert "\n" not in str(caught.value)


def test_bad_model_sources_say_what_to_place_where(xvec, tmp_path):
    _, folder, _ = xvec
    no_config = tmp_path / "no_config"
    os.makedirs(no_config)
    shutil.copy(os.path.join(folder, "avg_model.pt"), no_config)
    no_weights = tmp_path / "no_weights"
    os.makedirs(no_weights)
    shutil.copy(os.path.join(folder, "config.yaml"), no_weights)
    not_onnx = tmp_path / "bad.onnx"
    not_onnx.write_text("not a graph")
    cases = [(tmp_path / "nowhere", "nowhere does not exist"),
             (no_config, f"has no config.yaml: place .* at {no_config}/config.yaml"),
             (no_weights, f"place avg_model.pt at {no_weights}/avg_model.pt"),
             (not_onnx, "bad.onnx: not a readable ONNX model")]
    for source, message in cases:
        with pytest.raises(ModelSourceError, match=message):
            wespeaker_py.load_model(source, device="cpu")


def test_a_broken_config_is_named_once_in_the_error(xvec, tmp_path):
    _, folder, _ = xvec
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = broken / "config.yaml"
    for text, problem in (("model: [\n", r":2: invalid YAML"),
                          ("model: XVEC\nmodel_args: {feat_dim: 80}\n"
                           "dataset_args: {resample_rat: 8000}\n",
                           r": unknown config key 'dataset_args.resample_rat'")):
        config.write_text(text)
        with pytest.raises(ModelSourceError) as refused:
            wespeaker_py.load_model(str(broken), device="cpu")
        message = str(refused.value)
        assert re.match(re.escape(str(config)) + problem, message), message
        assert message.count(str(config)) == 1, message


@needs_onnx
def test_an_onnx_graph_of_another_kind_is_refused(xvec, tmp_path):
    from wespeaker_py.api.exporting import export_feats_onnx
    model, _, _ = xvec
    path = str(tmp_path / "feats.onnx")
    export_feats_onnx(model, path)
    with pytest.raises(ModelSourceError, match=r"feats.onnx is an ONNX model of another kind"):
        wespeaker_py.load_model(path)
