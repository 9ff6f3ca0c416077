"""Chunk-mode extraction: one random num_frms chunk per utterance, seeded, as WeSpeaker's
batch extraction of its back-end set."""
import json
import os

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from inference_helpers import SAMPLE_RATE, make_experiment, read_int16_scale
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.frontend import FbankFeatures
from wespeaker_py.config import load_model_config
from wespeaker_py.inference import ExtractionOptions, extract_embeddings
from wespeaker_py.inference.chunking import RandomChunker, chunk_samples

# 200 frames of 10 ms / 25 ms at 16 kHz: (200 - 1) * 160 + 400 samples
CHUNK_200 = 32240
# two utterances longer than a 200-frame chunk, one shorter (repeated to the chunk length)
LENGTHS = [48000, 40000, 20000]


def _make_corpus(root):
    """Utterances whose pitch changes every 0.5 s, so that where a chunk lies matters."""
    rng = np.random.default_rng(0)
    wavs, lines = {}, []
    for index, length in enumerate(LENGTHS):
        pitch = np.repeat(rng.uniform(100, 2000, length // 8000 + 1), 8000)[:length]
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        signal = 4000 * np.sin(phase) + 300 * rng.standard_normal(length)
        key = f"spk{index}-utt{index}"
        path = os.path.join(root, key + ".wav")
        sf.write(path, signal.astype(np.int16), SAMPLE_RATE, subtype="PCM_16")
        wavs[key] = path
        lines.append(json.dumps({"key": key, "wav": path, "spk": f"spk{index}"}))
    list_path = os.path.join(root, "raw.list")
    with open(list_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return list_path, wavs


def _batchnorm_from(wavs):
    """Set the BatchNorm statistics from the corpus, so that embeddings follow the input."""
    def calibrate(network):
        frontend = FbankFeatures(num_mel_bins=16)
        feats = torch.cat([frontend(read_int16_scale(path)[None, :16000])
                           for path in wavs.values()])
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # the running statistics become the batch's
        network.train()
        with torch.no_grad():
            network(feats)
    return calibrate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("chunks"))
    list_path, wavs = _make_corpus(root)
    config_path, checkpoint, network = make_experiment(root, calibrate=_batchnorm_from(wavs))
    return {"config_path": config_path, "config": load_model_config(config_path),
            "checkpoint": checkpoint, "network": network, "list": list_path, "wavs": wavs}


def _extract(setup, ark, **chunk):
    extract_embeddings(setup["config"], setup["checkpoint"], "raw", setup["list"], str(ark),
                       options=ExtractionOptions(batch_size=2, num_workers=0, **chunk),
                       device="cpu")
    return {key: np.asarray(vector) for key, vector in
            kaldiio.load_scp(str(ark)[:-4] + ".scp").items()}


def test_chunk_length_is_that_of_num_frms_frames():
    assert chunk_samples(200, SAMPLE_RATE, 25.0, 10.0) == CHUNK_200
    assert chunk_samples(600, SAMPLE_RATE, 25.0, 10.0) == 599 * 160 + 400
    with pytest.raises(ValueError, match="at least one frame"):
        chunk_samples(0, SAMPLE_RATE, 25.0, 10.0)


def test_chunker_draws_by_key_and_seed_and_repeats_short_utterances():
    wav = torch.arange(1000, dtype=torch.float32)
    chunker = RandomChunker(100, seed=7)
    chunk = chunker("utt-a", wav)
    assert chunk.shape == (100,)
    start = int(chunk[0])
    assert torch.equal(chunk, wav[start:start + 100])  # one contiguous window
    assert torch.equal(chunker("utt-a", wav), chunk)  # the same key, the same chunk
    starts = {int(RandomChunker(100, seed)("utt-a", wav)[0]) for seed in range(20)}
    assert len(starts) > 10  # the seed moves it
    keys = {int(chunker(f"utt-{i}", wav)[0]) for i in range(20)}
    assert len(keys) > 10  # and so does the key
    short = torch.tensor([1.0, 2.0, 3.0])
    assert chunker("short", short).tolist() == [1.0, 2.0, 3.0] * 33 + [1.0]


def test_chunk_mode_is_reproducible_differs_from_whole_utterances_and_embeds_the_chunk(
        setup, tmp_path):
    whole = _extract(setup, tmp_path / "whole" / "xvector.ark")
    first = _extract(setup, tmp_path / "a" / "xvector.ark", chunk_frames=200, chunk_seed=3)
    again = _extract(setup, tmp_path / "b" / "xvector.ark", chunk_frames=200, chunk_seed=3)
    other = _extract(setup, tmp_path / "c" / "xvector.ark", chunk_frames=200, chunk_seed=4)
    assert set(first) == set(whole) == set(setup["wavs"])  # no utterance dropped
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
        assert np.abs(first[key] - whole[key]).max() > 1e-2
    longer = [key for key, path in setup["wavs"].items()
              if read_int16_scale(path).numel() > CHUNK_200]
    assert all(np.abs(first[key] - other[key]).max() > 1e-2 for key in longer)

    # each embedding is the model's embedding of that utterance's chunk
    frontend = FbankFeatures.from_dataset_args(setup["config"].dataset_args).eval()
    chunker = RandomChunker(CHUNK_200, seed=3)
    with torch.no_grad():
        for key, path in setup["wavs"].items():
            chunk = chunker(key, read_int16_scale(path))
            feats = frontend(chunk[None])
            assert feats.shape[1] == 200
            np.testing.assert_allclose(first[key], setup["network"](feats)[0].numpy(),
                                       atol=1e-4, rtol=0)


def test_cli_chunks_with_the_configs_num_frms_and_checks_its_flags(setup, tmp_path, capsys):
    args = ["--config", setup["config_path"], "--model_path", setup["checkpoint"],
            "--data_type", "raw", "--data_list", setup["list"], "--num-workers", "0",
            "--gpus", "[]"]
    by_config = tmp_path / "config" / "xvector.ark"
    extract_main(args + ["--embed_ark", str(by_config), "--random_chunk", "True",
                         "--seed", "3"])
    explicit = tmp_path / "explicit" / "xvector.ark"
    extract_main(args + ["--embed_ark", str(explicit), "--random_chunk", "True",
                         "--num_frms", "200", "--seed", "3"])  # the config says 200
    for key, vector in kaldiio.load_scp(str(by_config)[:-4] + ".scp").items():
        np.testing.assert_array_equal(vector,
                                      kaldiio.load_scp(str(explicit)[:-4] + ".scp")[key])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # a chunk size without chunk mode
        extract_main(args + ["--embed_ark", str(tmp_path / "x.ark"), "--num_frms", "100"])
    assert stop.value.code == 2
    assert "--num_frms sets the chunk of --random_chunk True" in capsys.readouterr().err


def test_a_chunk_too_short_for_the_model_is_refused(setup, tmp_path):
    with pytest.raises(ValueError, match="raise num_frms"):
        _extract(setup, tmp_path / "short" / "xvector.ark", chunk_frames=5)
