"""Fine-tuning's data: a folder of speaker folders taken as DIR, the dev speakers drawn
from each sample rate of the data (two of one rate first), the counts that leave out files
that cannot be read, and the warnings on mixed rates, a small dev part, a dev part whose
nontarget trials all pair two rates and a layout one level too high.

Nothing trains: the data is read, or a run stops where its first phase would train.
"""
import json
import logging
import os
import random
import re
import shutil

import pytest
import soundfile as sf

from finetune_helpers import read_finetune_data
from train_helpers import make_speaker_corpus
from wespeaker_py.finetune import FinetuneDataError, FinetuneOptions, OutputExistsError, finetune
from wespeaker_py.dataset.lists import decodable_extensions
from wespeaker_py.finetune.config import OptionValueError, options_named_as_flags
from wespeaker_py.finetune.data import read_finetune_corpus, write_lists
from wespeaker_py.finetune.speaker_folders import list_speaker_folders
from wespeaker_py.finetune.split import (SPLIT_SEED, _choose_dev, kept_split,
                                         split_finetune_data, warn_about_split)
from wespeaker_py.utils.paths import file_digest


def _kaldi_folder(root, num_spks, rate_of=lambda spk: 16000, keep=lambda key: True):
    """``num_spks`` speakers x 4 utterances (wav.scp, utt2spk), those ``keep`` keeps;
    speaker ``spkN``'s files at ``rate_of("spkN")``."""
    corpus = make_speaker_corpus(str(root), num_spks=num_spks, utts_per_spk=4, seconds=1.0)
    rows = [line.split() for line in open(corpus["utt2spk"]) if keep(line.split()[0])]
    with open(os.path.join(root, "wav.scp"), "w") as scp, \
            open(os.path.join(root, "utt2spk"), "w") as utt2spk:
        for key, spk in rows:
            path = os.path.join(root, "wav", key + ".wav")
            if rate_of(spk) != 16000:
                samples, old_rate = sf.read(path, dtype="int16")
                sf.write(path, samples[::old_rate // rate_of(spk)], rate_of(spk),
                         subtype="PCM_16")
            scp.write(f"{key} {path}\n")
            utt2spk.write(f"{key} {spk}\n")
    return str(root)


def _speaker_folders(root):
    """4 speakers x 4 utterances as ``root/<speaker>/...``: two of each speaker's files one
    folder deeper, one as flac; beside them a text file and a hidden file."""
    corpus = _kaldi_folder(str(root) + "_corpus", 4)
    for key, spk in (line.split() for line in open(os.path.join(corpus, "utt2spk"))):
        number = int(key[-1])
        folder = os.path.join(root, spk, "session1" if number < 2 else "")
        os.makedirs(folder, exist_ok=True)
        samples, rate = sf.read(os.path.join(corpus, "wav", key + ".wav"), dtype="int16")
        name = f"{key}.flac" if number == 3 else f"{key}.wav"
        sf.write(os.path.join(folder, name), samples, rate)
        open(os.path.join(root, spk, "notes.txt"), "w").write("recorded in 2024")
        open(os.path.join(root, spk, "._" + key + ".wav"), "w").write("a resource fork")
    return str(root)


# ---- 5: DIR/<speaker>/<files> ---------------------------------------------------------------

def test_speaker_folders_are_a_data_folder_keyed_by_their_paths(tmp_path, caplog):
    data = _speaker_folders(tmp_path / "calls")
    with caplog.at_level(logging.INFO):
        split = read_finetune_data(data)
    entries = split.train + split.dev
    assert len(entries) == 16 and len(split.train_speakers + split.dev_speakers) == 4
    keys = {entry.key: entry for entry in entries}
    assert "spk0/session1/spk0-utt0.wav" in keys and "spk0/spk0-utt3.flac" in keys
    assert keys["spk0/session1/spk0-utt1.wav"].spk == "spk0"
    assert keys["spk2/spk2-utt2.wav"].wav == os.path.join(data, "spk2", "spk2-utt2.wav")
    assert (f"{data} has no wav.scp: 4 speaker folders with 16 audio files are its "
            f"utterances, keyed by their path below it (<speaker>/...); 4 other files left "
            f"out") in caplog.text
    assert split.summary()["speaker_folders"] is True


def test_a_path_with_whitespace_is_refused_naming_it(tmp_path):
    data = _speaker_folders(tmp_path / "calls")
    spaced = os.path.join(data, "spk1", "take two.wav")
    shutil.copy(os.path.join(data, "spk1", "spk1-utt2.wav"), spaced)
    with pytest.raises(FinetuneDataError, match=f"{spaced}: its path below {data} holds "
                                                f"whitespace"):
        read_finetune_data(data)


def test_a_folder_of_neither_layout_names_both(tmp_path):
    empty = tmp_path / "empty"
    (empty / "spk0").mkdir(parents=True)
    (empty / "spk0" / "notes.txt").write_text("no audio")
    with pytest.raises(FinetuneDataError, match=r"has no wav.scp, nor speaker folders with "
                                                r"audio files: give a Kaldi folder \(wav.scp "
                                                r"and utt2spk, segments optional\) or a folder "
                                                r"with one folder per speaker") as refused:
        read_finetune_data(str(empty))
    # the suffixes named are those read: not m4a or wma, which soundfile cannot decode
    readable = decodable_extensions()
    assert f"<name>.wav; {', '.join(readable)}, at any depth" in str(refused.value)
    assert "m4a" not in readable and "wma" not in readable


@pytest.mark.parametrize("present", ["utt2spk", "segments"])
def test_a_kaldi_folder_without_its_wav_scp_is_refused_as_one(tmp_path, present):
    # its speaker folders (here beside the lists) are not read in its place
    data = _speaker_folders(tmp_path / "calls")
    (tmp_path / "calls" / present).write_text("spk0/spk0-utt2.wav spk0\n")
    with pytest.raises(FinetuneDataError, match=re.escape(
            f"{data}/wav.scp does not exist (a data folder needs wav.scp and utt2spk; or, "
            f"without any of wav.scp, utt2spk and segments, one folder of audio files per "
            f"speaker)")):
        read_finetune_data(data)


def test_linked_folders_in_a_speaker_folder_are_listed_once(tmp_path):
    data = _speaker_folders(tmp_path / "calls")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(os.path.join(data, "spk1", "spk1-utt2.wav"), elsewhere / "extra.wav")
    os.symlink(elsewhere, os.path.join(data, "spk1", "linked"))
    os.symlink(os.path.join(data, "spk1"), os.path.join(data, "spk1", "loop"))   # a loop
    keys = [entry.key for entry in list_speaker_folders(data).entries]
    assert "spk1/linked/extra.wav" in keys
    assert len(keys) == len(set(keys)) == 17 and not any("loop" in key for key in keys)


def test_a_speaker_folder_run_writes_its_lists_and_a_changed_folder_is_another_request(
        source_model, tmp_path, first_phase):
    data, out = _speaker_folders(tmp_path / "calls"), str(tmp_path / "out")
    options = FinetuneOptions(epochs=1, dev_speakers=2)
    config = first_phase(source_model, data, out, options)
    lists = os.path.join(out, "work", "lists", "data")
    scp = dict(line.split() for line in open(os.path.join(lists, "wav.scp")))
    assert scp["spk3/spk3-utt2.wav"] == os.path.join(data, "spk3", "spk3-utt2.wav")
    utt2spk = dict(line.split() for line in open(os.path.join(lists, "utt2spk")))
    assert utt2spk["spk3/session1/spk3-utt0.wav"] == "spk3" and len(utt2spk) == 16
    trained = {line.split()[0] for line in open(config["train_label"])}
    assert trained < set(utt2spk)
    # the request records the digests of the lists written
    request = json.load(open(os.path.join(out, "work", "request.json")))
    assert request["lists"] == {f"data/{name}": file_digest(os.path.join(lists, name))
                                for name in ("wav.scp", "utt2spk")}
    # the same folder again resumes; a file added makes it another request
    first_phase(source_model, data, out, options)
    shutil.copy(os.path.join(data, "spk1", "spk1-utt2.wav"), os.path.join(data, "spk1", "x.wav"))
    with pytest.raises(OutputExistsError, match=r"differs in lists.data/utt2spk, "
                                                r"lists.data/wav.scp"):
        finetune(source_model, data, out, options, device="cpu")


# ---- 2: the dev speakers come from each rate; the mixed-rate warning's advice -------------

def test_dev_speakers_are_drawn_from_each_rate_and_counted_by_rate(tmp_path):
    # 8 speakers at 16 kHz and 2 at 8 kHz: two dev speakers are two of 16 kHz (a pair at
    # one rate); a third is one of 8 kHz, the other staying in training
    data = _kaldi_folder(tmp_path / "mixed", 10,
                         rate_of=lambda spk: 8000 if spk in ("spk8", "spk9") else 16000)
    split = read_finetune_data(data)
    assert len(split.dev_speakers) == 2 and not {"spk8", "spk9"} & set(split.dev_speakers)
    assert split.dev_rates == {16000: 8}
    split = read_finetune_data(data, dev_speakers=3)
    assert len({"spk8", "spk9"} & set(split.dev_speakers)) == 1
    assert split.dev_rates == {8000: 4, 16000: 8}
    assert split.summary()["dev_utterances_by_rate"] == {"8000": 4, "16000": 8}


def test_a_rate_of_one_speaker_neither_leaves_training_nor_spoils_the_split(
        tmp_path, caplog):
    # spk9 alone at 8 kHz, with two utterances: in dev it would give too few target
    # trials, and training would hear nothing at 8 kHz
    data = _kaldi_folder(tmp_path / "calls", 10,
                         rate_of=lambda spk: 8000 if spk == "spk9" else 16000,
                         keep=lambda key: not key.startswith("spk9-") or key[-1] in "01")
    split = read_finetune_data(data)
    assert "spk9" in split.train_speakers and len(split.dev_speakers) == 2
    assert split.dev_rates == {16000: 8} and len(split.trials) == 28
    assert "training hears none" not in caplog.text


def test_a_rate_pair_short_of_trials_gives_way_to_a_pair_of_the_next_rate():
    # two of the six 16 kHz speakers (two utterances each) give 2 target trials; two of
    # the four 8 kHz speakers (four each) give 12
    spk2utts = {f"spk{number}": ["a", "b"] if number < 6 else ["a", "b", "c", "d"]
                for number in range(10)}
    rates = {spk: 16000 if int(spk[3:]) < 6 else 8000 for spk in spk2utts}
    dev = _choose_dev(spk2utts, 2, rates)
    assert len(dev) == 2 and {rates[spk] for spk in dev} == {8000}


def test_a_dev_part_holding_every_file_of_a_rate_is_warned_about(tmp_path, caplog):
    # two speakers at 16 kHz, one each at 8 and 4 kHz: a pair of one rate takes both
    # 16 kHz speakers (rather than pair 8 with 4 kHz, whose trials tell the rates apart)
    rate_of = {"spk1": 8000, "spk3": 4000}
    data = _kaldi_folder(tmp_path / "calls", 4, rate_of=lambda spk: rate_of.get(spk, 16000))
    split = read_finetune_data(data)
    assert split.dev_speakers == ["spk0", "spk2"]
    assert (f"{data}: all of its files at 16000 Hz are the dev speakers', so training hears "
            f"none at that rate") in caplog.text
    assert "pair files at different sample rates" not in caplog.text


def test_a_resumed_run_keeps_the_dev_speakers_its_lists_were_written_with(
        source_model, tmp_path, first_phase, caplog):
    data, out = _kaldi_folder(tmp_path / "calls", 6), str(tmp_path / "out")
    options = FinetuneOptions(epochs=1, dev_speakers=2)
    first_phase(source_model, data, out, options)
    drawn = read_finetune_data(data, 2).dev_speakers
    speakers = {line.split()[0]: line.split()[1] for line in open(os.path.join(data, "utt2spk"))}
    # the lists of a run started under another split rule: two other dev speakers
    recorded = sorted(set(speakers.values()) - set(drawn))[:2]
    utt2spk = os.path.join(out, "work", "data", "train", "utt2spk")
    with open(utt2spk, "w") as train:
        train.writelines(f"{key} {spk}\n" for key, spk in speakers.items()
                         if spk not in recorded)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        config = first_phase(source_model, data, out, options)
    assert config["train_label"] == utt2spk
    assert not {line.split()[1] for line in open(utt2spk)} & set(recorded)
    trials = os.path.join(out, "work", "data", "dev", "trials")
    assert {speakers[key] for line in open(trials) for key in line.split()[:2]} == set(recorded)
    assert (f"the run being resumed keeps its dev speakers ({', '.join(recorded)}) rather "
            f"than those drawn now ({', '.join(drawn)})") in caplog.text
    # the split's warning (2 dev speakers are few) is said once, of the split kept
    small = [record.getMessage() for record in caplog.records
             if "the dev part has" in record.getMessage()]
    assert len(small) == 1 and "those from 1 speaker pair(s)" in small[0], small


def test_a_kaldi_folder_is_listed_for_the_other_commands_with_absolute_paths(
        source_model, tmp_path, first_phase):
    # its wav.scp names files relative to it, as finetune reads them; other commands would
    # read them relative to where they run
    data, out = _kaldi_folder(tmp_path / "calls", 6), str(tmp_path / "out")
    scp = os.path.join(data, "wav.scp")
    rows = [line.split() for line in open(scp)]
    with open(scp, "w") as relative:
        relative.writelines(f"{key} {os.path.relpath(path, data)}\n" for key, path in rows)
    first_phase(source_model, data, out, FinetuneOptions(epochs=1, dev_speakers=2))
    listed = os.path.join(out, "work", "lists", "data")
    assert [line.split() for line in open(os.path.join(listed, "wav.scp"))] == rows
    assert open(os.path.join(listed, "utt2spk")).read() == \
        open(os.path.join(data, "utt2spk")).read()


def test_single_rate_data_draws_the_dev_speakers_of_the_seed_alone():
    spk2utts = {f"spk{number}": ["a", "b"] for number in range(10)}
    by_seed = sorted(random.Random(SPLIT_SEED).sample(sorted(spk2utts), 2))
    assert _choose_dev(spk2utts, 2, {spk: 16000 for spk in spk2utts}) == by_seed
    assert _choose_dev(spk2utts, 2, {}) == by_seed   # pipes: no rate read


def test_files_below_the_rate_suggest_training_at_the_lower_rate(tmp_path, caplog):
    data = _kaldi_folder(tmp_path / "mixed", 10,
                         rate_of=lambda spk: 8000 if spk in ("spk8", "spk9") else 16000)
    read_finetune_data(data)
    assert ("the 8 files below 16000 Hz are upsampled, with nothing above half their own "
            "rate. If the audio the new model is to score is narrow-band (calls at 8000 Hz), "
            "give sample_rate=8000") in caplog.text
    caplog.clear()
    read_finetune_data(data, sample_rate=16000)   # the rate was given: no advice
    assert "upsampled" in caplog.text and "sample_rate" not in caplog.text


def test_files_below_the_rate_in_mix_data_alone_suggest_no_lower_rate(tmp_path, caplog):
    # the narrow-band files are the original-domain data's, not the audio to score
    data = _kaldi_folder(tmp_path / "calls", 6)
    mix = _kaldi_folder(tmp_path / "original", 3, rate_of=lambda spk: 8000)
    split = read_finetune_data(data, mix_dir=mix)
    assert "the 12 files below 16000 Hz are upsampled" in caplog.text
    assert "--sample_rate" not in caplog.text
    assert split.summary()["files_by_rate"] == {"16000": 24}
    assert split.summary()["mix_files_by_rate"] == {"8000": 12}


# ---- 7: a small dev part is said to be one ---------------------------------------------------

def test_a_small_dev_part_is_warned_about(tmp_path, caplog):
    data = _kaldi_folder(tmp_path / "six", 6)
    read_finetune_data(data)
    assert (f"{data}: the dev part has 2 speakers, 12 target trials and 16 nontarget trials "
            f"(those from 1 speaker pair(s)): its EER and minDCF, and the calibration fitted "
            f"on them, rest on few trials (below 5 speakers or 50 target trials); hold out "
            f"more with dev_speakers (up to 4 here)") in caplog.text
    caplog.clear()
    with options_named_as_flags():                # as wespeaker-py finetune words it
        read_finetune_data(data)
    assert "hold out more with --dev_speakers (up to 4 here)" in caplog.text
    caplog.clear()
    big = _kaldi_folder(tmp_path / "many", 40)
    read_finetune_data(big)                       # 8 dev speakers: 48 target trials
    assert "the dev part has 8 speakers, 48 target trials" in caplog.text
    caplog.clear()
    read_finetune_data(big, dev_speakers=10)      # 60 target trials
    assert "the dev part has" not in caplog.text


# ---- F7: a dev part at one rate where it can be; cross-rate trials said to be ----------------

def _rates_by_key(split):
    """The sample rate of each dev utterance's file."""
    return {entry.key: sf.info(entry.wav).samplerate for entry in split.dev}


def test_mixed_rates_hold_out_two_speakers_of_the_most_common_rate(tmp_path, caplog):
    # 6 speakers at 8 kHz, 4 at 16 kHz: one dev speaker per rate made every nontarget trial
    # pair 8 with 16 kHz (a dev EER of 0 and a calibration that accepts everyone)
    data = _kaldi_folder(tmp_path / "mixed", 10,
                         rate_of=lambda spk: 8000 if int(spk[3:]) < 6 else 16000)
    split = read_finetune_data(data)
    assert len(split.dev_speakers) == 2 and split.dev_rates == {8000: 8}
    rate_of = _rates_by_key(split)
    assert any(label == "nontarget" and rate_of[enroll] == rate_of[test]
               for enroll, test, label in split.trials)
    # training still hears both rates
    assert {int(spk[3:]) < 6 for spk in split.train_speakers} == {True, False}
    assert "training hears none" not in caplog.text
    assert "pair files at different sample rates" not in caplog.text


def test_a_dev_part_that_can_only_pair_two_rates_is_warned_about(tmp_path, caplog):
    # the only speakers with two or more utterances: spk0 at 16 kHz and spk1 at 8 kHz
    data = _kaldi_folder(tmp_path / "calls", 4,
                         rate_of=lambda spk: 8000 if spk in ("spk1", "spk3") else 16000,
                         keep=lambda key: key[:4] in ("spk0", "spk1") or key.endswith("0"))
    split = read_finetune_data(data)
    assert split.dev_speakers == ["spk0", "spk1"]
    assert (f"{os.path.abspath(data)}: all 16 dev nontarget trials pair files at different "
            f"sample rates (dev speakers: spk0 at 16000 Hz, spk1 at 8000 Hz): the dev EER and "
            f"minDCF, and the calibration fitted on them, measure the rate difference, not "
            f"how well speakers are told apart") in caplog.text
    assert ("no rate has two speakers with two or more utterances: add speakers at one of "
            "the rates") in caplog.text


def test_a_dev_trial_with_a_pipe_on_either_side_is_not_cross_rate(tmp_path, caplog):
    # spk1's utterances come through a pipe (rate unknown); spk0's keys sort first, so every
    # nontarget trial has the pipe on its test side
    data = _kaldi_folder(tmp_path / "piped", 4)
    scp = os.path.join(data, "wav.scp")
    rows = [line.split() for line in open(scp)]
    with open(scp, "w") as out:
        for key, path in rows:
            out.write(f"{key} cat {path} |\n" if key.startswith("spk1-") else f"{key} {path}\n")
    corpus = read_finetune_corpus(data)
    split = split_finetune_data(corpus, dev_set=["spk0", "spk1"])
    assert all(enroll.startswith("spk0-") and test.startswith("spk1-")
               for enroll, test, label in split.trials if label == "nontarget")
    warn_about_split(corpus, split)
    assert "pair files at different sample rates" not in caplog.text


def test_a_resumed_run_keeps_its_cross_rate_dev_part_and_is_warned(tmp_path, caplog):
    # lists written under the earlier rule (one dev speaker per rate) are kept on resume
    data = _kaldi_folder(tmp_path / "mixed", 10,
                         rate_of=lambda spk: 8000 if int(spk[3:]) < 6 else 16000)
    corpus = read_finetune_corpus(data)
    lists = str(tmp_path / "lists")
    write_lists(split_finetune_data(corpus, dev_set=["spk2", "spk7"]), lists)
    drawn = split_finetune_data(corpus)
    assert drawn.dev_rates == {8000: 8}
    caplog.clear()
    kept = kept_split(corpus, drawn, lists)
    warn_about_split(corpus, kept)
    assert kept.dev_speakers == ["spk2", "spk7"] and kept.dev_rates == {8000: 4, 16000: 4}
    assert ("all 16 dev nontarget trials pair files at different sample rates (dev "
            "speakers: spk2 at 8000 Hz, spk7 at 16000 Hz)") in caplog.text
    assert ("for a resumed run (which keeps its dev speakers), fine-tune into another "
            "out_dir") in caplog.text


# ---- F7: files the data check could not read count nowhere ---------------------------------

def _empty(data, keys):
    """Empty the files of the utterances ``keys`` of the Kaldi folder ``data``."""
    paths = dict(line.split() for line in open(os.path.join(data, "wav.scp")))
    for key in keys:
        open(paths[key], "w").close()


def test_a_speaker_with_no_file_that_can_be_read_is_neither_drawn_nor_counted(
        tmp_path, caplog):
    data = _kaldi_folder(tmp_path / "calls", 6)
    ghost = read_finetune_data(data).dev_speakers[0]
    _empty(data, [f"{ghost}-utt{number}" for number in range(4)])
    caplog.clear()
    split = read_finetune_data(data)
    assert ghost not in split.dev_speakers + split.train_speakers
    assert len(split.train_speakers) == 3 and split.summary()["train_speakers"] == 3
    assert any(entry.spk == ghost for entry in split.train)   # listed: training skips it
    assert len(split.train) == 16 and split.summary()["train_utterances"] == 12
    assert (f"none of the files of 1 speaker(s) can be read ({ghost}): they count neither "
            f"as training nor as dev speakers") in caplog.text


def test_a_dev_speaker_of_a_resumed_run_with_no_file_left_counts_for_none(tmp_path):
    data = _kaldi_folder(tmp_path / "calls", 6)
    _empty(data, [f"spk5-utt{number}" for number in range(4)])
    # the run's lists held out spk5 when its files could still be read
    split = split_finetune_data(read_finetune_corpus(data), dev_set=["spk0", "spk1", "spk5"])
    assert any(entry.spk == "spk5" for entry in split.dev)   # listed: the evaluation names it
    assert split.dev_speakers == ["spk0", "spk1"] and split.summary()["dev_speakers"] == 2


def test_a_speaker_with_no_file_that_can_be_read_does_not_make_up_the_minimum(tmp_path):
    data = _kaldi_folder(tmp_path / "calls", 4)
    _empty(data, [f"spk3-utt{number}" for number in range(4)])
    with pytest.raises(FinetuneDataError, match=re.escape(
            f"{data}: fine-tuning needs at least 4 speakers: 2 held out for dev (each with two "
            f"or more utterances) and 2 to train on; it has 3 speakers, 3 of them with two or "
            f"more utterances (1 more with no file that can be read)")):
        read_finetune_data(data)


def test_dev_trials_and_utterances_count_only_files_that_can_be_read(tmp_path):
    data = _kaldi_folder(tmp_path / "calls", 6)
    drawn = read_finetune_data(data, dev_speakers=3).dev_speakers
    _empty(data, [f"{drawn[0]}-utt0"])
    split = read_finetune_data(data, dev_speakers=3)
    assert split.dev_speakers == drawn and len(split.dev) == 12   # listed: named when skipped
    summary = split.summary()
    assert summary["dev_utterances"] == 11
    assert (summary["dev_target_trials"], summary["dev_nontarget_trials"]) == (15, 40)
    assert not any(f"{drawn[0]}-utt0" in trial[:2] for trial in split.trials)
    # two dev speakers, one file short: 9 target trials, refused before training
    with pytest.raises(FinetuneDataError, match=r"give 9 target and 12 nontarget trials; "
                                                r"at least 10 and 10 are needed \(more "
                                                r"dev_speakers, or more utterances\); 1 of "
                                                r"their utterances' files cannot be read"):
        read_finetune_data(data, dev_speakers=2)
    # the command names its flag
    with pytest.raises(FinetuneDataError, match=r"\(more --dev_speakers, or more utterances"), \
            options_named_as_flags():
        read_finetune_data(data, dev_speakers=2)


# ---- F7: too few speakers: the real minimum, advice that can be followed ------------------

def test_too_few_speakers_state_the_minimum_and_name_the_folder(tmp_path):
    three = _kaldi_folder(tmp_path / "three", 3)
    with pytest.raises(FinetuneDataError, match=re.escape(
            f"{three}: fine-tuning needs at least 4 speakers: 2 held out for dev (each with two "
            f"or more utterances) and 2 to train on; it has 3 speakers, 3 of them with two or "
            f"more utterances")):
        read_finetune_data(three)
    # 5 speakers, one utterance each: no dev speaker; --dev_speakers was not given
    ones = _kaldi_folder(tmp_path / "ones", 5, keep=lambda key: key.endswith("utt0"))
    with pytest.raises(FinetuneDataError) as refused:
        read_finetune_data(ones)
    assert str(refused.value) == (
        f"{os.path.abspath(ones)}: fine-tuning needs at least 4 speakers: 2 held out for dev "
        f"(each with two or more utterances) and 2 to train on; it has 5 speakers, 0 of them "
        f"with two or more utterances")
    # --dev_speakers 2 given: it cannot be lowered, so lowering it is not suggested
    with pytest.raises(FinetuneDataError) as refused:
        read_finetune_data(ones, dev_speakers=2)
    assert "asked for" not in str(refused.value) and "lower" not in str(refused.value)


def test_too_many_dev_speakers_say_how_far_to_lower_them_as_the_caller_names_them(tmp_path):
    data = _kaldi_folder(tmp_path / "six{1}", 6)   # braces in the name are not fields
    with pytest.raises(OptionValueError) as refused:
        read_finetune_data(data, dev_speakers=5)
    problem = (f"holds out more speakers than {os.path.abspath(data)} can spare: it has 6 "
               f"speakers, 6 of them with two or more utterances, and 2 must be left to train "
               f"on; lower ")
    assert str(refused.value) == f"dev_speakers=5: {problem}dev_speakers to 4 or less"
    assert refused.value.as_flags() == f"--dev_speakers 5: {problem}--dev_speakers to 4 or less"
    assert len(read_finetune_data(data, dev_speakers=4).dev_speakers) == 4


# ---- F7: DIR/<group>/<speaker>/ is said to look like one ---------------------------------

def test_a_folder_of_groups_of_speaker_folders_is_warned_about(tmp_path, caplog):
    corpus = _kaldi_folder(tmp_path / "corpus", 4)
    root = tmp_path / "bymonth"
    for key, spk in (line.split() for line in open(os.path.join(corpus, "utt2spk"))):
        month = root / f"2024-0{int(key[-1]) + 1}" / spk
        month.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(corpus, "wav", key + ".wav"), month / (key + ".wav"))
    listing = list_speaker_folders(str(root))
    assert listing.speakers == 4
    assert (f"{root}: 4 subfolder name(s) holding audio recur under several of its speaker "
            f"folders ('spk0' is under 2024-01, 2024-02, 2024-03 and 1 more): the layout "
            f"looks like {root}/<group>/<speaker>/") in caplog.text
    assert f"Give one group's folder ({root}/2024-01) as the folder" in caplog.text


def test_speaker_folders_with_a_session_folder_beside_their_files_are_not(tmp_path, caplog):
    # each speaker folder holds files of its own and a session1/ holding more
    list_speaker_folders(_speaker_folders(tmp_path / "calls"))
    assert "recur under several" not in caplog.text
