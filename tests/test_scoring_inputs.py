"""Scoring inputs that do not fit together: stale scores and cohorts, utterances without
an embedding in PLDA lists, and user errors that end in one line (exit 2, no traceback)."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from recipe_helpers import V2_DIR, run_script
from wespeaker_py.bin import eval_plda, score, score_calibration, score_norm, train_plda
from wespeaker_py.io.ark import load_embeddings, write_embeddings
from wespeaker_py.scoring import qmf, trials
from wespeaker_py.scoring.trials import MissingEmbeddingsError
from wespeaker_py.utils.tables import DataFormatError

DIM = 16
TRIALS = "T"


def write_set(root, name, seed, num_speakers=10, per_speaker=6, offset=0.0):
    """Embeddings of ``name`` (keys ``<name>-sNN-uN``) with utt2spk, spk2utt and utt2dur."""
    rng = np.random.default_rng(seed)
    keys = [f"{name}-s{s:02d}-u{u}" for s in range(num_speakers) for u in range(per_speaker)]
    centres = rng.normal(size=(num_speakers, DIM)) + offset
    matrix = np.array([centres[s] + 0.5 * rng.normal(size=DIM)
                       for s in range(num_speakers) for _ in range(per_speaker)], np.float32)
    write_embeddings(os.path.join(root, "exp", "embeddings", name, "xvector.ark"), keys, matrix)
    data = os.path.join(root, "data", name)
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "utt2spk"), "w") as out:
        out.writelines(f"{k} {k[:-3]}\n" for k in keys)
    with open(os.path.join(data, "spk2utt"), "w") as out:
        for s in range(num_speakers):
            spk = f"{name}-s{s:02d}"
            out.write(spk + " " + " ".join(k for k in keys if k.startswith(spk + "-")) + "\n")
    with open(os.path.join(data, "utt2dur"), "w") as out:   # alternately short and long
        out.writelines(f"{k} {3.0 + 5.0 * (i % 2):.2f}\n" for i, k in enumerate(keys))
    return keys


@pytest.fixture
def recipe(tmp_path):
    """An experiment of the v2 recipe's layout: evaluation set vox1, back-end set vox2_dev."""
    root = str(tmp_path)
    keys = write_set(root, "vox1", 0)
    write_set(root, "vox2_dev", 1, num_speakers=12)
    rng = np.random.default_rng(2)
    os.makedirs(f"{root}/data/vox1/trials")
    with open(f"{root}/data/vox1/trials/{TRIALS}", "w") as out:
        for _ in range(200):
            a, b = rng.choice(len(keys), 2, replace=False)
            label = "target" if keys[a][:-3] == keys[b][:-3] else "nontarget"
            out.write(f"{keys[a]} {keys[b]} {label}\n")
    return root


def stage(root, script, *args, check=True):
    """Run one of the v2 recipe's scoring scripts on the experiment at ``root``."""
    return run_script(V2_DIR, f"local/{script}", "--data", f"{root}/data", "--exp_dir",
                      f"{root}/exp", "--trials", TRIALS, *args, check=check)


def refused(root, script, *args, says=()):
    """Run ``script`` as :func:`stage` does, and check that it fails saying each of ``says``."""
    result = stage(root, script, *args, check=False)
    assert result.returncode != 0
    for words in says:
        assert words in result.stderr
    return result


def age(root, seconds=100):
    """Move every file's time ``seconds`` back: what is written next is newer."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            when = os.path.getmtime(path) - seconds
            os.utime(path, (when, when))


def reextract(root, name):
    """New embeddings of the same utterances (as from another model), written now."""
    table = load_embeddings(f"{root}/exp/embeddings/{name}/xvector.scp")
    write_embeddings(f"{root}/exp/embeddings/{name}/xvector.ark", table.keys,
                     1.5 * table.matrix[:, ::-1] + 1.0)


def test_score_norm_recipe_refuses_cosine_scores_and_cohorts_of_older_embeddings(recipe):
    norm = ("--top_n", "5")
    stage(recipe, "score.sh", "--stage", "1", "--stop-stage", "1")
    stage(recipe, "score_norm.sh", "--stage", "1", "--stop-stage", "2", *norm)
    normalised = f"{recipe}/exp/scores/vox2_dev_asnorm5_{TRIALS}.score"
    before = open(normalised).read()

    age(recipe)
    reextract(recipe, "vox1")
    refused(recipe, "score_norm.sh", "--stage", "1", "--stop-stage", "2", *norm,
            says=(f"scores/{TRIALS}.score is older than the embeddings",
                  "score the trials again (score.sh) first"))
    assert open(normalised).read() == before
    stage(recipe, "score.sh", "--stage", "1", "--stop-stage", "1")
    stage(recipe, "score_norm.sh", "--stage", "1", "--stop-stage", "2", *norm)
    assert open(normalised).read() != before

    # a cohort older than the back-end embeddings, with stage 1 not run
    spk_scp = f"{recipe}/exp/embeddings/vox2_dev/spk_xvector.scp"
    age(recipe)
    reextract(recipe, "vox2_dev")
    refused(recipe, "score_norm.sh", "--stage", "2", "--stop-stage", "2", *norm,
            says=(f"{spk_scp} is older than", "make the speaker means again (stage 1) first"))


def test_calibration_recipe_refuses_normalised_scores_of_older_embeddings(recipe):
    args = ("--top_n", "5", "--each_trial_num", "200")
    stage(recipe, "score.sh", "--stage", "1", "--stop-stage", "1")
    stage(recipe, "score_norm.sh", "--stage", "1", "--stop-stage", "2", *args[:2])
    stage(recipe, "score_calibration.sh", "--stage", "1", "--stop-stage", "4", *args)
    calibrated = f"{recipe}/exp/scores/cali_vox2_dev_asnorm5_{TRIALS}.score"
    before = open(calibrated).read()

    # evaluation embeddings extracted again; nothing scored or normalised since
    age(recipe)
    reextract(recipe, "vox1")
    refused(recipe, "score_calibration.sh", "--stage", "1", "--stop-stage", "4", *args,
            says=(f"scores/vox2_dev_asnorm5_{TRIALS}.score is older than the embeddings "
                  "it was normalised with", "normalise the scores again (score_norm.sh"))
    assert open(calibrated).read() == before

    # the back-end set extracted again: its cohort means are stale until score_norm.sh's
    # stage 1 makes them again
    reextract(recipe, "vox2_dev")
    refused(recipe, "score_calibration.sh", "--stage", "1", "--stop-stage", "4", *args,
            says=("spk_xvector.scp is older than the embeddings or spk2utt of vox2_dev",))

    stage(recipe, "score.sh", "--stage", "1", "--stop-stage", "1")
    stage(recipe, "score_norm.sh", "--stage", "1", "--stop-stage", "2", *args[:2])
    stage(recipe, "score_calibration.sh", "--stage", "1", "--stop-stage", "4", *args)
    assert open(calibrated).read() != before


@pytest.mark.parametrize("script, stop", [("score_norm.sh", "2"), ("score_calibration.sh", "4")])
def test_score_norm_recipe_refuses_the_evaluation_set_as_its_cohort(recipe, script, stop):
    """Speaker means of the evaluation set hold each test utterance's own speaker (and QMF
    would draw its calibration trials from the test speakers): refused before anything is
    made, naming both flags."""
    stage(recipe, "score.sh", "--stage", "1", "--stop-stage", "1")
    result = refused(recipe, script, "--stage", "1", "--stop-stage", stop,
                     "--top_n", "5", "--cohort_set", "vox1",
                     says=("--cohort_set vox1 is the evaluation set (--eval_set vox1)",
                           "give a cohort of other speakers"))
    assert "Traceback" not in result.stderr
    assert not os.path.exists(f"{recipe}/exp/embeddings/vox1/spk_xvector.scp")
    assert not os.path.exists(f"{recipe}/exp/scores/vox1_asnorm5_{TRIALS}.score")


def _cosine_files(tmp_path):
    """A set, its mean vector and the cosine scores of a trial list with that mean."""
    root = str(tmp_path)
    keys = write_set(root, "eval", 0)
    write_set(root, "cohort", 1)
    emb = f"{root}/exp/embeddings"
    with open(f"{root}/trials", "w") as out:
        out.writelines(f"{keys[i]} {keys[(7 * i + 3) % len(keys)]} nontarget\n"
                       for i in range(40))
    (cosine,) = score.main(["--exp_dir", f"{root}/exp", "--eval_scp_path",
                            f"{emb}/eval/xvector.scp", "--cal_mean", "True", "--cal_mean_dir",
                            f"{emb}/cohort", "--device", "cpu", f"{root}/trials"])
    args = ["--score_norm_method", "asnorm", "--top_n", "3", "--trial_score_file", cosine,
            "--score_norm_file", f"{root}/norm.score", "--cohort_emb_scp",
            f"{emb}/cohort/xvector.scp", "--eval_emb_scp", f"{emb}/eval/xvector.scp",
            "--device", "cpu"]
    return root, cosine, args, f"{emb}/cohort/mean_vec.npy"


def _run(module, *args):
    """``python -m wespeaker_py.bin.<module> args``: (exit status, stderr)."""
    result = subprocess.run([sys.executable, "-m", f"wespeaker_py.bin.{module}", *args],
                            capture_output=True, text=True, check=False)
    return result.returncode, result.stderr


def test_score_norm_refuses_scores_of_other_embeddings_or_another_mean(tmp_path):
    root, cosine, args, mean_vec = _cosine_files(tmp_path)
    score_norm.main(args + ["--mean_vec_path", mean_vec])   # the scores' own mean: accepted
    assert len(open(f"{root}/norm.score").readlines()) == 40
    os.remove(f"{root}/norm.score")

    code, stderr = _run("score_norm", *args)   # scored minus the mean, normalised without
    assert code == 2 and "Traceback" not in stderr
    first = open(cosine).readline().split()[2]
    assert f"{cosine}:1: score {first} is not the cosine " in stderr
    assert "(no mean vector) (40 of 40 trials differ): the score file was made from other " \
           "embeddings or another mean vector; score the trials again (score.sh) first" in stderr

    write_set(root, "eval", 5)   # the same keys, embeddings of another model
    code, stderr = _run("score_norm", *args, "--mean_vec_path", mean_vec)
    assert code == 2 and "Traceback" not in stderr
    assert f"{cosine}:1: score {first} is not the cosine" in stderr
    assert f"minus the mean vector {mean_vec}" in stderr
    assert not os.path.exists(f"{root}/norm.score")


def test_score_norm_warns_about_a_cohort_holding_the_trial_utterances(tmp_path, capfd):
    """The evaluation embeddings as their own cohort (same keys), or copies of them under
    other keys, are warned about, not refused; another set's cohort is not."""
    root, cosine, args, mean_vec = _cosine_files(tmp_path)
    emb = f"{root}/exp/embeddings"
    evaluation = load_embeddings(f"{emb}/eval/xvector.scp")
    write_embeddings(f"{root}/copies/xvector.ark", [f"copy-{key}" for key in evaluation.keys],
                     evaluation.matrix)
    cohort_at = args.index("--cohort_emb_scp") + 1

    def normalise(cohort, *extra):
        capfd.readouterr()
        score_norm.main(args[:cohort_at] + [cohort] + args[cohort_at + 1:]
                        + ["--mean_vec_path", mean_vec, *extra])
        assert len(open(f"{root}/norm.score").readlines()) == 40
        os.remove(f"{root}/norm.score")
        return capfd.readouterr().err

    key_warning = f"of the 52 utterances of the trials of {cosine} are also in the cohort"
    near_warning = ("40 of 40 enrolment and 40 of 40 test utterances have a cohort member "
                    "with a cosine of at least 0.999")
    told = normalise(f"{emb}/cohort/xvector.scp")
    assert " WARNING " not in told
    told = normalise(f"{emb}/eval/xvector.scp")
    assert f"52 {key_warning} {emb}/eval/xvector.scp (eval-s00-u0, " in told
    assert near_warning in told and "the cohort holds these utterances" in told
    told = normalise(f"{root}/copies/xvector.scp")
    assert key_warning not in told
    assert near_warning in told
    # QMF's calibration trials are of the cohort's own speakers: one-utterance speakers'
    # means equal their utterance by design, counted without a warning
    told = normalise(f"{root}/copies/xvector.scp", "--cohort_of_trial_speakers", "true")
    assert " WARNING " not in told
    assert "52 utterances have a cohort member of cosine >= 0.999" in told


def _plda_world(tmp_path):
    root = str(tmp_path)
    keys = write_set(root, "train", 0)
    emb = f"{root}/exp/embeddings/train/xvector.scp"
    enroll = tmp_path / "enroll_utt2spk"
    enroll.write_text(f"{keys[0]} spkA\n{keys[1]} spkA\nNOT_EXTRACTED spkA\n{keys[6]} spkB\n")
    trial_list = tmp_path / "trials"
    trial_list.write_text(f"spkA {keys[2]} target\nspkB {keys[3]} nontarget\n")
    train_utt2spk = tmp_path / "train_utt2spk"
    train_utt2spk.write_text(open(f"{root}/data/train/utt2spk").read()
                             + "NOT_EXTRACTED train-s00\n")
    return root, emb, str(enroll), str(trial_list), str(train_utt2spk)


def test_plda_refuses_utt2spk_utterances_without_an_embedding_unless_allowed(tmp_path, capfd):
    root, emb, enroll, trial_list, train_utt2spk = _plda_world(tmp_path)
    train = ["--scp_path", emb, "--utt2spk", train_utt2spk, "--exp_dir", root, "--iter", "2"]
    with pytest.raises(MissingEmbeddingsError, match=r"train_utt2spk: 1 of 61 utterances have "
                                                     r"no embedding .*line 61: 'NOT_EXTRACTED'"):
        train_plda.main(train)
    assert not os.path.exists(f"{root}/plda")
    train_plda.main(train + ["--max_missing_fraction", "0.05"])

    scores = f"{root}/p.score"
    evaluate = ["--enroll_scp_path", emb, "--test_scp_path", emb, "--utt2spk", enroll,
                "--trial", trial_list, "--score_path", scores, "--model_path", f"{root}/plda"]
    with pytest.raises(MissingEmbeddingsError, match=r"enroll_utt2spk: 1 of 4 utterances have "
                                                     r"no embedding .*line 3: 'NOT_EXTRACTED'"):
        eval_plda.main(evaluate)
    assert not os.path.exists(scores)
    capfd.readouterr()
    eval_plda.main(evaluate + ["--max_missing_fraction", "0.25"])
    assert len(open(scores).readlines()) == 2
    logged = capfd.readouterr().err.splitlines()
    warnings = [line for line in logged if " WARNING " in line]
    assert len(warnings) == 1 and "their speakers' means are taken without them" in warnings[0]
    # the test utterances of the shared scp are the normal case: counted, not warned about
    assert any(line.endswith(f"enroll_utt2spk: 2 speakers from 3 of 60 embeddings of {emb} "
                             "(57 not in the list, not used)") for line in logged)


def test_plda_enrollment_models_are_the_speaker_means_of_the_cohort_code(tmp_path):
    """Enrollment models and cohort means are one computation: a PLDA without
    preprocessing projects exactly the cohort's speaker means."""
    from wespeaker_py.scoring.embeddings import compute_speaker_means
    from wespeaker_py.scoring.plda_files import _enrollment_models, load_plda

    root = str(tmp_path)
    write_set(root, "train", 0)
    emb = f"{root}/exp/embeddings/train/xvector.scp"
    train_plda.main(["--scp_path", emb, "--utt2spk", f"{root}/data/train/utt2spk",
                     "--exp_dir", root, "--iter", "2"])
    plda = load_plda(f"{root}/plda")
    table = load_embeddings(emb)
    models, vectors, counts = _enrollment_models(plda, table, f"{root}/data/train/utt2spk", 0.0)
    speakers, means = compute_speaker_means(table, f"{root}/data/train/spk2utt")
    assert models == speakers and counts.tolist() == [6] * 10
    np.testing.assert_allclose(vectors, plda.project(means.astype(np.float64)), atol=1e-4)


def test_user_errors_of_scoring_commands_are_one_line_naming_the_files(tmp_path):
    root, cosine, args, mean_vec = _cosine_files(tmp_path)
    emb = f"{root}/exp/embeddings"
    small = f"{root}/small.ark"
    write_embeddings(small, ["a", "b", "c"], np.ones((3, 8), np.float32))
    small_scp = small[:-4] + ".scp"

    def one_line_error(module, *argv):
        code, stderr = _run(module, *argv)
        assert code == 2 and "Traceback" not in stderr, stderr
        return stderr

    message = one_line_error("score_norm", *args[:-6], "--cohort_emb_scp", small_scp,
                             "--eval_emb_scp", f"{emb}/eval/xvector.scp")
    assert f"{small_scp}: cohort embeddings have dimension 8, the evaluation embeddings of " \
           f"{emb}/eval/xvector.scp have {DIM}" in message
    top_n = args.index("--top_n") + 1
    message = one_line_error("score_norm", *args[:top_n], "0", *args[top_n + 1:])
    assert "argument --top_n/--top-n: must be at least 1, got 0" in message

    train_plda.main(["--scp_path", f"{emb}/cohort/xvector.scp", "--utt2spk",
                     f"{root}/data/cohort/utt2spk", "--exp_dir", root, "--iter", "1"])
    (tmp_path / "u2s").write_text("a a\nb b\n")
    (tmp_path / "ab").write_text("a b target\n")
    message = one_line_error("eval_plda", "--enroll_scp_path", small_scp, "--test_scp_path",
                             small_scp, "--utt2spk", str(tmp_path / "u2s"), "--trial",
                             str(tmp_path / "ab"), "--score_path", f"{root}/p.score",
                             "--model_path", f"{root}/plda")
    assert f"{small_scp}: embeddings have dimension 8, the PLDA model {root}/plda takes " \
           f"{DIM}" in message
    message = one_line_error("train_plda", "--scp_path", small_scp, "--utt2spk",
                             str(tmp_path / "u2s"), "--exp_dir", root, "--indim", "16")
    assert f"{small_scp}: embeddings have dimension 8, but --indim 16 was given" in message
    one_point = f"{root}/one.ark"
    write_embeddings(one_point, ["a"], np.ones((1, DIM), np.float32))
    message = one_line_error("adapt_plda", "-mo", f"{root}/plda", "-ma", f"{root}/adapted",
                             "-ad", one_point[:-4] + ".scp")
    assert "one.scp: adaptation needs at least two embeddings, it holds 1" in message

    norm = f"{root}/norm.score"
    score_norm.main(args + ["--mean_vec_path", mean_vec])
    message = one_line_error("score_calibration", "gather_calibration_factors",
                             "--score_norm_file", norm, "--calibration_factor_file",
                             f"{root}/x.factors")
    assert f"the durations of the trials of {norm} are needed" in message
    with_durations, without = f"{root}/dur.factors", f"{root}/nodur.factors"
    (tmp_path / "utt2dur").write_text(open(f"{root}/data/eval/utt2dur").read())
    score_calibration.main(["gather_calibration_factors", "--score_norm_file", norm,
                            "--wav_dur_scp", str(tmp_path / "utt2dur"),
                            "--calibration_factor_file", with_durations])
    score_calibration.main(["gather_calibration_factors", "--score_norm_file", norm,
                            "--drop_duration", "--calibration_factor_file", without])
    message = one_line_error("score_calibration", "train_calibration_model",
                             "--calibration_factor_file", without, "--save_model_path",
                             f"{root}/m.pt")
    assert f"{without}: training calibration needs target and nontarget trials, got 0 " \
           "targets of 40" in message
    lines = open(with_durations).read().splitlines()
    with open(with_durations, "w") as out:   # both classes, to train a model on
        out.writelines(line.replace(" nontarget ", " target ", i % 2) + "\n"
                       for i, line in enumerate(lines))
    score_calibration.main(["train_calibration_model", "--calibration_factor_file",
                            with_durations, "--save_model_path", f"{root}/m.pt"])
    message = one_line_error("score_calibration", "infer_calibration",
                             "--calibration_factor_file", without, "--save_model_path",
                             f"{root}/m.pt", "--calibration_score_file", f"{root}/c.score")
    assert f"{without}: has 9 numbers a trial, the calibration model {root}/m.pt takes 13: " \
           "were the two gathered with different --drop_duration?" in message


def test_infer_calibration_names_the_line_of_a_non_finite_feature(tmp_path):
    factors = tmp_path / "f.calibration"
    factors.write_text("a b target 0.5 1.0\nc d nontarget 0.1 2.0\ne f target nan 1.0\n")
    qmf.save_calibration(str(tmp_path / "m.pt"), qmf.LinearCalibration(np.ones(2), 0.0))
    with pytest.raises(DataFormatError, match=r"f\.calibration:3: a score or feature is NaN "
                                              r"or inf"):
        qmf.infer_calibration_file(str(factors), str(tmp_path / "m.pt"),
                                   str(tmp_path / "out.score"))
    assert not os.path.exists(tmp_path / "out.score")
    with pytest.raises(DataFormatError, match=r"f\.calibration:3: "):
        qmf.read_calibration_factors(str(factors))


def test_calibration_training_that_stops_early_says_so(monkeypatch, caplog):
    import scipy.optimize

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    features = np.stack([rng.normal(size=500) + 2 * labels, rng.normal(size=500)], axis=1)
    with caplog.at_level(logging.WARNING):
        qmf.train_calibration(features, labels)
    assert not caplog.records   # converged: nothing to say
    minimize = scipy.optimize.minimize

    def one_iteration(*args, **kwargs):
        kwargs["options"] = dict(kwargs["options"], maxiter=1)
        return minimize(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", one_iteration)
    with caplog.at_level(logging.WARNING):
        qmf.train_calibration(features, labels)
    (record,) = caplog.records
    assert "the calibration fit stopped before converging after 1 iterations" in \
        record.getMessage() and "ITERATIONS REACHED LIMIT" in record.getMessage()


def test_two_trial_lists_of_one_name_are_refused_before_scoring(tmp_path):
    root, cosine, _, _ = _cosine_files(tmp_path)
    before = open(cosine).read()
    os.makedirs(tmp_path / "other")
    other = tmp_path / "other" / "trials"
    other.write_text(open(f"{root}/trials").read().splitlines()[0] + "\n")
    code, stderr = _run("score", "--exp_dir", f"{root}/exp", "--eval_scp_path",
                        f"{root}/exp/embeddings/eval/xvector.scp", "--device", "cpu",
                        f"{root}/trials", str(other))
    assert code == 2 and "Traceback" not in stderr
    assert f"trial lists {root}/trials and {other} would both be scored into {cosine}" in stderr
    assert open(cosine).read() == before


def test_trial_lists_written_are_read_back(tmp_path):
    path = str(tmp_path / "t")
    trials.write_trials(path, [("a", "b", "target"), ("a", "c", "nontarget")])
    written = trials.read_trials(path)
    assert written.enroll_keys == ["a"] and written.test_keys == ["b", "c"]
    assert written.labels.tolist() == [1, 0]
