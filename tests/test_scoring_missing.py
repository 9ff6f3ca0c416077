"""Scoring what extraction skipped: counted skips, a threshold, one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

from wespeaker_py.bin import compute_metrics, eval_plda, score, score_norm, train_plda
from wespeaker_py.io.ark import write_embeddings
from wespeaker_py.scoring.trials import MissingEmbeddingsError
from wespeaker_py.cli.common import run_main
from wespeaker_py.errors import RunFailedError
from wespeaker_py.utils.tables import DataFormatError

DIM = 8


@pytest.fixture
def world(tmp_path):
    """12 utterances of 4 speakers; ``spk1-u2`` was skipped by extraction (no embedding)."""
    rng = np.random.default_rng(0)
    keys = [f"spk{s}-u{u}" for s in range(4) for u in range(3)]
    centres = rng.normal(size=(4, DIM))
    matrix = np.array([centres[int(k[3])] + 0.3 * rng.normal(size=DIM) for k in keys],
                      dtype=np.float32)
    kept = [i for i, key in enumerate(keys) if key != "spk1-u2"]
    emb = tmp_path / "emb"
    write_embeddings(str(emb / "xvector.ark"), [keys[i] for i in kept], matrix[kept])
    write_embeddings(str(emb / "cohort.ark"), [f"c{i}" for i in range(6)],
                     rng.normal(size=(6, DIM)).astype(np.float32))
    (tmp_path / "utt2spk").write_text("".join(f"{k} {k[:4]}\n" for k in keys))
    trials = [(a, b, "target" if a[:4] == b[:4] else "nontarget")
              for a in keys[::2] for b in keys[1::2]]
    trial_path = tmp_path / "trials"
    trial_path.write_text("".join(" ".join(t) + "\n" for t in trials))
    complete = tmp_path / "complete"
    complete.write_text("".join(" ".join(t) + "\n" for t in trials if "spk1-u2" not in t))
    return {"root": tmp_path, "scp": str(emb / "xvector.scp"), "cohort": str(emb / "cohort.scp"),
            "trials": str(trial_path), "complete": str(complete), "num_trials": len(trials),
            "num_missing": sum("spk1-u2" in t for t in trials)}


def _cosine(world, trials, *extra):
    exp = str(world["root"] / "exp")
    return score.main(["--exp_dir", exp, "--eval_scp_path", world["scp"], "--device", "cpu",
                       *extra, trials])


def test_cosine_skips_and_counts_trials_without_embeddings(world, capfd):
    with pytest.raises(MissingEmbeddingsError, match=r"trials: 30 of 36 trials scored; 6 "
                                                     r"skipped .*spk1-u2 \(line 3\)"):
        _cosine(world, world["trials"])
    assert not os.path.exists(world["root"] / "exp" / "scores" / "trials.score")

    capfd.readouterr()
    (written,) = _cosine(world, world["trials"], "--max_missing_fraction", "0.2")
    summary = [line for line in capfd.readouterr().err.splitlines() if "trials scored" in line]
    assert len(summary) == 1 and "WARNING" in summary[0]
    assert "30 of 36 trials scored; 6 skipped (16.7%): 1 utterance has no embedding" \
        in summary[0] and summary[0].endswith("-> " + written)
    (reference,) = _cosine(world, world["complete"])
    assert open(written).read() == open(reference).read()


def test_score_norm_and_plda_skip_trials_without_embeddings(world, capsys):
    (cosine_file,) = _cosine(world, world["complete"])
    # a score file from elsewhere may name utterances this embedding set lacks
    with open(cosine_file, "a") as handle:
        handle.write("spk0-u0 spk1-u2 0.5 nontarget\n")
    norm_file = str(world["root"] / "norm.score")
    args = ["--score_norm_method", "snorm", "--top_n", "6", "--trial_score_file", cosine_file,
            "--score_norm_file", norm_file, "--cohort_emb_scp", world["cohort"],
            "--eval_emb_scp", world["scp"], "--device", "cpu"]
    with pytest.raises(MissingEmbeddingsError, match=r"30 of 31 trials scored"):
        score_norm.main(args)
    score_norm.main(args + ["--max_missing_fraction", "0.05"])
    assert len(open(norm_file).read().splitlines()) == 30

    root = world["root"]
    # utt2spk names spk1-u2 (line 6), which has no embedding: refused unless allowed
    train_args = ["--scp_path", world["scp"], "--utt2spk", str(root / "utt2spk"),
                  "--exp_dir", str(root / "plda"), "--iter", "2"]
    missing_enrollment = r"utt2spk: 1 of 12 utterances have no embedding .*line 6: 'spk1-u2'"
    with pytest.raises(MissingEmbeddingsError, match=missing_enrollment):
        train_plda.main(train_args)
    train_plda.main(train_args + ["--max_missing_fraction", "0.1"])
    model = next(str(root / "plda" / name) for name in os.listdir(root / "plda"))
    plda_scores = str(root / "trials.pldascore")
    plda_args = ["--enroll_scp_path", world["scp"], "--test_scp_path", world["scp"],
                 "--utt2spk", str(root / "utt2spk"), "--model_path", model,
                 "--score_path", plda_scores, "--trial", world["trials"]]
    # enroll models are speakers here: write model-vs-utterance trials
    with open(world["trials"], "w") as handle:
        handle.writelines(f"spk{s} spk{t}-u{u} {'target' if s == t else 'nontarget'}\n"
                          for s in range(4) for t in range(4) for u in range(3))
    with pytest.raises(MissingEmbeddingsError, match=missing_enrollment):
        eval_plda.main(plda_args)
    enrolled = root / "enrolled_utt2spk"   # the enrollment utterances that have an embedding
    enrolled.write_text("".join(line + "\n" for line in open(root / "utt2spk").read().split("\n")
                                if line and not line.startswith("spk1-u2 ")))
    with pytest.raises(MissingEmbeddingsError, match=r"44 of 48 trials scored"):
        eval_plda.main(plda_args[:4] + ["--utt2spk", str(enrolled)] + plda_args[6:])
    eval_plda.main(plda_args + ["--max_missing_fraction", "0.1"])
    assert len(open(plda_scores).read().splitlines()) == 44
    compute_metrics.main([plda_scores])
    assert "trials = 44 (11 target, 33 nontarget)" in capsys.readouterr().out


def _run(module, *args):
    result = subprocess.run([sys.executable, "-m", f"wespeaker_py.bin.{module}", *args],
                            capture_output=True, text=True, check=False)
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return result.returncode, last, result.stderr


def test_cohort_means_leave_out_utterances_without_embeddings(world, caplog):
    from wespeaker_py.io.ark import load_embeddings
    from wespeaker_py.scoring.embeddings import compute_speaker_means

    root = world["root"]
    table = load_embeddings(world["scp"])
    spk2utt = root / "spk2utt"
    spk2utt.write_text("".join(f"spk{s} " + " ".join(f"spk{s}-u{u}" for u in range(3)) + "\n"
                               for s in range(4)) + "ghost spk1-u2\n")
    with pytest.raises(MissingEmbeddingsError, match=(
            r"spk2utt: 2 of 13 utterances have no embedding in .*xvector\.scp \(the first, "
            r"line 2: 'spk1-u2'\); that is more than --max_missing_fraction 0 allows")):
        compute_speaker_means(table, str(spk2utt))
    with caplog.at_level("WARNING"):
        speakers, means = compute_speaker_means(table, str(spk2utt), max_missing_fraction=0.2)
    assert speakers == ["spk0", "spk1", "spk2", "spk3"]   # ghost has nothing left
    np.testing.assert_allclose(means[1], table.matrix[[table.index["spk1-u0"],
                                                       table.index["spk1-u1"]]].mean(axis=0),
                               rtol=1e-6)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "1 speaker(s) left out, none of their utterances has an embedding: 'ghost' " \
        "(line 5)" in logged
    assert "their speakers' means are taken without them" in logged
    with pytest.raises(MissingEmbeddingsError):
        compute_speaker_means(table, str(spk2utt), max_missing_fraction=0.1)


@pytest.mark.parametrize("lines, fraction", [
    (["spk0 spk0-u0 spk0-u1 spk0-u2", "spk1 spk1-u0 spk1-u1 spk1-u2",
      "spk2 spk2-u0 spk2-u1 spk2-u2", "spk3 spk3-u0"], 0.1),   # 1 of 10 missing
    (["spk1 spk1-u0 spk1-u1 spk1-u2", "spk0 spk0-u0"], 0.25),   # 1 of 4 missing
])
def test_exactly_the_allowed_fraction_missing_is_accepted_and_just_more_refused(
        world, lines, fraction):
    from wespeaker_py.io.ark import load_embeddings
    from wespeaker_py.scoring.embeddings import compute_speaker_means

    table = load_embeddings(world["scp"])
    spk2utt = world["root"] / "spk2utt"
    spk2utt.write_text("".join(line + "\n" for line in lines))
    speakers, means = compute_speaker_means(table, str(spk2utt), max_missing_fraction=fraction)
    assert speakers == [line.split()[0] for line in lines]
    kept = table.matrix[[table.index["spk1-u0"], table.index["spk1-u1"]]]
    np.testing.assert_allclose(means[speakers.index("spk1")], kept.mean(axis=0), rtol=1e-6)
    with pytest.raises(MissingEmbeddingsError, match="1 of .* that is more than"):
        compute_speaker_means(table, str(spk2utt), max_missing_fraction=fraction - 1e-9)


def test_command_line_errors_are_one_line(world, tmp_path):
    unlabelled = tmp_path / "unlabelled.score"
    unlabelled.write_text("a b 0.5\n")
    code, last, stderr = _run("compute_metrics", str(unlabelled))
    assert code == 2 and "Traceback" not in stderr
    assert last.startswith("compute_metrics.py: error: ") and \
        "unlabelled.score:1: no label column" in last

    empty = tmp_path / "empty.kaldi"
    empty.write_text("")
    code, last, stderr = _run("compute_metrics", str(tmp_path / "absent.score"))
    assert code == 2 and "No such file or directory" in last and "absent.score" in last

    code, last, stderr = _run("score", "--exp_dir", str(tmp_path / "exp"), "--eval_scp_path",
                              world["scp"], "--device", "cpu", str(empty))
    assert code == 2 and "Traceback" not in stderr and "empty.kaldi: holds no trials" in last
    # the traceback is there on request
    argv = ["--exp_dir", str(tmp_path / "exp"), "--eval_scp_path", world["scp"], str(empty)]
    with pytest.raises(DataFormatError, match="holds no trials"):
        run_main(score.main, argv + ["--debug"])
    assert run_main(score.main, argv) == 2


@pytest.mark.parametrize("parser_of", [score.build_parser, score_norm.build_parser,
                                       eval_plda.build_parser])
@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_max_missing_fraction_outside_zero_one_is_a_usage_error(parser_of, value, capsys):
    with pytest.raises(SystemExit) as stop:
        parser_of().parse_args(["--max_missing_fraction", value])
    assert stop.value.code == 2
    assert f"expected a number in [0, 1], got '{value}'" in capsys.readouterr().err


def test_run_main_exit_codes(capsys, monkeypatch):
    def fails_with(error):
        def main(argv):
            raise error
        return main

    assert run_main(fails_with(RunFailedError("nothing extracted")), [], prog="x") == 1
    assert capsys.readouterr().err == "x: error: nothing extracted (run with --debug for " \
                                      "the traceback)\n"
    assert run_main(fails_with(KeyboardInterrupt()), [], prog="x") == 130
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as a user error
        run_main(fails_with(ZeroDivisionError()), [], prog="x")
    monkeypatch.setenv("WESPEAKER_PY_DEBUG", "1")
    with pytest.raises(RunFailedError):
        run_main(fails_with(RunFailedError("x")), [], prog="x")


def test_a_fraction_missing_that_equals_the_limit_is_accepted_whatever_its_rounding(tmp_path):
    # 0.58 * 50 is 28.999999999999996 in floating point: 29 of 50 missing is 0.58 exactly
    from wespeaker_py.io.ark import load_embeddings
    from wespeaker_py.scoring.embeddings import compute_speaker_means
    present = [f"u{i}" for i in range(21)]
    scp = write_embeddings(str(tmp_path / "x.ark"), present,
                           np.ones((21, DIM), dtype=np.float32))
    (tmp_path / "spk2utt").write_text("spk " + " ".join(
        present + [f"gone{i}" for i in range(29)]) + "\n")
    speakers, _ = compute_speaker_means(load_embeddings(scp), str(tmp_path / "spk2utt"),
                                        max_missing_fraction=0.58)
    assert speakers == ["spk"]
