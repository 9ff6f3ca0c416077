"""QMF text files: the column-wise gather writes what the per-trial definition does, and
the numpy reader of factor files gives what the per-line reader gives (or hands over to
it, which names the bad line)."""
import numpy as np
import pytest

from wespeaker_py.scoring import qmf
from wespeaker_py.scoring.trials import LABEL_NAMES, read_score_file
from wespeaker_py.utils.tables import DataFormatError, read_utt2dur

# ties of -0.0 against 0.0, equal sides, means at and around the ratio floor, negatives
TRICKY = [0.0, -0.0, 1e-4, -1e-4, 5e-5, -5e-5, 0.3, -0.3, 12.5, 2.0]


def write_norm_file(path, rng, count, labelled=True):
    values = rng.choice(TRICKY, size=(count, 4))
    with open(path, "w") as out:
        for i in range(count):
            label = f" {'target' if i % 3 == 0 else 'nontarget'}" if labelled else ""
            out.write(f"u{i % 7} v{i % 5} {rng.normal():.5f}{label} "
                      + " ".join(f"{v:.4f}" for v in values[i]) + "\n")


def per_trial_gather(score_file, durations):
    """The factor file text as the per-trial definition (pair_features, f-strings) makes it."""
    trials = read_score_file(score_file, qmf.QMF_NORM_COLUMNS)
    lines = []
    for n in range(len(trials)):
        keys = (trials.enroll_keys[trials.enroll[n]], trials.test_keys[trials.test[n]])
        extra = trials.extra[n].tolist()
        groups = [] if durations is None else [[durations[key] for key in keys]]
        groups += [(extra[0], extra[1]), (extra[2], extra[3])]
        features = [v for first, second in groups for v in qmf.pair_features(first, second)]
        label = "" if trials.labels is None else f" {LABEL_NAMES[trials.labels[n]]}"
        lines.append(f"{' '.join(keys)}{label} {trials.scores[n]:.5f} "
                     + " ".join(f"{v:.4f}" for v in features) + "\n")
    return "".join(lines)


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("drop_duration", [True, False])
def test_gather_writes_the_per_trial_text_byte_for_byte(tmp_path, monkeypatch, labelled,
                                                        drop_duration):
    monkeypatch.setattr(qmf, "_CHUNK", 7)   # several chunks, the last one short
    rng = np.random.default_rng(3)
    score_file = str(tmp_path / "norm.score")
    write_norm_file(score_file, rng, 40, labelled)
    utt2dur = tmp_path / "utt2dur"
    utt2dur.write_text("".join(f"u{i} {d}\n" for i, d in enumerate([3.5, 20.0, 25.0, 3.5, 0.5,
                                                                    7.25, 1.0]))
                       + "".join(f"v{i} {d}\n" for i, d in enumerate([3.5, 21.0, 0.5, 9.0, 2.0])))
    out = str(tmp_path / "factors")
    qmf.gather_calibration_factors(score_file, out, None if drop_duration else str(utt2dur),
                                   20.0, drop_duration)
    durations = None if drop_duration else read_utt2dur(str(utt2dur), 20.0)
    with open(out, encoding="utf-8") as handle:
        assert handle.read() == per_trial_gather(score_file, durations)


def test_pair_feature_columns_match_pair_features_on_ties_and_signed_zeros():
    values = np.array(TRICKY)
    first, second = np.repeat(values, len(values)), np.tile(values, len(values))
    columns = np.stack(qmf.pair_feature_columns(first, second), axis=1)
    expected = np.array([qmf.pair_features(a, b)
                         for a, b in zip(first.tolist(), second.tolist())])
    assert np.array_equal(columns, expected)
    assert np.array_equal(np.signbit(columns), np.signbit(expected))


def per_line(path):
    return list(qmf._iter_factor_chunks(path))


def assert_same_chunks(got, expected):
    assert len(got) == len(expected)
    for (keys, lines, numbers, labels), (keys_0, lines_0, numbers_0, labels_0) in zip(
            got, expected):
        assert keys == keys_0 and lines == lines_0
        assert numbers.dtype == numbers_0.dtype and np.array_equal(numbers, numbers_0)
        assert np.array_equal(np.signbit(numbers), np.signbit(numbers_0))
        if labels_0 is None:
            assert labels is None
        else:
            assert labels.dtype == labels_0.dtype and np.array_equal(labels, labels_0)


REGULAR = [
    "a b target 1.5 -0.0000 2.0 1e-320\n",
    "\ufeffx y nontarget +.5 5. 0.1000000000000000055511151231257827 -3\n",
    "é\x0cf\u00a0TGT  -1e3\t7 8 9\n",
    "k\x00l m nontgt 1 2 3 4\n",
]


@pytest.mark.parametrize("labelled", [True, False])
def test_numpy_reader_reads_regular_files_as_the_per_line_reader(tmp_path, monkeypatch,
                                                                 labelled):
    monkeypatch.setattr(qmf, "_CHUNK", 3)
    lines = REGULAR[:1] + REGULAR[2:] + REGULAR[1:2] * 3 if labelled else [
        f"e{i} t{i} {i / 7!r} {-i}.25 0.0\n" for i in range(8)]
    path = tmp_path / "factors"
    path.write_text("".join(lines), encoding="utf-8")
    fast = list(qmf._numpy_factor_chunks(str(path)))   # no hand-over for these
    assert_same_chunks(fast, per_line(str(path)))
    assert (fast[0][3] is not None) == labelled


TRICKY_FILES = {
    "blank line": "a b target 1 2\n\n  \nc d nontarget 3 4\n",
    "underscored number": "a b target 1_0 2\nc d nontarget 3 4\n",
    "arabic digits": "a b target \u0661\u0662 2\nc d nontarget 3 4\n",
    "bom only on the first line": "\ufeffa b target 1 2\nc d nontarget 3 4\n",
    "windows line ends": "a b target 1 2\r\nc d nontarget 3 4\r\n",
    "line separator between keys": "a\u2028b target 1 2\nd e nontarget 3 4\n",
}
BAD = {
    "not finite": ("a b target 1 2\nc d nontarget inf 4\n", 2, "is NaN or inf"),
    "not a number": ("a b target 1 2\nc d nontarget 3 x\n", 2, "is not a number"),
    "extra column": ("a b target 1 2\nc d nontarget 3 4 5\n", 2, "expected 2 numbers"),
    "short line": ("a b target 1 2\nc d nontarget 3\n", 2, "expected 2 numbers"),
    "label on some lines": ("a b 1 2 3\nc d target 3 4\n", 2, "label column present"),
    "label missing": ("a b target 1 2\nc d 3 4 5\n", 2, "label column present"),
    "three fields": ("a b 1\n", 1, "expected at least 4 fields"),
}


@pytest.mark.parametrize("name", sorted(TRICKY_FILES))
def test_irregular_files_are_read_as_the_per_line_reader_reads_them(tmp_path, name):
    path = tmp_path / "factors"
    path.write_text(TRICKY_FILES[name], encoding="utf-8")
    chunks = qmf._read_factor_chunks(str(path), list)
    assert_same_chunks(chunks, per_line(str(path)))


def read_line_by_line(monkeypatch):
    def give_up(path):
        raise qmf._IrregularFactorFile("forced")
        yield
    monkeypatch.setattr(qmf, "_numpy_factor_chunks", give_up)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_line_is_named_as_the_per_line_reader_names_it(tmp_path, monkeypatch, name):
    monkeypatch.setattr(qmf, "_CHUNK", 1)   # the bad line in a later chunk than the first
    text, line_no, reason = BAD[name]
    path = tmp_path / "factors"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError) as per_line_error:
        per_line(str(path))
    with pytest.raises(DataFormatError) as error:
        qmf._read_factor_chunks(str(path), list)
    assert str(error.value) == str(per_line_error.value)
    assert error.value.line_no == line_no and reason in error.value.reason


def test_infer_writes_the_same_scores_either_way(tmp_path, monkeypatch):
    monkeypatch.setattr(qmf, "_CHUNK", 4)
    rng = np.random.default_rng(5)
    path = tmp_path / "factors"
    path.write_text("".join(f"e{i % 3} t{i} {'target' if i % 2 else 'nontarget'} "
                            + " ".join(f"{v:.4f}" for v in rng.normal(size=3)) + "\n"
                            for i in range(10)))
    model = str(tmp_path / "model.pt")
    calibration = qmf.LinearCalibration(weight=np.array([1.5, -0.25, 2.0]), bias=0.125)
    qmf.save_calibration(model, calibration)
    qmf.infer_calibration_file(str(path), model, str(tmp_path / "fast.score"))
    read_line_by_line(monkeypatch)
    qmf.infer_calibration_file(str(path), model, str(tmp_path / "slow.score"))
    assert (tmp_path / "fast.score").read_bytes() == (tmp_path / "slow.score").read_bytes()


def test_empty_and_unlabelled_files_keep_their_messages(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(DataFormatError, match="holds no trials"):
        qmf.read_calibration_factors(str(empty))
    unlabelled = tmp_path / "unlabelled"
    unlabelled.write_text("a b 1 2\nc d 3 4\n")
    with pytest.raises(DataFormatError, match=r"unlabelled:1: training calibration needs "
                                              "labelled trials"):
        qmf.read_calibration_factors(str(unlabelled))
