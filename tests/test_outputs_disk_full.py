"""Outputs that a full disk refuses outside training: what the message says is kept, and what
a rerun does."""
import errno
import os
import sys

import numpy as np
import pytest

from api_helpers import mini_speech, wespeaker_folder
from inference_helpers import make_experiment, make_raw_list_corpus
from wespeaker_py.cli.main import main as cli_main
from wespeaker_py.config import load_model_config
from wespeaker_py.errors import RunFailedError
from wespeaker_py.inference import extract_embeddings
from wespeaker_py.inference.extraction import ExtractionOptions
from wespeaker_py.inference.workdir import work_dir_for
from wespeaker_py.io.ark import EmbeddingWriter
from wespeaker_py.utils.atomic_files import DiskFullError
from wespeaker_py.utils.list_jobs import JobTally

LENGTHS = [16000, 12000, 9600, 20000, 12800]


@pytest.fixture(scope="module")
def extraction(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("full"))
    config_path, checkpoint, _ = make_experiment(os.path.join(root, "exp"))
    data_list, _ = make_raw_list_corpus(os.path.join(root, "corpus"), LENGTHS)
    return load_model_config(config_path), checkpoint, data_list


def _extract(extraction, ark):
    config, checkpoint, data_list = extraction
    return extract_embeddings(config, checkpoint, "raw", data_list, ark,
                              options=ExtractionOptions(num_workers=0), device="cpu")


def test_one_job_extraction_on_a_full_disk_says_the_finished_embeddings_are_kept(
        extraction, tmp_path, monkeypatch):
    ark = str(tmp_path / "emb" / "xvector.ark")
    write = EmbeddingWriter.write
    written = []

    def full_after_two(self, key, vector):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(self, key, vector)
        written.append(key)

    monkeypatch.setattr(EmbeddingWriter, "write", full_after_two)
    with pytest.raises(DiskFullError) as full:
        _extract(extraction, ark)
    part = os.path.join(work_dir_for(ark), "part_000.ark")
    # the same wording as a job of --nj 2 that meets the full disk
    assert str(full.value) == (f"no space left on device while writing {part}; the finished "
                               f"embeddings are kept, rerun the command to continue")
    monkeypatch.undo()
    summary = _extract(extraction, ark)   # what the message promises
    assert summary.resumed == 2 and summary.extracted == len(LENGTHS)


def test_a_list_job_with_nothing_done_and_nothing_skipped_does_not_say_all_were_skipped():
    with pytest.raises(RunFailedError) as failed:
        JobTally.of(0, {}).check("a.list", outcome="out.ark was not written",
                                 unit="utterances")
    assert str(failed.value) == ("nothing done: no utterances of a.list were processed "
                                 "(0 done, 0 skipped); out.ark was not written")


def test_enroll_whose_confirmation_a_full_disk_refuses_says_the_gallery_is_written(
        tmp_path, monkeypatch, capsys):
    model, _ = wespeaker_folder(str(tmp_path / "model"))
    gallery = str(tmp_path / "g.npz")
    # `wespeaker-py enroll ... > out` on a full disk: /dev/full refuses every write
    full = open("/dev/full", "w")
    monkeypatch.setattr(sys, "stdout", full)
    with pytest.raises(SystemExit) as ended:
        cli_main(["enroll", "--model", model, "--device", "cpu", "--gallery", gallery, "carol",
                  mini_speech(1)[0]])
    monkeypatch.undo()
    full.close()
    assert ended.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"wespeaker-py: error: enrolled carol (1 recording(s)); {gallery} holds 1 speaker(s), "
        f"but standard output refused this confirmation (No space left on device): the "
        f"gallery is written, do not enroll again (run with --debug for the traceback)")
    assert list(np.load(gallery)["names"]) == ["carol"]
