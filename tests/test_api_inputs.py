"""The API's inputs: a wav.scp read by the one reader; embeddings without a direction, or not
of the model's size, refused by name instead of giving a cosine of 0 or NaN or a numpy error;
scores that are no cosine, and labels that are not a trial list's, refused as well."""
import numpy as np
import pytest

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from wespeaker_py.api.gallery import Gallery, ZeroEmbeddingError
from wespeaker_py.api.model import EmbeddingShapeError, SpeakerModel
from wespeaker_py.errors import WespeakerError
from wespeaker_py.utils.paths import InputFileError
from wespeaker_py.utils.tables import DataFormatError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder, _ = wespeaker_folder(str(tmp_path_factory.mktemp("xvec")))
    return wespeaker_py.load_model(folder, device="cpu")


def test_embed_many_refuses_a_wav_scp_as_embed_wav_scp_does(tmp_path, model):
    empty, blank, folder = tmp_path / "empty.scp", tmp_path / "blank.scp", tmp_path / "dir.scp"
    empty.write_text("")
    blank.write_text("\n  \n")
    folder.mkdir()
    bad = tmp_path / "bad.scp"
    bad.write_text("only-a-key\n")
    binary = tmp_path / "binary.scp"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    cases = [(empty, InputFileError, "empty.scp is empty"),
             (blank, DataFormatError, "blank.scp: the list is empty"),
             (folder, InputFileError, "dir.scp is a folder"),
             (tmp_path / "missing.scp", InputFileError, "missing.scp does not exist"),
             (bad, DataFormatError, "bad.scp:1: expected"),
             (binary, DataFormatError, "binary.scp:1: not UTF-8 text")]
    for path, error, message in cases:
        with pytest.raises(error, match=message):
            model.embed_many(str(path), progress=False)
    good = tmp_path / "good.scp"
    good.write_text(f"utt1 {mini_speech(1)[0]}\n")
    assert list(model.embed_many(str(good), progress=False).embeddings) == ["utt1"]


def test_unit_refuses_an_embedding_without_a_direction(model):
    rng = np.random.default_rng(0)
    vector = rng.standard_normal(model.embed_dim).astype(np.float32)
    assert np.isclose(np.linalg.norm(model.unit(vector)), 1.0)
    zeros = np.zeros(model.embed_dim, np.float32)
    with pytest.raises(ZeroEmbeddingError, match="the embedding of probe.wav is all zeros"):
        model.unit(zeros, "probe.wav")
    with pytest.raises(ZeroEmbeddingError, match="the embedding of the second input is all zeros"):
        model.score_embeddings(vector, zeros)
    with pytest.raises(ZeroEmbeddingError, match="the embedding of the first input holds NaN"):
        model.score_embeddings(np.full(model.embed_dim, np.nan), vector)
    centred = SpeakerModel(model.backend, model.name, model.source, mean_vec=vector)
    with pytest.raises(ZeroEmbeddingError, match="of utt7 equals the model's mean"):
        centred.score_embeddings(rng.standard_normal(model.embed_dim), vector, "utt3", "utt7")


def test_an_embedding_of_another_size_or_shape_is_refused_by_name(tmp_path, model):
    # these once failed in numpy's matmul/broadcasting, or with a TypeError about scalars
    dim = model.embed_dim
    vector = np.random.default_rng(1).standard_normal(dim)
    with pytest.raises(EmbeddingShapeError, match=f"the embedding of the second input has "
                                                  f"{dim - 1} values, this model's embeddings "
                                                  f"have {dim}"):
        model.score_embeddings(vector, vector[1:])
    with pytest.raises(EmbeddingShapeError, match=rf"the embedding of utt7 has shape \(2, "
                                                  rf"{dim // 2}\), not one vector of this "
                                                  rf"model's {dim} values"):
        model.score_embeddings(vector, vector.reshape(2, dim // 2), "utt3", "utt7")
    with pytest.raises(EmbeddingShapeError, match="the embedding of the first input has shape"):
        model.score_embeddings(np.stack([vector, vector]), vector)
    # a batch of one is one vector
    assert model.score_embeddings(vector[None, :], vector) == pytest.approx(1.0)
    mean_path = tmp_path / "mean.npy"
    np.save(mean_path, np.zeros(dim, np.float32))
    centred = wespeaker_py.load_model(model.source, device="cpu", mean_vec=str(mean_path))
    with pytest.raises(EmbeddingShapeError, match=f"the embedding of the second input has "
                                                  f"{dim + 1} values"):
        centred.score_embeddings(vector, np.append(vector, 1.0))


def test_a_mean_vector_not_of_the_models_size_is_refused_when_the_model_is_made(tmp_path, model):
    # given to SpeakerModel directly it was taken, and every later cosine failed in numpy
    dim = model.embed_dim
    for wrong in (np.zeros(dim - 1), np.zeros((1, dim))):
        with pytest.raises(EmbeddingShapeError, match=rf"the mean vector has shape "
                                                      rf"\({wrong.shape[0]},.*this model's "
                                                      rf"{dim} values"):
            SpeakerModel(model.backend, model.name, model.source, mean_vec=wrong)
    mean_path = tmp_path / "mean.npy"
    np.save(mean_path, np.zeros(dim + 2, np.float32))
    with pytest.raises(WespeakerError, match=rf"^{mean_path}: the mean vector has shape "
                                             rf"\({dim + 2},\)"):
        wespeaker_py.load_model(model.source, device="cpu", mean_vec=str(mean_path))


def test_decide_refuses_a_score_that_is_no_cosine(model):
    # a NaN once decided "different speakers"; the model here has no calibration
    for score in (float("nan"), 2.0):
        with pytest.raises(WespeakerError, match=f"is a cosine: .* got {score}"):
            model.decide(score)
    assert model.decide(0.7).decision


def test_calibration_of_scores_reads_the_labels_of_trial_lists_and_refuses_others(model):
    rng = np.random.default_rng(2)
    labels = [True] * 20 + [False] * 20
    scores = np.clip(rng.normal(0.2, 0.2, 40) + 0.4 * np.array(labels), -1, 1)
    from_booleans = model.calibration_of_scores(scores, labels, "trials", [])
    words = ["target" if label else "nontarget" for label in labels]
    from_words = model.calibration_of_scores(scores, words, "trials", [])
    assert (from_words.weight, from_words.bias, from_words.num_target) == (
        from_booleans.weight, from_booleans.bias, from_booleans.num_target)
    # +1/-1 once made every trial a target: "0 nontarget trial(s)"
    with pytest.raises(WespeakerError, match=r"cannot calibrate on trials: labels must be "
                                             r"1/True .* got -1, 1$"):
        model.calibration_of_scores(scores, [1 if label else -1 for label in labels],
                                    "trials", [])


def test_enroll_and_identify_name_the_recording_of_no_direction(tmp_path, model, monkeypatch):
    speech = mini_speech(2)
    gallery = str(tmp_path / "gallery.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    before = open(gallery, "rb").read()
    monkeypatch.setattr(model, "_embed_heard",
                        lambda audio, rate, channel: (np.zeros(model.embed_dim, np.float32), 0))
    with pytest.raises(ZeroEmbeddingError, match=f"the embedding of {speech[1]} is all zeros"):
        model.enroll("bob", speech[1], gallery=gallery)
    assert open(gallery, "rb").read() == before                  # left as it was
    with pytest.raises(ZeroEmbeddingError, match=f"the embedding of {speech[1]} is all zeros"):
        model.identify(speech[1], gallery=gallery)


def test_gallery_names_a_speaker_whose_mean_has_no_direction():
    speakers = Gallery(model="m")
    speakers.add("alice", np.array([[1.0, 0.0, 0.0]]))
    speakers.add("echo", np.array([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]))   # cancel out
    with pytest.raises(ZeroEmbeddingError, match="speaker\\(s\\) echo of the gallery"):
        speakers.rank(np.array([1.0, 0.0, 0.0]), top_k=2)
    speakers.add("echo", np.array([[0.0, 1.0, 0.0]]), replace=True)
    assert [name for name, _ in speakers.rank(np.array([1.0, 0.0, 0.0]), 2)] == ["alice", "echo"]
