"""Long inputs are embedded in chunks (bounded memory); short ones exactly as before.

The long-audio threshold is lowered through :class:`LongAudioPolicy` so that ~20 s
of real speech (the mini corpus's utterances back to back) counts as long.
"""
import importlib.util

import numpy as np
import pytest
import soundfile as sf
import torch

from api_helpers import mini_speech
from inference_helpers import randomise_batchnorm
from wespeaker_py.export.metadata import model_info
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.frontend.framing import frame_params, frame_span, samples_for_frames
from wespeaker_py.models import get_model
from wespeaker_py.models.eres2net import ERes2Net
from wespeaker_py.models.gemini_dfresnet import GeminiDFResNet
from wespeaker_py.models.res2net import Res2Net
from wespeaker_py.runtime import long_audio
from wespeaker_py.runtime.builder import SpeakerEmbedder
from wespeaker_py.runtime.engine import TorchBackend
from wespeaker_py.runtime.long_audio import LongAudioPolicy

FEAT_DIM = 40
# the other families whose tail is MapPoolingHead, narrowed to test size
SMALL_FAMILIES = {
    "Res2Net": lambda: Res2Net(4, [1, 2, 1, 1], feat_dim=FEAT_DIM, embed_dim=16),
    "ERes2Net": lambda: ERes2Net(4, [1, 2, 1, 1], feat_dim=FEAT_DIM, embed_dim=16),
    # its frequency axis is halved four times: 80 bins, as WeSpeaker's configs use
    "GeminiDFResNet": lambda: GeminiDFResNet([1, 1, 1, 1], [4, 4, 8, 16, 32], feat_dim=80,
                                             embed_dim=16),
}
WHOLE = LongAudioPolicy(threshold_seconds=1e9)      # never chunked
CHUNKED = LongAudioPolicy(threshold_seconds=3.0, chunk_seconds=2.0)


@pytest.fixture(scope="module")
def speech():
    """~19 s of real speech of six speakers, int16 scale, float32."""
    return np.concatenate([sf.read(path, dtype="int16")[0]
                           for path in mini_speech(6)]).astype(np.float32)


def _backend(name, model_args, policy):
    torch.manual_seed(0)
    model = (get_model(name, feat_dim=FEAT_DIM, **model_args) if name not in SMALL_FAMILIES
             else SMALL_FAMILIES[name]())
    randomise_batchnorm(model, 0)
    embedder = SpeakerEmbedder(FbankFeatures(num_mel_bins=getattr(model, "feat_dim", FEAT_DIM)),
                               model.eval())
    return TorchBackend(embedder, torch.device("cpu"), long_audio=policy)


def _embed(backend, wav):
    return backend.embed(backend.prepare(wav)[None])[0]


def _count_chunks(monkeypatch, backend):
    """Count the chunks the model body runs on (exact path: pooling_input calls)."""
    calls = []
    model = backend.embedder.model
    original = model.pooling_input if hasattr(model, "pooling_input") else model.forward

    def counted(x):
        calls.append(x.shape[1])
        return original(x)
    monkeypatch.setattr(model, "pooling_input" if hasattr(model, "pooling_input")
                        else "forward", counted)
    return calls


@pytest.mark.parametrize("name,model_args", [
    ("ResNet34", {"embed_dim": 32, "m_channels": 4}),
    ("XVEC", {"embed_dim": 16, "hid_dim": 32, "stats_dim": 48}),
    ("Res2Net", {}), ("ERes2Net", {}), ("GeminiDFResNet", {}),
])
def test_frame_local_model_gives_the_whole_utterance_embedding(speech, monkeypatch, name,
                                                               model_args):
    whole = _embed(_backend(name, model_args, WHOLE), speech)
    backend = _backend(name, model_args, CHUNKED)
    chunks = _count_chunks(monkeypatch, backend)
    chunked = _embed(backend, speech)
    frames = backend.prepare(speech).shape[0]
    assert len(chunks) >= frames // 200 - 1  # ~2 s cores: the long path ran, in pieces
    assert max(chunks) < frames
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_ecapa_mean_of_chunks_is_close_to_the_whole_utterance_embedding(speech, monkeypatch):
    model_args = {"embed_dim": 32}
    whole = _embed(_backend("ECAPA_TDNN_c512", model_args, WHOLE), speech)
    backend = _backend("ECAPA_TDNN_c512", model_args,
                       LongAudioPolicy(threshold_seconds=3.0, chunk_seconds=5.0))
    chunks = _count_chunks(monkeypatch, backend)
    chunked = _embed(backend, speech)
    assert len(chunks) == 4 and max(chunks) - min(chunks) <= 1  # near-equal ~4.9 s chunks
    cosine = whole @ chunked / np.linalg.norm(whole) / np.linalg.norm(chunked)
    assert 0.95 < cosine < 1.0 - 1e-7  # close, yet an approximation (not the whole path)


def test_short_input_is_bit_identical_and_never_chunked(speech, monkeypatch):
    backend = _backend("ECAPA_TDNN_c512", {"embed_dim": 32}, LongAudioPolicy())
    embedder = backend.embedder

    def refuse(*args, **kwargs):
        raise AssertionError("a short input took the long-audio path")
    monkeypatch.setattr(long_audio, "embed_long", refuse)
    monkeypatch.setattr(FbankFeatures, "features_in_chunks", refuse)
    monkeypatch.setattr("wespeaker_py.runtime.engine.embed_long", refuse)
    with torch.inference_mode():
        before = embedder.model(embedder.frontend(torch.as_tensor(speech)[None]))[0].numpy()
    assert np.array_equal(_embed(backend, speech), before)


def test_chunked_fbank_equals_the_whole_fbank(speech):
    frontend = FbankFeatures(num_mel_bins=FEAT_DIM).eval()
    wav = torch.as_tensor(speech)
    whole = frontend(wav[None])
    chunked = frontend.features_in_chunks(wav, chunk_frames=173)
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-4)


def test_the_samples_of_frames_give_exactly_those_frames(speech):
    frontend = FbankFeatures(num_mel_bins=FEAT_DIM).eval()
    wav = torch.as_tensor(speech[:16000])
    window, shift = frame_params(16000)
    whole = frontend.log_mel(wav[None])[0]
    for start, stop in ((0, 1), (0, 98), (5, 6), (37, 98)):
        piece = wav[frame_span(start, stop, window, shift)]
        assert len(piece) == samples_for_frames(stop - start, 16000)
        torch.testing.assert_close(frontend.log_mel(piece[None])[0], whole[start:stop],
                                   rtol=0, atol=1e-4)


def test_chunk_spans_keep_every_output_frame_once():
    geometry = long_audio.BodyGeometry(stride=8, margin=232)
    frames = 10_000
    spans = long_audio.chunk_spans(frames, 1000, geometry)
    kept = []
    for start, stop, keep_start, keep_stop in spans:
        outputs = -(-(stop - start) // 8)  # a padded stride-8 body: ceil
        kept.extend(range(start // 8 + keep_start,
                          start // 8 + (outputs if keep_stop is None else keep_stop)))
        assert start % 8 == 0 and stop - start <= 1000 + 2 * 232
    assert kept == list(range(-(-frames // 8)))


def test_the_frame_local_families_are_exactly_those_whose_body_is_local_in_time():
    """Chunking is exact only for these; ECAPA, SimAM-ResNet, CAM++ and ReDimNet look at
    the whole input before pooling (squeeze-excitation, SimAM, context-aware masking,
    attention), and RepVGG (local without SE) does not offer the members."""
    import importlib
    import inspect
    from wespeaker_py.models import family_module_name, list_models
    from wespeaker_py.models.protocol import is_frame_local
    local = set()
    for module_name in sorted({family_module_name(name) for name in list_models()}):
        module = importlib.import_module(f"wespeaker_py.models.{module_name}")
        for name, cls in vars(module).items():
            if (inspect.isclass(cls) and cls.__module__ == module.__name__
                    and callable(getattr(cls, "pooling_input", None))
                    and callable(getattr(cls, "embedding_of_pooled", None))):
                local.add(name)
    assert local == {"ResNet", "Res2Net", "ERes2Net", "GeminiDFResNet", "XVEC"}
    # instances are asked by attribute: 'pool' is a sub-module, which a static lookup
    # (a Protocol isinstance from Python 3.12) would not find
    assert is_frame_local(get_model("XVEC", feat_dim=FEAT_DIM, embed_dim=16, hid_dim=32,
                                    stats_dim=48))
    assert not is_frame_local(get_model("ECAPA_TDNN_c512", feat_dim=FEAT_DIM, embed_dim=16))


HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx / onnxruntime not installed")
ONNX_CHUNKED = LongAudioPolicy(threshold_seconds=3.0, chunk_seconds=1.0)


def _export_ecapa(tmp_path_factory, cmn):
    """A tiny ECAPA's torch back-end (whole inputs) and its waveform graph's path."""
    from wespeaker_py.export.waveform_onnx import export_waveform_onnx
    model = _backend("ECAPA_TDNN_c512", {"embed_dim": 32}, WHOLE).embedder.model
    frontend = FbankFeatures(num_mel_bins=FEAT_DIM, cmn=cmn)
    backend = TorchBackend(SpeakerEmbedder(frontend, model), torch.device("cpu"),
                           long_audio=WHOLE)
    path = str(tmp_path_factory.mktemp("onnx") / "ecapa.onnx")
    info = model_info("ECAPA_TDNN_c512", frontend, model, backend.embedder.identity)
    export_waveform_onnx(frontend, model, path, info, backend.min_samples)
    return backend, path


@pytest.fixture(scope="module")
def ecapa_graph(tmp_path_factory):
    return _export_ecapa(tmp_path_factory, cmn=True)


@pytest.fixture(scope="module")
def ecapa_graph_without_cmn(tmp_path_factory):
    """Without CMN the ONNX long path differs from the torch one by float rounding only."""
    return _export_ecapa(tmp_path_factory, cmn=False)


def _graph_run(backend, wavs):
    """The graph run once on int16-scale ``wavs`` ``[B, samples]``."""
    return backend.session.run(["embs"], {"wavs": wavs.astype(np.float32) / 32768.0})[0]


@needs_onnx
def test_a_long_input_through_onnx_is_the_weighted_mean_of_its_chunks_embeddings(
        ecapa_graph, speech):
    from wespeaker_py.api.backends import OnnxBackend
    backend = OnnxBackend(ecapa_graph[1], long_audio=ONNX_CHUNKED)
    # Kaldi framing at 16 kHz: 400-sample windows every 160 samples; 1-s chunks of 98 frames
    frames = 1 + (len(speech) - 400) // 160
    pieces = -(-frames // 98)
    bounds = np.round(np.arange(pieces + 1) * frames / pieces).astype(int)
    expected = np.zeros(32)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        piece = speech[None, start * 160:(stop - 1) * 160 + 400]
        expected += _graph_run(backend, piece)[0].astype(np.float64) * (stop - start) / frames
    got = backend.embed(torch.as_tensor(speech)[None])
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    # a batch of long inputs: each one alone
    other = speech[::-1].copy()
    batch = backend.embed(torch.as_tensor(np.stack([speech, other])))
    assert np.array_equal(batch[0], got[0])
    assert np.array_equal(batch[1], backend.embed(torch.as_tensor(other)[None])[0])
    assert backend.describe()["long_audio"] == "mean of chunk embeddings above 3 s"


@needs_onnx
@pytest.mark.parametrize("cmn", [True, False])
def test_onnx_and_torch_agree_on_a_long_input_of_an_approximate_path_model(
        ecapa_graph, ecapa_graph_without_cmn, speech, cmn):
    from wespeaker_py.api.backends import OnnxBackend
    whole, path = ecapa_graph if cmn else ecapa_graph_without_cmn
    torch_backend = TorchBackend(whole.embedder, torch.device("cpu"), long_audio=ONNX_CHUNKED)
    expected = _embed(torch_backend, speech)
    got = OnnxBackend(path, long_audio=ONNX_CHUNKED).embed(torch.as_tensor(speech)[None])[0]
    if cmn:   # each 1-s chunk mean-normalised alone: close, not equal
        assert expected @ got / np.linalg.norm(expected) / np.linalg.norm(got) > 0.99
    else:     # the same chunks, the same weights: equal up to the graph's float rounding
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@needs_onnx
def test_a_short_input_through_onnx_is_the_graph_run_once_whole(ecapa_graph, speech,
                                                                monkeypatch):
    from wespeaker_py.api import backends
    backend = backends.OnnxBackend(ecapa_graph[1], long_audio=ONNX_CHUNKED)
    wav = speech[:3 * 16000]   # exactly the threshold: not over it

    def refuse(*args, **kwargs):
        raise AssertionError("a short input took the long-audio path")
    monkeypatch.setattr(backends, "mean_of_chunks", refuse)
    got = backend.embed(torch.as_tensor(np.stack([wav, wav[::-1].copy()])))
    assert np.array_equal(got, _graph_run(backend, np.stack([wav, wav[::-1]])))
    with pytest.raises(AssertionError, match="long-audio path"):
        backend.embed(torch.as_tensor(speech[:3 * 16000 + 160])[None])   # one frame over
