"""Small inputs for the diarization tests: noise recordings, embedding functions whose
speakers the test chooses, and a VAD that takes a whole recording as speech."""
import numpy as np
import soundfile as sf

SR = 16000


def noise_recordings(tmp_path, keys, seconds=20.0):
    """A ``wav.scp`` of noise recordings (their windows' embeddings come from the test)."""
    rng = np.random.default_rng(0)
    for key in keys:
        sf.write(tmp_path / f"{key}.wav",
                 (0.3 * rng.standard_normal(int(seconds * SR))).astype(np.float32), SR)
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("".join(f"{key} {tmp_path}/{key}.wav\n" for key in keys))
    return str(wav_scp)


def speakers_in_turn(count, seed=0):
    """An embedding function: the windows in ``count`` equal runs, a speaker each."""
    centres = np.random.default_rng(seed).standard_normal((count, 16))

    def embed(pieces):
        rows = centres[np.arange(len(pieces)) * count // len(pieces)]
        return rows + 0.01 * np.random.default_rng(len(pieces)).standard_normal(rows.shape)
    return embed


def whole_recording(audio, rate):
    return [(0.0, audio.size / rate)]
