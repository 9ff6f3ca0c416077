"""examples/mini/local/prepare_data.sh on corpora whose trial speakers also train the model
or the back-end (the closed-set warning and its record in the prepared data's source), and on
corpora as Kaldi users have them: pipes, several sample rates, unreadable files, keys given
twice or missing."""
import pytest
import soundfile as sf

from recipe_helpers import MINI_DIR, make_kaldi_dir, read_table, run_script, write_tone

SPEAKERS = ["anna", "bert", "cleo", "dave", "emma", "finn"]


def _prepare(corpus, data, *extra, check=True):
    return run_script(MINI_DIR, "local/prepare_data.sh", "--data_dir", str(corpus), "--data",
                      str(data), *extra, check=check)


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


def test_mini_prepare_takes_pipes_other_rates_and_unreadable_files(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=["emma", "finn"])
    # the first training utterance unreadable, the next a pipe (the rate comes from it),
    # one at another rate: babble resamples it and skips the unreadable one if drawn
    (corpus / "wav" / "anna" / "anna-000.flac").write_bytes(b"")
    write_tone(str(corpus / "wav" / "bert" / "bert-002.flac"), 1.5, 16000, 160)
    scp = (corpus / "wav.scp").read_text().replace(
        "anna-001 wav/anna/anna-001.flac", f"anna-001 cat {corpus}/wav/anna/anna-001.flac |")
    (corpus / "wav.scp").write_text(scp)
    data = tmp_path / "prepared"
    result = _prepare(corpus, data)
    assert "(8000 Hz)" in result.stdout
    assert read_table(data / "train" / "wav.scp")["anna-001"][0] == "cat"
    for aug in ("musan", "rirs"):
        paths = [path for (path,) in read_table(data / aug / "wav.scp").values()]
        assert {sf.info(path).samplerate for path in paths} == {8000}


@pytest.mark.parametrize("table, line", [
    ("wav.scp", "bert-001 wav/bert/bert-000.flac"),   # an utterance given twice
    ("utt2spk", "bert-001 anna"),                     # an utterance of two speakers
])
def test_mini_prepare_names_an_utterance_given_twice(tmp_path, table, line):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=["emma", "finn"])
    with open(corpus / table, "a") as out:
        out.write(line + "\n")
    result = _prepare(corpus, tmp_path / "prepared", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"local/prepare_data.sh: {corpus}/{table}:25: duplicate key 'bert-001', already on "
        f"line 6")


def test_mini_prepare_names_the_utterances_missing_from_a_table(tmp_path):
    corpus = tmp_path / "corpus"
    make_kaldi_dir(str(corpus), SPEAKERS, 4, 8000, trial_speakers=["emma", "finn"])
    scp = (corpus / "wav.scp").read_text().splitlines(keepends=True)
    (corpus / "wav.scp").write_text("".join(line for line in scp
                                            if not line.startswith(("emma-000", "finn-001"))))
    result = _prepare(corpus, tmp_path / "prepared", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"local/prepare_data.sh: 2 utterances of the test set are not in {corpus}/wav.scp: "
        f"emma-000 finn-001")
