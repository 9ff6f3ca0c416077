"""The window LDA's labelled data: utt2spk read as every other reader reads it, and joined
with wav.scp without losing utterances unsaid."""
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from tests.inference_helpers import make_experiment
from wespeaker_py.diarization.options import DiarizationOptions
from wespeaker_py.diarization.pipeline import Diarizer, labelled_window_embeddings
from wespeaker_py.utils.tables import DataFormatError

SR = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from wespeaker_py import load_model
    folder = str(tmp_path_factory.mktemp("model"))
    make_experiment(folder, bare=True)
    return load_model(folder, device="cpu")


def labelled_copy(labelled_dir, target, utt2spk_lines):
    """``labelled_dir``'s wav.scp beside a utt2spk of ``utt2spk_lines``."""
    os.makedirs(target)
    shutil.copy(os.path.join(labelled_dir, "wav.scp"), target)
    with open(os.path.join(target, "utt2spk"), "w") as handle:
        handle.write("".join(line + "\n" for line in utt2spk_lines))
    return target


def utt2spk_lines(labelled_dir):
    with open(os.path.join(labelled_dir, "utt2spk")) as handle:
        return [line.strip() for line in handle if line.strip()]


def test_a_utt2spk_line_of_three_fields_is_refused(tmp_path, labelled_dir, model):
    lines = utt2spk_lines(labelled_dir)
    lines[1] += " extra"
    data = labelled_copy(labelled_dir, str(tmp_path / "data"), lines)
    output = str(tmp_path / "lda.npz")
    with pytest.raises(DataFormatError, match=r"utt2spk:2: expected '<key> <value>'"):
        model.train_window_lda(data, output=output, dim=2, progress=False)
    assert not os.path.exists(output)


def test_a_utt2spk_utterance_missing_from_wav_scp_is_refused(tmp_path, labelled_dir, model):
    data = labelled_copy(labelled_dir, str(tmp_path / "data"),
                         utt2spk_lines(labelled_dir) + ["ghost-utt spk"])
    output = str(tmp_path / "lda.npz")
    with pytest.raises(DataFormatError, match=r"utt2spk: 1 utterance\(s\) are not in "
                                              r".*wav.scp \(the first: 'ghost-utt'\)"):
        model.train_window_lda(data, output=output, dim=2, progress=False)
    assert not os.path.exists(output)


def test_wav_scp_entries_without_a_speaker_are_counted_in_the_log(tmp_path, caplog):
    rng = np.random.default_rng(0)
    lines = []
    for key in ("u1", "u2", "u3"):
        sf.write(tmp_path / f"{key}.wav", rng.normal(0, 3000, 2 * SR).astype(np.int16), SR)
        lines.append(f"{key} {tmp_path}/{key}.wav")
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("\n".join(lines) + "\n")
    embedded = []

    def embed(pieces):
        embedded.extend(pieces)
        return np.ones((len(pieces), 4))
    diarizer = Diarizer(embed, DiarizationOptions(vad="energy"))
    with caplog.at_level(logging.WARNING):
        _, speakers, tally = labelled_window_embeddings(
            diarizer, str(wav_scp), {"u2": "a"}, show_progress=False, utt2spk_name="my_utt2spk")
    assert f"2 of the 3 utterances of {wav_scp} are not in my_utt2spk" in caplog.text
    assert "(the first: 'u1')" in caplog.text
    assert set(speakers) == {"a"} and len(speakers) == len(embedded) > 0
    assert tally.num_skipped == 0
