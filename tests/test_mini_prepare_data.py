"""examples/mini/local/prepare_data.sh on corpora whose trial speakers also train the model
or the back-end: the closed-set warning and its record in the prepared data's source."""
import pytest

from recipe_helpers import MINI_DIR, make_kaldi_dir, read_table, run_script

SPEAKERS = ["anna", "bert", "cleo", "dave", "emma", "finn"]


def _prepare(corpus, data, *extra):
    return run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus), "--data",
                      str(data), *extra)


def test_mini_prepare_warns_and_records_until_the_trial_speakers_are_held_out(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=["emma", "finn"])
    data = tmp_path / "prepared"

    # no train_spk: emma and finn train on their utterances of no trial, and (with so few
    # speakers) are the back-end too
    first = _prepare(corpus, data)
    assert "emma" in read_table(data / "train" / "spk2utt")
    warning = (f"WARNING: 2 of the 2 trial speakers of {corpus} also train the model and 2 of "
               f"them are in the back-end set")
    assert warning in first.stderr
    assert "closed-set" in first.stderr and "not comparable to a held-out test" in first.stderr
    assert f"give {corpus} a train_spk file" in first.stderr
    assert (data / "source").read_text().splitlines() == [
        str(corpus), "trial_speakers=2", "closed_set_speakers=2", "backend_trial_speakers=2"]

    again = _prepare(corpus, data)  # up to date: skipped, and still said
    assert "up to date" in again.stdout
    assert warning in again.stderr

    (corpus / "train_spk").write_text("anna\nbert\ncleo\ndave\n")
    held_out = _prepare(corpus, data)
    assert "up to date" not in held_out.stdout
    assert "closed-set" not in held_out.stderr + held_out.stdout
    assert (data / "source").read_text() == f"{corpus}\n"


@pytest.mark.parametrize("trial_speakers, in_model, in_backend", [
    (["emma", "gwen"], 1, 0),  # emma trains the model
    (["cleo", "gwen"], 0, 1),  # cleo, every third training speaker, is held out as back-end
])
def test_mini_prepare_counts_the_trial_speakers_of_the_model_and_of_the_back_end(
        tmp_path, trial_speakers, in_model, in_backend):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS + ["gwen"], 4, 8000, trial_speakers=trial_speakers)
    (corpus / "train_spk").write_text("".join(f"{spk}\n" for spk in SPEAKERS))
    data = tmp_path / "prepared"
    result = _prepare(corpus, data, "--min_backend_speakers", "6")
    assert list(read_table(data / "backend" / "spk2utt")) == ["cleo", "finn"]
    assert (f"{in_model} of the 2 trial speakers of {corpus} also train the model and "
            f"{in_backend} of them are in the back-end set") in result.stderr
    assert (data / "source").read_text().splitlines()[1:] == [
        "trial_speakers=2", f"closed_set_speakers={in_model}",
        f"backend_trial_speakers={in_backend}"]
