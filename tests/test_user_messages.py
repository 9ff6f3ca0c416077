"""Messages a new user met with: a wav.scp command whose output is not audio, a text file
given as a gallery, a TorchScript file given as a checkpoint, an experiment folder holding
only epoch checkpoints. Each input is made here."""
import importlib
import pickle
import re
import shlex
import warnings

import numpy as np
import pytest
import torch

from api_helpers import mini_speech, wespeaker_folder
from inference_helpers import make_experiment
from tool_helpers import run_cli
from wespeaker_py import load_model
from wespeaker_py.api.gallery import Gallery, GalleryFileError, read_gallery, save_gallery
from wespeaker_py.audio.errors import AudioUnreadableError
from wespeaker_py.audio.files import open_audio
from wespeaker_py.bin import average_model
from wespeaker_py.errors import ModelSourceError, WespeakerError
from wespeaker_py.runtime.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root, _ = wespeaker_folder(str(tmp_path_factory.mktemp("messages") / "model"))
    return root


def test_a_pipe_whose_output_is_not_audio_is_named_by_its_command():
    with pytest.raises(AudioUnreadableError) as refused:
        open_audio("echo notaudio |", name="utt7")
    message = str(refused.value)
    assert message.startswith("utt7: ") and "'echo notaudio'" in message
    assert "not readable audio" in message and "BytesIO" not in message
    with pytest.raises(AudioUnreadableError) as refused:   # a tar member's bytes
        open_audio(data=b"notaudio", name="shard/utt8")
    assert str(refused.value).startswith("shard/utt8: not readable audio (")
    assert "BytesIO" not in str(refused.value)


def test_embed_skips_a_pipe_entry_that_is_not_audio_naming_it(folder, tmp_path, capsys,
                                                              caplog):
    scp = tmp_path / "wav.scp"
    scp.write_text(f"good cat {mini_speech(1)[0]} |\nbad echo notaudio |\n")
    status, _, err = run_cli(capsys, "embed", "--model", folder, "--device", "cpu",
                             "--wav_scp", scp, "--output", tmp_path / "out.ark")
    assert status == 0, err
    skipped = [record.getMessage() for record in caplog.records
               if record.getMessage().startswith("skipped bad")]
    assert len(skipped) == 1 and "echo notaudio" in skipped[0], caplog.text
    assert "not readable audio" in skipped[0] and "BytesIO" not in caplog.text


@pytest.mark.parametrize("content", [b"hi\n", pickle.dumps({"names": ["alice"]})])
def test_a_file_that_is_no_npz_is_not_a_gallery_written_by_enroll(content, tmp_path):
    path = tmp_path / "g.npz"
    path.write_bytes(content)
    with pytest.raises(GalleryFileError) as refused:
        read_gallery(str(path))
    message = str(refused.value)
    assert str(path) in message and "not an .npz archive" in message and "enroll" in message
    assert "pickle" not in message and "unsafe" not in message
    save_gallery(str(path), Gallery(model="XVEC/emb8"))   # a real one still reads
    assert read_gallery(str(path)).model == "XVEC/emb8"


def test_identify_with_a_text_gallery_is_one_line_without_pickle_advice(
        folder, tmp_path, capsys):
    gallery = tmp_path / "g.npz"
    gallery.write_text("hi\n")
    status, out, err = run_cli(capsys, "identify", "--model", folder, "--device", "cpu",
                               mini_speech(1)[0], "--gallery", gallery)
    assert (status, out) == (2, "") and len(err.strip().splitlines()) == 1, err
    assert "not an .npz archive" in err and "allow_pickle" not in err


class _WarnsWhenLoaded:
    """A pickled object that warns as it is unpickled."""

    def __init__(self):
        self.value = 1   # a state to restore, so that unpickling calls __setstate__

    def __setstate__(self, state):
        warnings.warn("loaded with a warning of its own", UserWarning)
        self.__dict__.update(state)


def test_a_torchscript_file_as_checkpoint_is_refused_without_torch_warnings(tmp_path):
    scripted = tmp_path / "final.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit's own, making it
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with pytest.raises(ModelSourceError) as refused:
            read_checkpoint(str(scripted))
    assert [str(w.message) for w in shown] == []
    assert str(scripted) in str(refused.value) and "TorchScript" in str(refused.value)
    # the warnings of any other checkpoint still show
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2), "note": _WarnsWhenLoaded()}, str(other))
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        assert set(read_checkpoint(str(other))) == {"weight", "note"}
    assert "loaded with a warning of its own" in [str(w.message) for w in shown]


def test_an_experiment_with_only_epoch_checkpoints_says_how_to_use_them(tmp_path):
    root = str(tmp_path / "exp")
    _, checkpoint, _ = make_experiment(root)   # root/models/model_3.pt, no avg_model.pt
    with pytest.raises(ModelSourceError) as refused:
        load_model(root, device="cpu")
    message = str(refused.value)
    assert "has no weights" in message and checkpoint in message
    suggested = re.search(r"--model (\S+?)\)", message).group(1)
    speech = mini_speech(1)[0]
    embedding = load_model(suggested, device="cpu").embed(speech)
    average_model.main(shlex.split(message.split("python -m wespeaker_py.bin.average_model ")[1]))
    np.testing.assert_allclose(load_model(root, device="cpu").embed(speech), embedding,
                               rtol=1e-5, atol=1e-6)


def test_the_averaging_hint_takes_num_avg_from_the_experiment_config(tmp_path):
    import shutil

    import yaml
    root = tmp_path / "exp"
    _, checkpoint, _ = make_experiment(str(root))
    for epoch in (1, 2):
        shutil.copy(checkpoint, root / "models" / f"model_{epoch}.pt")
    config = yaml.safe_load((root / "config.yaml").read_text())
    for num_avg, expected in ((2, "--num 2 "), (None, "--num 3 ")):   # 3 held, below 10
        if num_avg is None:
            config.pop("num_avg", None)
        else:
            config["num_avg"] = num_avg
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        with pytest.raises(ModelSourceError, match=expected):
            load_model(str(root), device="cpu")


class _PickledObject:
    """A class torch's weights-only reader refuses to unpickle."""


@pytest.mark.parametrize("reader, name, kind", [
    ("wespeaker_py.scoring.qmf:load_calibration", "garbage.pt", "a calibration model"),
    ("wespeaker_py.frontend.whisper:read_openai_checkpoint", "large-v2.pt",
     "an OpenAI Whisper checkpoint"),
    ("wespeaker_py.frontend.wavlm_convert:read_original_checkpoint", "WavLM-Large.pt",
     "an original WavLM checkpoint"),
])
def test_a_file_that_is_no_torch_file_is_refused_in_one_line_naming_it(
        reader, name, kind, tmp_path):
    module, _, function = reader.partition(":")
    garbage = tmp_path / name
    garbage.write_text("not a model\n")
    with pytest.raises(WespeakerError) as refused:
        getattr(importlib.import_module(module), function)(str(garbage))
    message = str(refused.value)
    assert message.startswith(f"{garbage}: not {kind} ") and "(UnpicklingError" in message
    assert "\n" not in message


def test_an_original_wavlm_checkpoint_of_other_objects_or_keys_is_refused(tmp_path):
    from wespeaker_py.frontend.wavlm_convert import WavLMConversionError, read_original_checkpoint
    objects = tmp_path / "objects.pt"
    torch.save({"cfg": {}, "model": {}, "extra": _PickledObject()}, str(objects))
    with pytest.raises(WavLMConversionError, match=r"it holds Python objects "
                       r"\(\S*_PickledObject\) besides tensors"):
        read_original_checkpoint(str(objects))
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(WavLMConversionError, match=r"which holds 'cfg' and 'model'; it holds "
                       r"1 keys: weight"):
        read_original_checkpoint(str(wrong))
