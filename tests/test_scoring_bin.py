"""The scoring entry points and tools, run end to end on tiny generated files.

The command lines are those of WeSpeaker's VoxCeleb v2 scripts (local/score.sh,
score_norm.sh, score_calibration.sh, score_plda.sh), with paths swapped.
"""
import importlib.util
import os
import re
import subprocess

import numpy as np
import pytest
import soundfile

from wespeaker_py.errors import RunFailedError
from wespeaker_py.bin import (adapt_plda, compute_det, compute_metrics, eval_plda, score,
                              score_calibration, score_norm, train_plda)
from wespeaker_py.io.ark import load_embeddings, write_embeddings
from wespeaker_py.scoring.plda import TwoCovPLDA
from wespeaker_py.scoring.trials import MissingEmbeddingsError
from wespeaker_py.utils.tables import DataFormatError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIM = 16


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_set(rng, root, name, num_speakers, per_speaker, prefix):
    """Embeddings around speaker centres, plus utt2spk / spk2utt / utt2dur."""
    keys, rows, durations = [], [], []
    common = np.full(DIM, 3.0)  # a shared offset that mean subtraction removes
    for s in range(num_speakers):
        centre = rng.normal(size=DIM)
        for u in range(per_speaker):
            keys.append(f"{prefix}{s:02d}/vid/{u:05d}.wav")
            rows.append(common + centre + 0.6 * rng.normal(size=DIM))
            # alternate short (2-6 s) and long (> 6 s) utterances
            durations.append(3.0 + u % 2 * 5.0 + rng.uniform(0, 1))
    emb_dir = os.path.join(root, "exp", "embeddings", name)
    write_embeddings(os.path.join(emb_dir, "xvector.ark"), keys, np.array(rows, dtype=np.float32))
    data_dir = os.path.join(root, "data", name)
    os.makedirs(data_dir)
    speakers = [k.split("/")[0] for k in keys]
    with open(os.path.join(data_dir, "utt2spk"), "w") as f:
        f.writelines(f"{k} {s}\n" for k, s in zip(keys, speakers))
    with open(os.path.join(data_dir, "spk2utt"), "w") as f:
        for spk in dict.fromkeys(speakers):
            f.write(spk + " " + " ".join(k for k in keys if k.startswith(spk + "/")) + "\n")
    with open(os.path.join(data_dir, "utt2dur"), "w") as f:
        f.writelines(f"{k} {d:.3f}\n" for k, d in zip(keys, durations))
    return keys


def write_trials(path, keys, rng, num=150):
    with open(path, "w") as f:
        for _ in range(num):
            a, b = rng.choice(len(keys), 2, replace=False)
            same = keys[a].split("/")[0] == keys[b].split("/")[0]
            f.write(f"{keys[a]} {keys[b]} {'target' if same else 'nontarget'}\n")


@pytest.fixture
def world(tmp_path):
    rng = np.random.default_rng(0)
    root = str(tmp_path)
    vox1 = make_set(rng, root, "vox1", 8, 6, "id1")
    make_set(rng, root, "vox2_dev", 12, 6, "id2")
    trials_dir = os.path.join(root, "data", "vox1", "trials")
    os.makedirs(trials_dir)
    write_trials(os.path.join(trials_dir, "vox1_O.kaldi"), vox1, rng)
    return root, trials_dir


def test_cosine_norm_metrics_det(world, capsys):
    root, trials_dir = world
    exp = os.path.join(root, "exp")
    emb = os.path.join(exp, "embeddings")
    trials = os.path.join(trials_dir, "vox1_O.kaldi")
    score.main(["--exp_dir", exp, "--eval_scp_path", f"{emb}/vox1/xvector.scp",
                "--cal_mean", "True", "--cal_mean_dir", f"{emb}/vox2_dev", trials])
    mean_path = f"{emb}/vox2_dev/mean_vec.npy"
    assert os.path.exists(mean_path)
    # scored again (the recipes' calibration stage does): the same mean keeps its file and
    # time, so that the normalised scores made from it are not taken as stale
    os.utime(mean_path, (1e9, 1e9))
    score.main(["--exp_dir", exp, "--eval_scp_path", f"{emb}/vox1/xvector.scp",
                "--cal_mean", "True", "--cal_mean_dir", f"{emb}/vox2_dev", trials])
    assert os.path.getmtime(mean_path) == 1e9
    score_file = f"{exp}/scores/vox1_O.kaldi.score"
    lines = open(score_file).read().splitlines()
    assert len(lines) == 150 and all(len(line.split()) == 4 for line in lines)
    assert [line.split()[3] for line in lines] == \
        [line.split()[2] for line in open(trials).read().splitlines()]

    load_tool("vector_mean").main(["--spk2utt", f"{root}/data/vox2_dev/spk2utt",
                                   "--xvector_scp", f"{emb}/vox2_dev/xvector.scp",
                                   "--spk_xvector_ark", f"{emb}/vox2_dev/spk_xvector.ark"])
    assert len(load_embeddings(f"{emb}/vox2_dev/spk_xvector.scp")) == 12
    norm_file = f"{exp}/scores/vox2_dev_asnorm5_vox1_O.kaldi.score"
    score_norm.main(["--score_norm_method", "asnorm", "--top_n", "5",
                     "--trial_score_file", score_file, "--score_norm_file", norm_file,
                     "--cohort_emb_scp", f"{emb}/vox2_dev/spk_xvector.scp",
                     "--eval_emb_scp", f"{emb}/vox1/xvector.scp",
                     "--mean_vec_path", f"{emb}/vox2_dev/mean_vec.npy"])
    assert all(len(line.split()) == 8 for line in open(norm_file))

    results = compute_metrics.main(["--p_target", "0.01", "--c_fa", "1", "--c_miss", "1",
                                    score_file, norm_file])
    printed = capsys.readouterr().out
    assert "---- vox1_O.kaldi.score -----" in printed
    assert "minDCF (p_target:0.01 c_miss:1 c_fa:1) = " in printed
    assert f"EER = {100 * results[0][1]:.3f}" in printed
    assert results[0][1] < 0.15  # well separated speakers

    compute_det.main([score_file])
    assert open(score_file + ".det.png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    points = np.loadtxt(score_file + ".det.txt")
    assert points.shape[1] == 3 and np.all(np.diff(points[:, 1]) <= 0)


def test_asnorm_wider_than_the_cohort_is_snorm_and_no_spread_names_the_utterance(world, capsys):
    root, _ = world
    emb, scores = f"{root}/exp/embeddings", f"{root}/exp/scores"
    load_tool("vector_mean").main(["--spk2utt", f"{root}/data/vox2_dev/spk2utt",
                                   "--xvector_scp", f"{emb}/vox2_dev/xvector.scp",
                                   "--spk_xvector_ark", f"{emb}/vox2_dev/spk_xvector.ark"])
    table = load_embeddings(f"{emb}/vox1/xvector.scp")
    keys = table.keys
    unit = table.matrix / np.linalg.norm(table.matrix, axis=1, keepdims=True)
    os.makedirs(scores)
    with open(f"{scores}/t.score", "w") as out:
        out.writelines(f"{keys[i]} {keys[i + 7]} {unit[i] @ unit[i + 7]:.5f} nontarget\n"
                       for i in range(20))
    outputs = {}
    for method, top_n in (("asnorm", "300"), ("snorm", "300"), ("asnorm", "12")):
        name = f"{scores}/{method}{top_n}.score"
        score_norm.main(["--score_norm_method", method, "--top_n", top_n,
                         "--trial_score_file", f"{scores}/t.score", "--score_norm_file", name,
                         "--cohort_emb_scp", f"{emb}/vox2_dev/spk_xvector.scp",
                         "--eval_emb_scp", f"{emb}/vox1/xvector.scp"])
        outputs[method + top_n] = open(name).read()
    # WeSpeaker's slice takes the whole cohort of 12 speakers: S-Norm, with a warning
    assert outputs["asnorm300"] == outputs["snorm300"] == outputs["asnorm12"]
    assert "top_n=300 is more than the 12 embeddings of the cohort" in capsys.readouterr().err
    with pytest.raises(RunFailedError, match=rf"no spread \({re.escape(keys[0])}, "):
        score_norm.main(["--score_norm_method", "asnorm", "--top_n", "1",
                         "--trial_score_file", f"{scores}/t.score",
                         "--score_norm_file", f"{scores}/one.score",
                         "--cohort_emb_scp", f"{emb}/vox2_dev/spk_xvector.scp",
                         "--eval_emb_scp", f"{emb}/vox1/xvector.scp"])
    assert not os.path.exists(f"{scores}/one.score")


def test_calibration_stage(world, tmp_path):
    root, trials_dir = world
    exp, emb, data = f"{root}/exp", f"{root}/exp/embeddings", f"{root}/data"
    load_tool("vector_mean").main(["--spk2utt", f"{data}/vox2_dev/spk2utt",
                                   "--xvector_scp", f"{emb}/vox2_dev/xvector.scp",
                                   "--spk_xvector_ark", f"{emb}/vox2_dev/spk_xvector.ark"])
    cali = f"{trials_dir}/vox2_cali.kaldi"
    load_tool("generate_calibration_trial").main(["--utt2dur", f"{data}/vox2_dev/utt2dur",
                                                  "--trial_path", cali,
                                                  "--each_trial_num", "100"])
    assert len(open(cali).readlines()) == 300
    score_files = {}
    for name, scp in (("vox2_cali.kaldi", "vox2_dev"), ("vox1_O.kaldi", "vox1")):
        score.main(["--exp-dir", exp, "--eval-scp-path", f"{emb}/{scp}/xvector.scp",
                    "--cal_mean", "--cal_mean_dir", f"{emb}/vox2_dev", f"{trials_dir}/{name}"])
        norm_file = f"{exp}/scores/asnorm_{name}.score"
        score_norm.main(["--score_norm_method", "snorm", "--top_n", "100",
                         "--trial_score_file", f"{exp}/scores/{name}.score",
                         "--score_norm_file", norm_file,
                         "--cohort_emb_scp", f"{emb}/vox2_dev/spk_xvector.scp",
                         "--eval_emb_scp", f"{emb}/{scp}/xvector.scp",
                         "--mean_vec_path", f"{emb}/vox2_dev/mean_vec.npy"])
        score_files[name] = norm_file
    with open(f"{tmp_path}/utt2dur", "w") as out:
        for name in ("vox1", "vox2_dev"):
            out.write(open(f"{data}/{name}/utt2dur").read())
    for name, norm_file in score_files.items():
        score_calibration.main(["gather_calibration_factors", "--wav_dur_scp",
                                f"{tmp_path}/utt2dur", "--max_dur", "20",
                                "--score_norm_file", norm_file,
                                "--calibration_factor_file", f"{exp}/scores/{name}.calibration"])
    model = f"{exp}/scores/calibration_model.pt"
    score_calibration.main(["train_calibration_model", "--calibration_factor_file",
                            f"{exp}/scores/vox2_cali.kaldi.calibration",
                            "--save_model_path", model])
    out = f"{exp}/scores/cali_vox1_O.kaldi.score"
    score_calibration.main(["infer_calibration", "--calibration_factor_file",
                            f"{exp}/scores/vox1_O.kaldi.calibration",
                            "--save_model_path", model, "--calibration_score_file", out])
    lines = [line.split() for line in open(out)]
    assert len(lines) == 150 and all(len(f) == 4 for f in lines)
    (eer_result,) = compute_metrics.main([out])
    assert eer_result[1] < 0.2


def test_plda_stage(world):
    root, trials_dir = world
    exp, emb, data = f"{root}/exp", f"{root}/exp/embeddings", f"{root}/data"
    train_plda.main(["--exp_dir", exp, "--scp_path", f"{emb}/vox2_dev/xvector.scp",
                     "--utt2spk", f"{data}/vox2_dev/utt2spk", "--indim", str(DIM),
                     "--iter", "5"])
    assert os.path.exists(f"{exp}/plda")
    with open(f"{root}/utt2utt", "w") as f:
        f.writelines(f"{line.split()[0]} {line.split()[0]}\n"
                     for line in open(f"{data}/vox1/utt2spk"))
    trials = f"{trials_dir}/vox1_O.kaldi"
    score_path = f"{exp}/scores/vox1_O.kaldi.pldascore"
    eval_plda.main(["--enroll_scp_path", f"{emb}/vox1/xvector.scp",
                    "--test_scp_path", f"{emb}/vox1/xvector.scp", "--utt2spk", f"{root}/utt2utt",
                    "--trial", trials, "--score_path", score_path, "--model_path", f"{exp}/plda"])
    (result,) = compute_metrics.main([score_path])
    assert result[1] < 0.15
    adapt_plda.main(["-mo", f"{exp}/plda", "-ma", f"{exp}/plda_adapt",
                     "-ad", f"{emb}/vox1/xvector.scp", "-ws", "0.75", "-as", "0.25"])
    # multi-session enrollment: trials name speakers, enrolled from all their utterances
    with open(f"{root}/spk_trials", "w") as f:
        for line in open(trials):
            enroll, test, label = line.split()
            f.write(f"{enroll.split('/')[0]} {test} {label}\n")
    eval_plda.main(["--enroll_scp_path", f"{emb}/vox1/xvector.scp",
                    "--test_scp_path", f"{emb}/vox1/xvector.scp",
                    "--utt2spk", f"{data}/vox1/utt2spk", "--trial", f"{root}/spk_trials",
                    "--score_path", f"{root}/adapted.score", "--model_path", f"{exp}/plda_adapt",
                    "--indomain_scp_path", f"{emb}/vox2_dev/xvector.scp",
                    "--multisession_avg"])
    (result,) = compute_metrics.main([f"{root}/adapted.score"])
    assert result[1] < 0.15
    with pytest.raises(DataFormatError, match=r"model_path|not a wespeaker_py PLDA"):
        eval_plda.main(["--type", "2cov", "--enroll_scp_path", f"{emb}/vox1/xvector.scp",
                        "--test_scp_path", f"{emb}/vox1/xvector.scp", "--utt2spk",
                        f"{root}/utt2utt", "--trial", trials, "--score_path", score_path,
                        "--model_path", f"{data}/vox1/utt2spk"])


def test_bad_inputs_fail_with_file_and_line(world):
    root, trials_dir = world
    emb = f"{root}/exp/embeddings"
    bad_trials = f"{trials_dir}/bad.kaldi"
    lines = open(f"{trials_dir}/vox1_O.kaldi").read().splitlines()
    with open(bad_trials, "w") as f:
        f.write("\n".join(lines[:4] + ["id199/vid/00001.wav " + lines[0].split()[1] + " target"])
                + "\n")
    # a trial naming an utterance without an embedding: by default nothing is written
    with pytest.raises(MissingEmbeddingsError, match=r"bad\.kaldi: 4 of 5 trials scored; 1 "
                                                     r"skipped .*id199/vid/00001.wav \(line 5\)"):
        score.main(["--exp_dir", f"{root}/exp", "--eval_scp_path", f"{emb}/vox1/xvector.scp",
                    "--cal_mean", "False", bad_trials])
    assert not os.path.exists(f"{root}/exp/scores/bad.kaldi.score")
    # a bad line is an error naming file and line
    with open(bad_trials, "a") as f:
        f.write("a b maybe\n")
    with pytest.raises(DataFormatError, match=r"bad\.kaldi:6: expected 'enroll test"):
        score.main(["--exp_dir", f"{root}/exp", "--eval_scp_path", f"{emb}/vox1/xvector.scp",
                    "--cal_mean", "False", "--max_missing_fraction", "0.5", bad_trials])


def test_wav2dur_tool(tmp_path, capsys):
    soundfile.write(str(tmp_path / "a.wav"), np.zeros(24000), 16000)
    (tmp_path / "my  audio").mkdir()
    soundfile.write(str(tmp_path / "my  audio" / "b c.wav"), np.zeros(8000), 16000)
    (tmp_path / "wav.scp").write_text(f"a {tmp_path}/a.wav\nb {tmp_path}/my  audio/b c.wav\n")
    load_tool("wav2dur").main([str(tmp_path / "wav.scp"), str(tmp_path / "utt2dur")])
    assert (tmp_path / "utt2dur").read_text() == "a 1.5000\nb 0.5000\n"
    assert "process 2 utts" in capsys.readouterr().out


def _recipe_scoring(root, script, *args):
    """Run a shared scoring stage script of the recipes (``tools/recipe/``) in ``root``."""
    if not os.path.exists(f"{root}/tools"):
        os.symlink(os.path.join(REPO, "tools"), f"{root}/tools")
        os.symlink(os.path.join(REPO, "examples", "voxceleb", "v2", "path.sh"), f"{root}/path.sh")
    result = subprocess.run(["bash", f"tools/recipe/{script}", "--exp_dir", "exp",
                             "--trials", "vox1_O.kaldi", *args], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _read(path):
    with open(path) as handle:
        return handle.read()


def test_recipe_scoring_remakes_outputs_of_other_settings(world):
    """An output whose name does not say every option behind it (the mean's set, the PLDA's
    EM iterations, the score normalisation a calibration model learnt on) is made again
    when the option changes, and one made with the options asked for is kept."""
    root, _ = world
    scores = f"{root}/exp/scores"
    cosine = f"{scores}/vox1_O.kaldi.score"
    _recipe_scoring(root, "score.sh", "--stage", "1", "--stop_stage", "1")
    mean_of_train = _read(cosine)
    _recipe_scoring(root, "score.sh", "--stage", "1", "--stop_stage", "1", "--train_set", "vox1")
    assert _read(cosine) != mean_of_train
    _recipe_scoring(root, "score.sh", "--stage", "1", "--stop_stage", "1")
    assert _read(cosine) == mean_of_train

    def calibrate(top_n):
        for script, last in (("score_norm.sh", "2"), ("score_calibration.sh", "4")):
            printed = _recipe_scoring(root, script, "--stage", "1", "--stop_stage", last,
                                      "--top_n", top_n)
        return printed, _read(f"{scores}/cali_vox2_dev_asnorm{top_n}_vox1_O.kaldi.score")

    _, first = calibrate("3")
    calibrate("10")
    printed, again = calibrate("3")
    assert again == first
    assert "the calibration model is up to date" in printed
    assert "calibrated scores are up to date" in printed

    plda = f"{root}/exp/plda"
    _recipe_scoring(root, "score_plda.sh", "--stage", "1", "--stop_stage", "1", "--iter", "1")
    one_iteration = open(plda, "rb").read()
    printed = _recipe_scoring(root, "score_plda.sh", "--stage", "1", "--stop_stage", "1")
    assert "the PLDA model is up to date" not in printed
    assert open(plda, "rb").read() != one_iteration
    # --indim is one of the model's settings: a wrong one is checked, not passed over
    wrong = subprocess.run(["bash", "tools/recipe/score_plda.sh", "--exp_dir", "exp",
                            "--trials", "vox1_O.kaldi", "--stage", "1", "--stop_stage", "1",
                            "--indim", "256"], cwd=root, capture_output=True, text=True)
    assert wrong.returncode != 0 and "--indim 256" in wrong.stderr


WESPEAKER_HDF5 = b"\x89HDF\r\n\x1a\n" + bytes(56)   # the start of an h5py file


def test_score_plda_trains_over_wespeakers_hdf5_model(world):
    """WeSpeaker's PLDA model (HDF5) in exp/plda, newer than the embeddings, is not taken
    as up to date, with or without the note an earlier version wrote beside it: stage 1
    says what it is and trains ours in its place, which stage 2 scores with."""
    root, _ = world
    plda = f"{root}/exp/plda"
    for note in (None, "train_set=vox2_dev iter=5 indim=\n"):
        with open(plda, "wb") as handle:
            handle.write(WESPEAKER_HDF5)
        os.utime(plda, (2e9, 2e9))
        if note is not None:
            with open(f"{plda}.settings", "w") as handle:
                handle.write(note)
        printed = _recipe_scoring(root, "score_plda.sh", "--stage", "1", "--stop_stage", "3")
        assert ("exp/plda: WeSpeaker's HDF5 PLDA model, which wespeaker_py does not read"
                in printed)
        assert "exp/plda is replaced: a PLDA model of wespeaker_py is trained in its place" \
            in printed
        assert "the PLDA model is up to date" not in printed
        assert TwoCovPLDA.load(plda).dim > 0
        assert "EER" in _read(f"{root}/exp/scores/vox1_plda_result")


@pytest.mark.parametrize("script, stage, made, needed", [
    ("score_plda.sh", "1", "plda", "embeddings/vox2_dev/xvector.scp"),
    ("score_norm.sh", "1", "embeddings/vox2_dev/spk_xvector.scp",
     "embeddings/vox2_dev/xvector.scp"),
])
def test_a_back_end_stage_refuses_when_the_embeddings_it_is_made_from_are_gone(
        world, script, stage, made, needed):
    """Embeddings being extracted again (or whose extraction failed) are missing: a
    back-end output made from the earlier ones is not taken as up to date, the stage stops
    naming the missing file and the extraction stage."""
    root, _ = world
    _recipe_scoring(root, script, "--stage", stage, "--stop_stage", stage)
    assert os.path.exists(f"{root}/exp/{made}")
    os.remove(f"{root}/exp/{needed}")
    result = subprocess.run(["bash", f"tools/recipe/{script}", "--exp_dir", "exp",
                             "--trials", "vox1_O.kaldi", "--stage", stage, "--stop_stage", stage],
                            cwd=root, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"exp/{needed} is missing: run the extraction stage (stage 4) first" in result.stderr
    assert "up to date" not in result.stdout


def test_recipe_scoring_makes_wespeakers_score_files_again(world):
    """Score files WeSpeaker's recipes wrote at the paths ours write (no settings note,
    newer than the embeddings) are not taken as made with this run's options: they are
    scored again from the embeddings there, and noted."""
    root, _ = world
    scores = f"{root}/exp/scores"
    os.makedirs(scores)
    names = ("vox1_O.kaldi.score", "vox2_dev_asnorm5_vox1_O.kaldi.score",
             "vox1_O.kaldi.pldascore")
    for name in names:
        with open(f"{scores}/{name}", "w") as handle:
            handle.write("id1-0 id1-1 0.5 target\n")
        os.utime(f"{scores}/{name}", (2e9, 2e9))
    _recipe_scoring(root, "score.sh", "--stage", "1", "--stop_stage", "1")
    _recipe_scoring(root, "score_norm.sh", "--stage", "1", "--stop_stage", "2", "--top_n", "5")
    _recipe_scoring(root, "score_plda.sh", "--stage", "1", "--stop_stage", "2")
    for name in names:
        assert len(_read(f"{scores}/{name}").splitlines()) == 150, name
        assert _read(f"{scores}/{name}.settings").strip(), name


def test_recipe_scoring_stages_run_under_a_folder_whose_name_has_a_space(tmp_path):
    """The shared scoring stages pass every path on whole: the embeddings, trial lists
    and scores of an experiment under a folder named with a space."""
    rng = np.random.default_rng(0)
    root = str(tmp_path / "sp ace")
    vox1 = make_set(rng, root, "vox1", 8, 6, "id1")
    make_set(rng, root, "vox2_dev", 12, 6, "id2")
    trials_dir = os.path.join(root, "data", "vox1", "trials")
    os.makedirs(trials_dir)
    write_trials(os.path.join(trials_dir, "vox1_O.kaldi"), vox1, rng)
    paths = ("--exp_dir", f"{root}/exp", "--data", f"{root}/data")
    for script, last, extra in (("score.sh", "2", ()), ("score_norm.sh", "3", ("--top_n", "5")),
                                ("score_calibration.sh", "5", ("--top_n", "5")),
                                ("score_plda.sh", "3", ())):
        _recipe_scoring(root, script, "--stage", "1", "--stop_stage", last, *extra, *paths)
    scores = f"{root}/exp/scores"
    for name in ("vox1_O.kaldi.score", "vox2_dev_asnorm5_vox1_O.kaldi.score",
                 "cali_vox2_dev_asnorm5_vox1_O.kaldi.score", "vox1_O.kaldi.pldascore"):
        assert len(_read(f"{scores}/{name}").splitlines()) == 150, name
        assert os.path.getsize(f"{scores}/{name}.det.png") > 0, name
    for name in ("vox1_cos_result", "vox1_asnorm5_result", "vox1_cali_asnorm5_result",
                 "vox1_plda_result"):
        assert "EER" in _read(f"{scores}/{name}"), name
