"""Diarization end to end: a synthetic conversation, a wav.scp run, and bad input."""
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from wespeaker_py.diarization import DiarizationOptions, Diarizer, diarize_wav_scp, read_rttm
from wespeaker_py.diarization.metrics import score_recordings
from wespeaker_py.diarization.segmentation import subsegments
from wespeaker_py.diarization.synthetic import (ConversationStyle, SpeakerCorpus,
                                                build_conversation, write_conversations)
from wespeaker_py.diarization.vad import EnergyVAD
from wespeaker_py.frontend.features import FbankFeatures
from wespeaker_py.api.model import SpeakerModel
from wespeaker_py.runtime import SpeakerEmbedder, TorchBackend
from wespeaker_py.models import get_model
from wespeaker_py.utils.tables import DataFormatError
from tests.diarization_helpers import speakers_in_turn, whole_recording
from tests.inference_helpers import TINY_XVEC_ARGS, randomise_batchnorm

SR = 16000
CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "mini", "data", "librispeech_tc100")


@pytest.fixture(scope="module")
def corpus():
    return SpeakerCorpus(CORPUS, os.path.join(CORPUS, "test_spk"))


@pytest.fixture(scope="module")
def conversation(corpus):
    """30 s between two test speakers, with its true turns."""
    rng = np.random.default_rng(7)
    speakers = list(rng.choice(corpus.speakers, size=2, replace=False))
    audio, turns = build_conversation(corpus, speakers, 30.0, rng)
    return audio, turns, speakers


@pytest.fixture(scope="module")
def tiny_embed():
    """A randomly initialised tiny x-vector behind the fbank front-end (plumbing only)."""
    torch.manual_seed(0)
    model = get_model("XVEC", **TINY_XVEC_ARGS)
    randomise_batchnorm(model)
    frontend = FbankFeatures(num_mel_bins=TINY_XVEC_ARGS["feat_dim"])
    backend = TorchBackend(SpeakerEmbedder(frontend, model.eval()), torch.device("cpu"))
    model = SpeakerModel(backend, "XVEC", "tiny x-vector")
    return model.diarizer(vad="energy", batch_size=8).embed_windows


def oracle_embed(audio, reference, speakers, vad, options):
    """Embeddings of a good model: the true speaker's point (of most of the window) plus noise.

    Cosine similarity is about 0.7 within a speaker and near 0 across. The
    pipeline's windows are recomputed here the same way, so this checks
    everything but the speaker model: timing, windows, clustering, turns, DER.
    """
    windows = subsegments(vad(audio, SR), options.window, options.shift)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((len(speakers), 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = []
    for start, end in windows:
        share = [sum(max(0.0, min(end, t.end) - max(start, t.start))
                     for t in reference if t.speaker == s) for s in speakers]
        rows.append(centres[int(np.argmax(share))] + 0.12 * rng.standard_normal(32))

    def embed(pieces):
        assert len(pieces) == len(windows)
        assert {p.size for p in pieces} == {int(options.window * SR)}
        return np.array(rows)
    return embed


def test_conversation_has_turn_taking_pauses_and_overlaps(conversation):
    audio, turns, speakers = conversation
    assert {t.speaker for t in turns} == set(speakers)
    assert all(0.1 - 1e-3 <= t.duration <= 6.0 + 1e-3 for t in turns)
    changes = sum(a.speaker != b.speaker for a, b in zip(turns, turns[1:]))
    assert changes >= 5
    overlaps = [a for a, b in zip(turns, turns[1:]) if b.start < a.end]
    pauses = [b.start - a.end for a, b in zip(turns, turns[1:]) if b.start > a.end]
    assert overlaps and len(pauses) > len(overlaps)
    assert max(t.end for t in turns) <= audio.size / SR
    assert np.max(np.abs(audio)) <= 1.0


def test_pipeline_with_oracle_embeddings_gets_low_der(conversation):
    audio, reference, speakers = conversation
    options = DiarizationOptions(vad="energy")
    vad = EnergyVAD()
    diarizer = Diarizer(oracle_embed(audio, reference, speakers, vad, options), options, vad)
    result = diarizer.diarize(audio, SR)
    assert result.num_speakers == 2  # estimated from the eigen-gap
    hyp = result.turns
    assert all(a.end <= b.start + 1e-9 for a, b in zip(hyp, hyp[1:]))
    _, overall = score_recordings({"c": reference}, {"c": hyp}, collar=0.25)
    # What is left is VAD (pauses inside read speech) and window resolution.
    assert overall.times.confusion / overall.times.scored < 0.08
    assert overall.der < 20.0
    assert overall.jer < 30.0


def test_wav_scp_run_with_tiny_model_and_bad_input(tmp_path, corpus, conversation, tiny_embed,
                                                   caplog):
    audio, _, _ = conversation
    sf.write(tmp_path / "conv.wav", audio, SR)
    # 8 kHz stereo: the same conversation, speaker audio on the left channel only
    left = audio[::2]
    sf.write(tmp_path / "stereo8k.wav", np.stack([left, np.zeros_like(left)], axis=1), 8000)
    # faint noise and digital silence (all zeros, a muted recording): no speech, no turns;
    # a silent channel 0 beside a channel with speech is the wrong channel: an error
    quiet = 1e-4 * np.random.default_rng(0).standard_normal(3 * SR)
    sf.write(tmp_path / "silence.wav", quiet.astype(np.float32), SR, subtype="FLOAT")
    sf.write(tmp_path / "zeros.wav", np.zeros(3 * SR, dtype=np.int16), SR)
    short = corpus.speech(corpus.utterances[corpus.speakers[0]][0])[0][:int(0.6 * SR)]
    sf.write(tmp_path / "short.wav", short, SR)
    sf.write(tmp_path / "right.wav", np.stack([np.zeros_like(left), left], axis=1), 8000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("".join(f"{key} {tmp_path / key}.wav\n" for key in
                               ["conv", "stereo8k", "silence", "zeros", "short", "right",
                                "broken"]))
    diarizer = Diarizer(tiny_embed, DiarizationOptions(vad="energy"))
    rttm = str(tmp_path / "out.rttm")
    with caplog.at_level("INFO"):
        summary = diarize_wav_scp(diarizer, str(wav_scp), rttm, show_progress=False,
                                  num_speakers=2)
    assert summary.diarized == 5 and summary.silent == ["silence", "zeros"]
    assert list(summary.failed) == ["right", "broken"] and "broken.wav" in summary.failed["broken"]
    assert "choose one with --channel 1" in summary.failed["right"]
    assert "zeros: no speech found (" in caplog.text
    assert "zeros.wav is silent: all 48000 samples are zero), no turns written" in caplog.text
    turns = read_rttm(rttm)
    assert set(turns) == {"conv", "stereo8k", "short"}
    for key in ("conv", "stereo8k"):
        assert len({t.speaker for t in turns[key]}) == 2
        assert turns[key][-1].end <= audio.size / SR + 1e-6
        assert all(a.end <= b.start + 1e-9 for a, b in zip(turns[key], turns[key][1:]))
    assert len(turns["short"]) == 1 and turns["short"][0].duration < 0.7

    wav_scp.write_text(f"conv {tmp_path}/conv.wav\nlonely_key\n")
    with pytest.raises(DataFormatError, match=r"wav.scp:2"):
        diarize_wav_scp(diarizer, str(wav_scp), str(tmp_path / "never.rttm"))
    assert not os.path.exists(tmp_path / "never.rttm")


def test_one_speaker_recording_is_found_to_have_one_speaker(corpus):
    rng = np.random.default_rng(3)
    speaker = corpus.speakers[5]
    audio, reference = build_conversation(corpus, [speaker], 20.0, rng)
    options, vad = DiarizationOptions(vad="energy"), EnergyVAD()
    result = Diarizer(oracle_embed(audio, reference, [speaker], vad, options), options,
                      vad).diarize(audio, SR)
    assert result.num_speakers == 1
    assert result.turns and {t.speaker for t in result.turns} == {"spk0"}


def test_more_speakers_than_max_speakers_is_capped_and_logged(corpus, caplog):
    rng = np.random.default_rng(11)
    speakers = list(rng.choice(corpus.speakers, size=4, replace=False))
    audio, reference = build_conversation(corpus, speakers, 90.0, rng)
    options, vad = DiarizationOptions(vad="energy", max_speakers=2), EnergyVAD()
    diarizer = Diarizer(oracle_embed(audio, reference, speakers, vad, options), options, vad)
    with caplog.at_level("WARNING"):
        result = diarizer.diarize(audio, SR)
    assert result.num_speakers == 2 and result.capped and result.found_speakers > 2
    assert "more than max_speakers=2" in caplog.text
    assert len({t.speaker for t in result.turns}) == 2
    relaxed = diarizer.diarize(audio, SR, max_speakers=6)
    assert relaxed.num_speakers == 4 and not relaxed.capped


def test_written_conversation_set_matches_its_rttm(tmp_path, corpus):
    keys = write_conversations(corpus, str(tmp_path), count=2, num_speakers=(2, 3),
                               duration=8.0, seed=1)
    reference = read_rttm(str(tmp_path / "ref.rttm"))
    assert list(reference) == keys
    for key in keys:
        info = sf.info(str(tmp_path / "wav" / f"{key}.wav"))
        assert info.samplerate == SR and info.duration >= reference[key][-1].end
        assert len({t.speaker for t in reference[key]}) == int(key.split("_")[1][0])


def test_options_name_what_cannot_work():
    with pytest.raises(ValueError, match="unknown diarization setting.*windw"):
        DiarizationOptions.from_settings(windw=1.0)
    for settings, name in ((dict(shift=2.0), "shift"), (dict(vad_threshold=1.5), "vad_threshold"),
                           (dict(min_speech=-1.0), "min_speech"),
                           (dict(merge_threshold=1.5), "merge_threshold"),
                           (dict(resolution=0.0), "resolution"),
                           (dict(min_cluster_size=-1), "min_cluster_size"),
                           (dict(dither=-1.0), "dither"),
                           (dict(gap_ratio=0.0), "gap_ratio"),
                           (dict(gap_ratio=0.8, cluster_method="agglomerative"), "gap_ratio"),
                           (dict(edge_weights="gauss"), "edge_weights"),
                           (dict(edge_weights="binary", cluster_method="umap-hdbscan"),
                            "edge_weights"),
                           (dict(cluster_method="kmeans"), "kmeans")):
        with pytest.raises(ValueError, match=name):
            DiarizationOptions.from_settings(**settings)
    with pytest.raises(ValueError, match="shift"):
        Diarizer(lambda pieces: np.zeros((len(pieces), 4)), DiarizationOptions(shift=0.0))
    options = DiarizationOptions.from_settings(window=1.0, shift=0.5, vad_threshold=0.3)
    assert (options.window, options.shift, options.region_rules().threshold) == (1.0, 0.5, 0.3)


def test_window_and_shift_options_cut_the_embedded_windows(conversation):
    audio, _, _ = conversation
    seen = {}

    def embed(pieces):
        seen["count"], seen["sizes"] = len(pieces), {p.size for p in pieces}
        return np.random.default_rng(0).standard_normal((len(pieces), 8))
    vad = EnergyVAD()
    speech = vad(audio, SR)
    for window, shift in ((1.5, 0.75), (1.0, 0.25)):
        options = DiarizationOptions(vad="energy", window=window, shift=shift)
        Diarizer(embed, options, vad).diarize(audio, SR)
        assert seen["sizes"] == {int(window * SR)}
        assert seen["count"] == len(subsegments(speech, window, shift))


def test_windows_get_a_repeatable_noise_floor_instead_of_digital_silence():
    # speech-like noise, then exact zeros: the windows over the zeros are what a
    # model would otherwise see at the fbank's energy floor
    audio = np.concatenate([np.random.default_rng(1).normal(0, 3000, 2 * SR),
                            np.zeros(2 * SR)]).astype(np.float32)
    speech = [(0.0, 4.0)]

    def pieces_of(options):
        seen = []
        Diarizer(lambda pieces: seen.extend(pieces) or np.ones((len(pieces), 4)),
                 options).window_embeddings(audio, speech)
        return seen
    silent = -1    # the last window, [3 s, 4 s), is all zeros in the audio
    first, again = pieces_of(DiarizationOptions()), pieces_of(DiarizationOptions())
    assert 0.9 < first[silent].std() < 1.1       # one 16-bit step, Kaldi's dither
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])   # each window draws its own noise
    assert not pieces_of(DiarizationOptions(dither=0.0))[silent].any()
    assert 2.9 < pieces_of(DiarizationOptions(dither=3.0))[silent].std() < 3.1


def test_speaker_counts_fix_each_recording(tmp_path, corpus):
    from wespeaker_py.diarization.rttm import read_speaker_counts
    rng = np.random.default_rng(3)
    wav_scp, counts = tmp_path / "wav.scp", tmp_path / "reco2num_spk"
    lines = []
    for key, size in (("two", 2), ("three", 3)):
        audio, _ = build_conversation(corpus, corpus.speakers[:size], 20.0, rng)
        sf.write(tmp_path / f"{key}.wav", audio, SR)
        lines.append(f"{key} {tmp_path}/{key}.wav")
    wav_scp.write_text("\n".join(lines) + "\n")
    counts.write_text("two 2\nthree 3\n")
    # random embeddings: the estimated count is anything; the given one must be kept
    diarizer = Diarizer(lambda pieces: np.random.default_rng(len(pieces)).standard_normal(
        (len(pieces), 16)), DiarizationOptions(vad="energy"))
    rttm = str(tmp_path / "sys.rttm")
    diarize_wav_scp(diarizer, str(wav_scp), rttm, show_progress=False,
                    speaker_counts=read_speaker_counts(str(counts)))
    found = {key: len({t.speaker for t in turns}) for key, turns in read_rttm(rttm).items()}
    assert found == {"two": 2, "three": 3}
    assert read_speaker_counts(rttm) == found   # an RTTM's speakers counted
    with pytest.raises(ValueError, match="no speaker count.*three"):
        diarize_wav_scp(diarizer, str(wav_scp), rttm, speaker_counts={"two": 2})
    counts.write_text("two 2\nthree x\n")
    with pytest.raises(DataFormatError, match="reco2num_spk:2"):
        read_speaker_counts(str(counts))


def test_a_speaker_never_overlaps_their_own_turn():
    # two overlaps in a row once started 1088's turn 0.1 s before their previous one ended
    corpus = SpeakerCorpus(CORPUS)
    style = ConversationStyle(overlap_probability=0.15)
    _, turns = build_conversation(corpus, corpus.speakers[:2], 120.0,
                                  np.random.default_rng(19), style)
    for speaker in {t.speaker for t in turns}:
        own = [t for t in turns if t.speaker == speaker]
        assert all(a.end <= b.start for a, b in zip(own, own[1:])), speaker


def test_read_once_conversations_never_repeat_audio(corpus):
    speakers = corpus.speakers[:3]
    available = {s: sum(corpus.speech(path)[0].size for path in corpus.utterances[s]) / SR
                 for s in speakers}
    audio, turns = build_conversation(corpus, speakers, 1000.0, np.random.default_rng(4),
                                      ConversationStyle(reuse=False))
    heard = {s: sum(t.duration for t in turns if t.speaker == s) for s in speakers}
    assert set(heard) == set(speakers)
    assert all(heard[s] <= available[s] + 1e-3 for s in speakers), (heard, available)
    # it ends when fewer than two speakers have speech left, long before 1000 s
    assert audio.size / SR < sum(available.values()) + 1.5 * len(turns) + 1.0
    # the default reuses the corpus and fills the duration
    long, _ = build_conversation(corpus, speakers, 200.0, np.random.default_rng(4))
    assert long.size / SR > 200.0 > sum(available.values())


# ------------------------------------------------------------------ capped and unmet counts

def test_capped_count_is_logged_with_its_number_and_recording(caplog):
    audio = (0.1 * np.random.default_rng(2).standard_normal(30 * SR)).astype(np.float32)
    diarizer = Diarizer(speakers_in_turn(4), DiarizationOptions(
        vad="energy", cluster_method="agglomerative"), whole_recording)
    with caplog.at_level("WARNING"):
        result = diarizer.diarize(audio, SR, max_speakers=3, recording="meeting7")
    assert (result.num_speakers, result.found_speakers, result.capped) == (3, 4, True)
    assert "meeting7: found 4 speakers, more than max_speakers=3: kept 3" in caplog.text
    caplog.clear()
    # 9 speakers whose windows share no edge: a lower bound
    diarizer = Diarizer(speakers_in_turn(9), DiarizationOptions(vad="energy"), whole_recording)
    with caplog.at_level("WARNING"):
        result = diarizer.diarize(np.tile(audio, 4), SR, max_speakers=3)
    assert (result.num_speakers, result.found_speakers) == (3, 9)
    assert ("the recording: found at least 9 speakers, more than max_speakers=3: kept 3"
            in caplog.text)


def test_a_num_speakers_above_the_windows_is_reported(caplog):
    audio = (0.1 * np.random.default_rng(2).standard_normal(int(1.5 * SR))).astype(np.float32)
    diarizer = Diarizer(speakers_in_turn(1), DiarizationOptions(vad="energy"), whole_recording)
    with caplog.at_level("WARNING"):
        result = diarizer.diarize(audio, SR, num_speakers=3, recording="short1s")
    assert (result.num_speakers, result.unmet_num_speakers) == (1, 3)
    assert "short1s: num_speakers=3 but only 1 window(s) of speech: 1 speaker(s)" in caplog.text
    assert diarizer.diarize(audio, SR, num_speakers=1).unmet_num_speakers is None
