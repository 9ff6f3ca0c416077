"""Stored embeddings of a fixed small model on real speech: every inference path must keep them.

A seeded ECAPA_TDNN_c512 (random weights, randomised BatchNorm statistics) embeds a
few utterances of the committed mini corpus through ``bin.extract`` (ark/scp), the
API's ``embed`` and ``embed_many``, and the windows of ``SpeakerModel.diarize`` (with
``dither=0``: the diarization noise floor changes the windows' audio on purpose and is
tested in test_diarization_pipeline.py). The
results must match the ones stored in ``tests/data/embedding_contract.npz``, written by
this file at the commit before the runtime layer was introduced (``python
tests/test_embedding_contract.py`` rewrites it; do that only for a change that is meant
to move the numbers, and say so). The stored bits belong to torch 2.13's CPU kernels on
the x86-64 machine they were written on; another CPU kind rounds a little differently
(an AMD EPYC differs by at most 5.4e-7 in values of about 1), so the match is to within
:data:`CPU_ROUNDING`, far below what any change to the audio, features or model moves
(1e-3 and more). On one machine the three utterance paths agree bit for bit where the
speaker API's speech rules (``wespeaker_py.audio.speech_rules``) remove nothing; they cut
0.501 s of near-silent trailing audio from :data:`TRIMMED`, whose ``embed`` and
``embed_many`` rows alone were rewritten for that rule (the rest are as first stored).
"""
import json
import os
import sys

import kaldiio
import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_helpers import MINI_CORPUS, mini_speech, wespeaker_folder  # noqa: E402

STORED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "embedding_contract.npz")
MODEL = "ECAPA_TDNN_c512"
MODEL_ARGS = {"feat_dim": 80, "embed_dim": 32}
NUM_UTTERANCES = 5
BATCH_SIZE = 4
# largest difference allowed from the stored values: rounding of another CPU kind
CPU_ROUNDING = 1e-5
# the one utterance whose trailing audio the speaker API's edge rule cuts (0.501 s)
TRIMMED = "78-368-0000-s0"


def _utterances():
    """``{key: path}`` of one utterance of each of the first speakers of the corpus."""
    return {os.path.basename(path).split(".")[0]: path for path in mini_speech(NUM_UTTERANCES)}


def _conversation(paths):
    """Five utterances of three speakers, back to back, as one float waveform."""
    order = (paths[0], paths[1], paths[0], paths[2], paths[1])
    pieces = [sf.read(path, dtype="float32")[0] for path in order]
    return np.concatenate(pieces)


def compute(work: str):
    """Every path's embeddings as ``{name: array}`` (rows in the order of the keys)."""
    from wespeaker_py import load_model
    from wespeaker_py.bin import extract

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder, _ = wespeaker_folder(os.path.join(work, "model"), model=MODEL,
                                     model_args=MODEL_ARGS, seed=3)
        utterances = _utterances()
        keys = sorted(utterances)
        raw_list = os.path.join(work, "raw.list")
        with open(raw_list, "w") as handle:
            for key in keys:
                handle.write(json.dumps({"key": key, "wav": utterances[key],
                                         "spk": key.split("-")[0]}) + "\n")
        ark = os.path.join(work, "emb", "xvector.ark")
        extract.main(["--config", os.path.join(folder, "config.yaml"),
                      "--model_path", os.path.join(folder, "avg_model.pt"),
                      "--data_type", "raw", "--data_list", raw_list, "--embed_ark", ark,
                      "--batch_size", str(BATCH_SIZE), "--num_workers", "0",
                      "--device", "cpu"])
        extracted = dict(kaldiio.load_scp(ark[:-4] + ".scp"))
        model = load_model(folder, device="cpu")
        many = model.embed_many({key: utterances[key] for key in keys},
                                batch_size=BATCH_SIZE, progress=False)
        windows = []
        diarizer = model.diarizer(vad="energy", batch_size=BATCH_SIZE, dither=0.0)
        embed_windows = diarizer.embed_windows

        def recording(pieces):
            rows = embed_windows(pieces)
            windows.append(rows)
            return rows

        diarizer.embed_windows = recording
        paths = [utterances[key] for key in keys]
        diarizer.diarize(_conversation(paths), sample_rate=16000, num_speakers=3)
        return {"keys": np.array(keys),
                "extract": np.stack([extracted[key] for key in keys]),
                "embed": np.stack([model.embed(utterances[key]) for key in keys]),
                "embed_many": np.stack([many.embeddings[key] for key in keys]),
                "diarize_windows": np.concatenate(windows)}
    finally:
        torch.set_num_threads(threads)


def test_every_inference_path_keeps_the_stored_embeddings(tmp_path):
    stored = np.load(STORED)
    got = compute(str(tmp_path))
    assert list(got["keys"]) == list(stored["keys"])
    for name in ("extract", "embed", "embed_many", "diarize_windows"):
        assert got[name].dtype == np.float32, name
        assert got[name].shape == stored[name].shape, name
        difference = np.abs(got[name] - stored[name]).max()
        assert difference <= CPU_ROUNDING, f"{name}: largest difference {difference:.3g}"
    # the API's paths equal extraction bit for bit where the speech rules cut nothing, and
    # differ where they cut the near-silent edge (far more than rounding)
    trimmed = list(got["keys"]).index(TRIMMED)
    for name in ("embed", "embed_many"):
        kept = np.arange(len(got["keys"])) != trimmed
        assert np.array_equal(got[name][kept], got["extract"][kept]), f"{name} != extract"
        assert np.abs(got[name][trimmed] - got["extract"][trimmed]).max() > 1e-3, name


def test_the_stored_embeddings_are_real_and_distinct():
    # guards the stored file itself: finite, non-trivial, one row per input
    stored = np.load(STORED)
    assert len(stored["keys"]) == NUM_UTTERANCES
    assert all(os.path.isfile(os.path.join(MINI_CORPUS, "wav", key.split("-")[0], key + ".flac"))
               for key in stored["keys"])
    for name in ("extract", "embed", "embed_many", "diarize_windows"):
        rows = stored[name]
        assert np.isfinite(rows).all() and rows.shape[1] == MODEL_ARGS["embed_dim"], name
        assert len(np.unique(rows.round(4), axis=0)) == len(rows), name
    assert len(stored["diarize_windows"]) >= 10


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        arrays = compute(folder)
    np.savez_compressed(STORED, **arrays)
    print({name: value.shape for name, value in arrays.items()}, os.path.getsize(STORED))
