"""Embedding ark/scp and trial/score file handling, including every bad-input case."""
import os

import kaldiio
import numpy as np
import pytest

from wespeaker_py.io.ark import load_embeddings, read_scp_offsets, write_embeddings
from scoring_helpers import compute_mean_vector
from wespeaker_py.scoring.embeddings import (compute_speaker_means, load_mean_vector,
                                             save_mean_vector, write_speaker_means)
from wespeaker_py.scoring.trials import (read_labelled_scores, read_score_file, read_trials,
                                         write_score_file)
from wespeaker_py.utils.tables import DataFormatError


def make_embeddings(tmp_path, keys, dim=8, seed=0, name="xvector"):
    matrix = np.random.default_rng(seed).normal(size=(len(keys), dim)).astype(np.float32)
    ark, scp = str(tmp_path / f"{name}.ark"), str(tmp_path / f"{name}.scp")
    write_embeddings(ark, keys, matrix)
    return scp, matrix


def test_ark_scp_round_trip_with_kaldiio_and_ours(tmp_path):
    keys = ["spk1/vid/00001.wav", "spk1/vid/00002.wav", "spk2/v/00001.wav"]
    scp, matrix = make_embeddings(tmp_path, keys)
    table = load_embeddings(scp)
    assert table.keys == keys
    np.testing.assert_array_equal(table.matrix, matrix)
    # the files are ordinary Kaldi tables
    for key, vector in kaldiio.load_scp_sequential(scp):
        np.testing.assert_array_equal(vector, matrix[keys.index(key)])
    bare_ark = load_embeddings(str(tmp_path / "xvector.ark"))
    np.testing.assert_array_equal(bare_ark.matrix, matrix)
    # the scp stays valid from another working directory
    with open(scp) as handle:
        assert os.path.isabs(handle.readline().split()[1].rsplit(":", 1)[0])
    subset = load_embeddings(scp, keys=[keys[2]])
    assert subset.keys == [keys[2]]


def test_an_ark_under_a_folder_with_spaces_reads_back(tmp_path):
    folder = tmp_path / "my exp" / "emb  two"
    folder.mkdir(parents=True)
    scp, matrix = make_embeddings(folder, ["a", "b"])
    ark = str(folder / "xvector.ark")
    assert open(scp).readline() == f"a {ark}:2\n"
    table = load_embeddings(scp)
    assert table.keys == ["a", "b"]
    np.testing.assert_array_equal(table.matrix, matrix)
    # the index read when arks are merged: key, then ark path (spaces and all) and offset
    assert [key for key, _ in read_scp_offsets(scp, expected_ark=ark)] == ["a", "b"]
    (tmp_path / "short.scp").write_text(f"a {ark}:2\nb\n")
    with pytest.raises(DataFormatError, match=r"short\.scp:2: expected '<key> <ark>:<offset>'"):
        load_embeddings(str(tmp_path / "short.scp"))
    with pytest.raises(DataFormatError, match=r"short\.scp:2: expected '<key> <ark>:<offset>'"):
        read_scp_offsets(str(tmp_path / "short.scp"), expected_ark=ark)


def test_nan_embedding_names_file_line_and_key(tmp_path):
    keys = ["a", "b", "c"]
    matrix = np.ones((3, 4), dtype=np.float32)
    matrix[1, 2] = np.nan
    write_embeddings(str(tmp_path / "x.ark"), keys, matrix)
    with pytest.raises(DataFormatError, match=r"x\.scp:2: embedding 'b' contains NaN or inf"):
        load_embeddings(str(tmp_path / "x.scp"))
    matrix[1, 2] = np.inf
    write_embeddings(str(tmp_path / "x.ark"), keys, matrix)
    with pytest.raises(DataFormatError, match=r"'b' contains NaN or inf"):
        load_embeddings(str(tmp_path / "x.ark"))


def test_dimension_mismatch_duplicates_and_bad_offsets(tmp_path):
    ark = str(tmp_path / "mixed.ark")
    kaldiio.save_ark(ark, {"a": np.ones(4, np.float32), "b": np.ones(5, np.float32)},
                     scp=str(tmp_path / "mixed.scp"))
    with pytest.raises(DataFormatError, match=r"mixed\.scp:2: embedding 'b' has dimension 5"):
        load_embeddings(str(tmp_path / "mixed.scp"))
    lines = (tmp_path / "mixed.scp").read_text().splitlines()
    (tmp_path / "dup.scp").write_text(lines[0] + "\n" + lines[0] + "\n")
    with pytest.raises(DataFormatError, match=r"dup\.scp:2: embedding 'a' appears twice"):
        load_embeddings(str(tmp_path / "dup.scp"))
    (tmp_path / "bad.scp").write_text(f"a {tmp_path}/missing.ark:12\n")
    with pytest.raises(DataFormatError, match=r"bad\.scp:1: cannot read embedding 'a'"):
        load_embeddings(str(tmp_path / "bad.scp"))


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_embeddings(str(tmp_path / "e.ark"), ["ok", "bad key"], np.zeros((2, 3)))
    assert os.listdir(tmp_path) == []


def test_mean_vector_and_speaker_means(tmp_path):
    keys = ["s1-u1", "s1-u2", "s2-u1", "s2-u2", "s2-u3"]
    scp, matrix = make_embeddings(tmp_path, keys)
    table = load_embeddings(scp)
    np.testing.assert_allclose(compute_mean_vector(table), matrix.mean(axis=0), rtol=1e-6)
    save_mean_vector(str(tmp_path / "mean_vec.npy"), compute_mean_vector(table))
    np.testing.assert_allclose(load_mean_vector(str(tmp_path / "mean_vec.npy"), 8),
                               matrix.mean(axis=0), rtol=1e-6)
    (tmp_path / "spk2utt").write_text("s2 s2-u1 s2-u2 s2-u3\ns1 s1-u1 s1-u2\n")
    speakers, means = compute_speaker_means(table, str(tmp_path / "spk2utt"))
    assert speakers == ["s2", "s1"]
    np.testing.assert_allclose(means[0], matrix[2:].mean(axis=0), rtol=1e-6)
    scp_out = write_speaker_means(str(tmp_path / "spk2utt"), scp,
                                  str(tmp_path / "spk_xvector.ark"))
    assert scp_out == str(tmp_path / "spk_xvector.scp")
    np.testing.assert_allclose(load_embeddings(scp_out).matrix, means)
    with pytest.raises(DataFormatError, match="shape"):
        load_mean_vector(str(tmp_path / "mean_vec.npy"), 16)


def test_speaker_means_of_interleaved_utterances_are_written_under_their_speakers(tmp_path):
    # utterance ids not prefixed by their speaker (several jobs' lists, say): each speaker's
    # rows are scattered through the scp, and spk2utt's order is not the sorted one
    keys = ["u1", "u2", "u3", "u4", "u5", "u6"]
    owner = {"u1": "zed", "u2": "amy", "u3": "zed", "u4": "bob", "u5": "amy", "u6": "zed"}
    scp, matrix = make_embeddings(tmp_path, keys)
    (tmp_path / "spk2utt").write_text("zed u1 u3 u6\namy u2 u5\nbob u4\n")
    scp_out = write_speaker_means(str(tmp_path / "spk2utt"), scp,
                                  str(tmp_path / "spk_xvector.ark"))
    written = load_embeddings(scp_out)
    assert written.keys == ["zed", "amy", "bob"]
    for speaker, row in zip(written.keys, written.matrix):
        mine = [matrix[i] for i, key in enumerate(keys) if owner[key] == speaker]
        np.testing.assert_allclose(row, np.mean(mine, axis=0), rtol=1e-6)


def test_trial_forms(tmp_path):
    (tmp_path / "vox").write_text("a b target\na c nontarget\nd b tgt\n")
    (tmp_path / "first").write_text("1 a b\n0 a c\n")
    (tmp_path / "plain").write_text("a b\nd c\n")
    vox = read_trials(str(tmp_path / "vox"))
    assert vox.enroll_keys == ["a", "d"] and vox.test_keys == ["b", "c"]
    np.testing.assert_array_equal(vox.enroll, [0, 0, 1])
    np.testing.assert_array_equal(vox.labels, [1, 0, 1])
    first = read_trials(str(tmp_path / "first"))
    np.testing.assert_array_equal(first.labels, [1, 0])
    assert first.enroll_keys == ["a"] and first.test_keys == ["b", "c"]
    assert read_trials(str(tmp_path / "plain")).labels is None


@pytest.mark.parametrize("text,line,message", [
    ("a b target\na b c d\n", 2, "at most 3 fields"),
    ("a b target\na\n", 2, "at least 2 fields"),
    ("a b target\na b maybe\n", 2, "expected 'enroll test target"),
    ("a b target\n1 a b\n", 2, "file started with the label_last form"),
    ("a b target\na b\n", 2, "file started with the label_last form"),
])
def test_malformed_trials_name_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "trials.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=rf"trials\.txt:{line}: .*{message}"):
        read_trials(str(path))


def test_unknown_utterance_names_trials_line(tmp_path):
    (tmp_path / "trials").write_text("a b target\na c nontarget\nghost b target\n")
    trials = read_trials(str(tmp_path / "trials"))
    index = {"a": 0, "b": 1}
    with pytest.raises(DataFormatError, match=r"trials:2: test key 'c' has no embedding in x\.scp"):
        trials.rows_in(index, "test", "x.scp")
    with pytest.raises(DataFormatError, match=r"trials:3: enroll key 'ghost' has no embedding"):
        trials.rows_in(index, "enroll", "x.scp")
    index.update(c=2, ghost=3)
    np.testing.assert_array_equal(trials.rows_in(index, "enroll", "x.scp"), [0, 3])
    np.testing.assert_array_equal(trials.rows_in(index, "test", "x.scp"), [1, 2])


def test_score_file_round_trip_and_errors(tmp_path):
    (tmp_path / "t").write_text("1 a b\n0 a c\n")
    trials = read_trials(str(tmp_path / "t"))
    out = str(tmp_path / "t.score")
    write_score_file(out, trials, np.array([0.25, -0.125]),
                     extra=np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert open(out).read() == ("a b 0.25000 target 1.0000 2.0000\n"
                                "a c -0.12500 nontarget 3.0000 4.0000\n")
    reread = read_score_file(out, extra_columns=2)
    np.testing.assert_array_equal(reread.scores, [0.25, -0.125])
    np.testing.assert_array_equal(reread.labels, [1, 0])
    scores, labels = read_labelled_scores(out)
    np.testing.assert_array_equal(labels, [1, 0])
    (tmp_path / "bad.score").write_text("a b 0.1 target\na c x target\n")
    with pytest.raises(DataFormatError, match=r"bad\.score:2: score 'x' is not a number"):
        read_score_file(str(tmp_path / "bad.score"))
    (tmp_path / "nolabel.score").write_text("a b 0.1\n")
    with pytest.raises(DataFormatError, match=r"nolabel\.score:1: no label column"):
        read_labelled_scores(str(tmp_path / "nolabel.score"))
    (tmp_path / "nan.score").write_text("a b 0.1 target\na c nan nontarget\n")
    with pytest.raises(DataFormatError, match=r"nan\.score:2: score 'nan' is not finite"):
        read_labelled_scores(str(tmp_path / "nan.score"))
    (tmp_path / "targets.score").write_text("a b 0.1 target\na c 0.2 target\n")
    with pytest.raises(DataFormatError, match=r"targets\.score: metrics need both target "
                                              r"and nontarget trials \(got 2 targets of 2\)"):
        read_labelled_scores(str(tmp_path / "targets.score"))
    (tmp_path / "mixed.score").write_text("a b 0.1 target\na c 0.2\n")
    with pytest.raises(DataFormatError, match=r"mixed\.score:2: label column"):
        read_score_file(str(tmp_path / "mixed.score"))
