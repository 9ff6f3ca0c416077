"""QMF text files: the column-wise gather writes what the per-trial definition does; the
numpy reader of factor files gives the numbers a plain reading of the format gives, and
where numpy gives up, the first bad line is named."""
import itertools

import numpy as np
import pytest

from scoring_helpers import pair_features
from wespeaker_py.scoring import qmf
from wespeaker_py.scoring.trials import LABEL_NAMES, parse_label, read_score_file
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
        features = [v for first, second in groups for v in pair_features(first, second)]
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
    expected = np.array([pair_features(a, b)
                         for a, b in zip(first.tolist(), second.tolist())])
    assert np.array_equal(columns, expected)
    assert np.array_equal(np.signbit(columns), np.signbit(expected))


def expected_chunks(text, chunk):
    """The chunks of a factor file as a plain reading of the format gives them: ``chunk``
    lines of the file at a time, blank lines skipped, the keys and label as split by
    ``str.split``, the numbers by ``float``."""
    rows = [(n, line.split()) for n, line in enumerate(text.split("\n"), start=1)
            if line.split()]
    if text.startswith("\ufeff"):
        rows[0][1][0] = rows[0][1][0][1:]
    labelled = parse_label(rows[0][1][2]) is not None
    chunks = []
    for _, part in itertools.groupby(rows, key=lambda row: (row[0] - 1) // chunk):
        part = list(part)
        numbers = np.array([[float(v) for v in fields[3 if labelled else 2:]]
                            for _, fields in part])
        labels = np.array([parse_label(fields[2]) for _, fields in part]) if labelled else None
        chunks.append(([fields[:2] for _, fields in part], [n for n, _ in part], numbers,
                       labels))
    return chunks


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
def test_regular_files_are_read_number_for_number(tmp_path, monkeypatch, labelled):
    monkeypatch.setattr(qmf, "_CHUNK", 3)
    lines = REGULAR[:1] + REGULAR[2:] + REGULAR[1:2] * 3 if labelled else [
        f"e{i} t{i} {i / 7!r} {-i}.25 0.0\n" for i in range(8)]
    path = tmp_path / "factors"
    path.write_text("".join(lines), encoding="utf-8")
    chunks = list(qmf._factor_chunks(str(path)))
    assert_same_chunks(chunks, expected_chunks("".join(lines), 3))
    assert (chunks[0][3] is not None) == labelled
    qmf._raise_first_bad_line(str(path))   # finds nothing wrong


TRICKY_FILES = {
    "blank lines": "a b target 1 2\n\n  \n\x0c\nc d nontarget 3 4\n\n",
    "bom only on the first line": "\ufeffa b target 1 2\nc d nontarget 3 4\n",
    "windows line ends": "a b target 1 2\r\nc d nontarget 3 4\r\n",
    "line separator between keys": "a\u2028b target 1 2\nd e nontarget 3 4\n",
}
BAD = {
    "not finite": ("a b target 1 2\nc d nontarget inf 4\n", 2, "is NaN or inf"),
    "not a number": ("a b target 1 2\nc d nontarget 3 x\n", 2, "is not a number"),
    # float() reads these, numpy does not: the format's numbers are numpy's
    "underscored number": ("a b target 1 2\nc d nontarget 1_0 2\n", 2, "is not a number"),
    "arabic digits": ("a b target 1 2\nc d nontarget \u0661\u0662 2\n", 2,
                      "is not a number"),
    "extra column": ("a b target 1 2\nc d nontarget 3 4 5\n", 2, "expected 2 numbers"),
    "short line": ("a b target 1 2\nc d nontarget 3\n", 2, "expected 2 numbers"),
    "label on some lines": ("a b 1 2 3\nc d target 3 4\n", 2, "label column present"),
    "label missing": ("a b target 1 2\nc d 3 4 5\n", 2, "label column present"),
    "three fields": ("a b 1\n", 1, "expected at least 4 fields"),
    "blank then three fields": ("\n \na b 1\n", 3, "expected at least 4 fields"),
}


@pytest.mark.parametrize("name", sorted(TRICKY_FILES))
def test_irregular_but_valid_files_are_read(tmp_path, monkeypatch, name):
    monkeypatch.setattr(qmf, "_CHUNK", 2)   # a chunk of blank lines only, in one case
    path = tmp_path / "factors"
    path.write_text(TRICKY_FILES[name], encoding="utf-8", newline="")
    chunks = list(qmf._factor_chunks(str(path)))
    assert_same_chunks(chunks, expected_chunks(TRICKY_FILES[name].replace("\r", ""), 2))
    qmf._raise_first_bad_line(str(path))   # finds nothing wrong


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_first_bad_line_is_named(tmp_path, monkeypatch, name):
    monkeypatch.setattr(qmf, "_CHUNK", 1)   # the bad line in a later chunk than the first
    text, line_no, reason = BAD[name]
    path = tmp_path / "factors"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError) as error:
        list(qmf._factor_chunks(str(path)))
    assert str(error.value).startswith(f"{path}:{line_no}: ")
    assert error.value.line_no == line_no and reason in error.value.reason


def test_what_numpy_refuses_and_no_line_explains_is_named_with_numpys_reason(
        tmp_path, monkeypatch):
    path = tmp_path / "factors"
    path.write_text("a b target 1 2\nc d nontarget 3 4\n", encoding="utf-8")

    def refuse(*args, **kwargs):
        raise ValueError("numpy's own reason\nand more")
    monkeypatch.setattr(qmf.np, "loadtxt", refuse)
    with pytest.raises(DataFormatError) as error:
        qmf.read_calibration_factors(str(path))
    assert str(error.value) == (f"{path}: not read as a calibration factor file "
                                f"(numpy's own reason)")


def test_infer_scores_every_trial_of_every_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(qmf, "_CHUNK", 4)
    rng = np.random.default_rng(5)
    values = np.round(rng.normal(size=(10, 3)), 4)
    path = tmp_path / "factors"
    path.write_text("".join(f"e{i % 3} t{i} {'target' if i % 2 else 'nontarget'} "
                            + " ".join(f"{v:.4f}" for v in values[i]) + "\n"
                            for i in range(10)))
    model = str(tmp_path / "model.pt")
    weight = np.array([1.5, -0.25, 2.0])
    qmf.save_calibration(model, qmf.LinearCalibration(weight=weight, bias=0.125))
    assert qmf.infer_calibration_file(str(path), model, str(tmp_path / "out.score")) == 10
    lines = [line.split() for line in (tmp_path / "out.score").read_text().splitlines()]
    assert [fields[:2] for fields in lines] == [[f"e{i % 3}", f"t{i}"] for i in range(10)]
    assert [fields[3] for fields in lines] == ["target" if i % 2 else "nontarget"
                                               for i in range(10)]
    np.testing.assert_allclose([float(fields[2]) for fields in lines],
                               values @ weight + 0.125, atol=1e-4)


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
