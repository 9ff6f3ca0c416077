"""The results table (wespeaker_py.scoring.report) says which rows it cannot vouch for:
score files older than their embeddings, rows of one list over different numbers of
trials, and a fine-tuning that did not start from the base experiment's model."""
import os

import numpy as np
import pytest

from scoring_helpers import parse_table
from wespeaker_py.scoring.report import measure, write_report

CONFIG = "model: ResNet18\nmodel_args:\n  feat_dim: 80\n  embed_dim: 64\n  pooling_func: TSTP\n"
NOTE = "train_set=backend eval_set=test\n"
T0 = 1_700_000_000


def _write_scores(path, shift, seed, num_trials=200, made_at=T0 + 100):
    """A labelled score file of ``num_trials`` trials, dated ``made_at`` (seconds)."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as out:
        for index in range(num_trials):
            target = index % 2 == 0
            out.write(f"e{index} t{index} {rng.normal(shift if target else 0.0, 1.0):.5f} "
                      f"{'target' if target else 'nontarget'}\n")
    os.utime(path, (made_at, made_at))


def _experiment(exp, extracted_at=T0, model=b"avg model"):
    """An experiment scored after its extraction: cosine (with its settings note), AS-Norm
    and PLDA of the list ``trials``, embeddings of the sets ``backend`` and ``test``."""
    os.makedirs(exp / "scores")
    os.makedirs(exp / "models")
    (exp / "config.yaml").write_text(CONFIG)
    (exp / "models" / "avg_model.pt").write_bytes(model)
    _extract(exp, extracted_at)
    _write_scores(exp / "scores" / "trials.score", 1.0, 0)
    (exp / "scores" / "trials.score.settings").write_text(NOTE)
    _write_scores(exp / "scores" / "backend_asnorm10_trials.score", 2.0, 1)
    _write_scores(exp / "scores" / "trials.pldascore", 3.0, 2)


def _extract(exp, extracted_at):
    for name in ("backend", "test"):
        os.makedirs(exp / "embeddings" / name, exist_ok=True)
        scp = exp / "embeddings" / name / "xvector.scp"
        scp.write_text("u1 xvector.ark:10\n")
        os.utime(scp, (extracted_at, extracted_at))


def _fine_tuning(base, lm, start=b"avg model"):
    """``lm``: the fine-tuning of ``base``, begun from a model_0.pt of bytes ``start``."""
    os.makedirs(lm / "scores")
    os.makedirs(lm / "models")
    (lm / "config.yaml").write_text(CONFIG + "do_lm: true\n")
    (lm / "models" / "model_0.pt").write_bytes(start)
    _write_scores(lm / "scores" / "trials.score", 1.5, 3)


def _warnings(caplog):
    return [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]


def test_a_fresh_consistent_experiment_and_its_fine_tuning_are_neither_marked_nor_warned(
        tmp_path, caplog):
    base, lm = tmp_path / "exp", tmp_path / "exp-LM"
    _experiment(base)
    _fine_tuning(base, lm)
    # a set the score notes do not name, extracted later, is not what the rows came from
    os.makedirs(base / "embeddings" / "other")
    (base / "embeddings" / "other" / "xvector.scp").write_text("u1 x.ark:1\n")
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        table = write_report([str(base), str(lm)], ["trials"], None, None)
    assert _warnings(caplog) == []
    assert "[^" not in table and table.endswith("|\n")
    assert [(row["Model"], row["Scoring"]) for row in parse_table(table)] == [
        ("ResNet18-TSTP-emb64", "cosine"), ("ResNet18-TSTP-emb64", "AS-Norm (top 10)"),
        ("ResNet18-TSTP-emb64", "PLDA"), ("ResNet18-TSTP-emb64-LM", "cosine")]


def test_rows_scored_before_a_new_extraction_are_marked_stale(tmp_path, caplog):
    exp = tmp_path / "exp"
    _experiment(exp)
    before = parse_table(write_report([str(exp)], ["trials"], None, None))
    assert [row["Scoring"] for row in before] == ["cosine", "AS-Norm (top 10)", "PLDA"]
    # stage 4 again (another --num_avg), then stage 5 again: only cosine is scored anew
    _extract(exp, T0 + 200)
    newest = exp / "embeddings" / "test" / "xvector.scp"  # the later of the two sets
    os.utime(newest, (T0 + 250, T0 + 250))
    _write_scores(exp / "scores" / "trials.score", 1.0, 0, made_at=T0 + 300)
    caplog.clear()
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        table = write_report([str(exp)], ["trials"], str(exp / "results.md"), None)
    assert (exp / "results.md").read_text() == table
    rows = parse_table(table)
    assert [row["Scoring"] for row in rows] == [
        "cosine", "AS-Norm (top 10) (stale[^1])", "PLDA (stale[^2])"]
    # the numbers are those of the score files, as before
    assert [row["trials EER (%)"] for row in rows] == [row["trials EER (%)"] for row in before]
    newest = str(newest)
    footnotes = [line for line in table.splitlines() if line.startswith("[^")]
    assert len(footnotes) == 2
    assert footnotes[0].startswith("[^1]: ResNet18-TSTP-emb64 AS-Norm (top 10): ")
    assert f"`{exp / 'scores' / 'backend_asnorm10_trials.score'}` is older than `{newest}`" \
        in footnotes[0]
    assert f"`{exp / 'scores' / 'trials.pldascore'}` is older than `{newest}`" in footnotes[1]
    warnings = _warnings(caplog)
    assert len(warnings) == 2
    assert str(exp / "scores" / "backend_asnorm10_trials.score") in warnings[0]
    assert newest in warnings[0]


def test_without_settings_notes_every_extracted_set_dates_the_rows(tmp_path, caplog):
    exp = tmp_path / "exp"
    _experiment(exp)
    os.remove(exp / "scores" / "trials.score.settings")  # scored before notes were kept
    scp = exp / "embeddings" / "backend" / "xvector.scp"
    os.utime(scp, (T0 + 200, T0 + 200))
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        rows = parse_table(write_report([str(exp)], ["trials"], None, None))
    assert [row["Scoring"] for row in rows] == [
        "cosine (stale[^1])", "AS-Norm (top 10) (stale[^2])", "PLDA (stale[^3])"]
    assert all(str(scp) in warning for warning in _warnings(caplog))


def test_rows_of_one_list_over_different_numbers_of_trials_are_marked(tmp_path, caplog):
    exp = tmp_path / "exp"
    _experiment(exp)
    # PLDA scored an older, shorter version of the list (after the same extraction)
    _write_scores(exp / "scores" / "trials.pldascore", 3.0, 2, num_trials=150)
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        table = write_report([str(exp)], ["trials"], None, None)
    rows = parse_table(table)
    assert [row["Scoring"] for row in rows] == [
        "cosine (200 trials[^1])", "AS-Norm (top 10) (200 trials[^1])",
        "PLDA (150 trials[^1])"]
    assert rows[2]["trials EER (%)"] == \
        f"{measure(str(exp / 'scores' / 'trials.pldascore')).eer_percent:.3f}"
    (footnote,) = [line for line in table.splitlines() if line.startswith("[^")]
    assert footnote.startswith("[^1]: the rows of trials cover different numbers of trials")
    (warning,) = _warnings(caplog)
    assert f"150 in `{exp / 'scores' / 'trials.pldascore'}`" in warning
    assert f"200 in `{exp / 'scores' / 'trials.score'}`" in warning


def test_a_fine_tuning_begun_from_another_base_model_is_marked(tmp_path, caplog):
    base, lm = tmp_path / "exp", tmp_path / "exp-LM"
    _experiment(base, model=b"the base model averaged again")
    _fine_tuning(base, lm, start=b"avg model")
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        table = write_report([str(base), str(lm)], ["trials"], None, None)
    rows = parse_table(table)
    assert [(row["Model"], row["Scoring"]) for row in rows] == [
        ("ResNet18-TSTP-emb64", "cosine"), ("ResNet18-TSTP-emb64", "AS-Norm (top 10)"),
        ("ResNet18-TSTP-emb64", "PLDA"), ("ResNet18-TSTP-emb64-LM (other base[^1])", "cosine")]
    (warning,) = _warnings(caplog)
    assert str(lm / "models" / "model_0.pt") in warning
    assert str(base / "models" / "avg_model.pt") in warning
    assert table.splitlines()[-1] == f"[^1]: {warning}"


def test_a_fine_tuning_not_scored_yet_is_left_out_with_a_warning(tmp_path, caplog):
    """An exp-LM still training (no config.yaml) or scoring (an empty scores/) does not fail
    the base experiment's table."""
    base, lm = tmp_path / "exp", tmp_path / "exp-LM"
    _experiment(base)
    os.makedirs(lm / "scores")
    for expected in ("it has no config.yaml", f"{lm}/scores holds no score file of trials"):
        caplog.clear()
        with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
            table = write_report([str(base), str(lm)], ["trials"], None, None)
        assert [row["Model"] for row in parse_table(table)][:1] == ["ResNet18-TSTP-emb64"]
        assert "-LM" not in table
        assert _warnings(caplog) == [f"{lm} is left out of the table: {expected}"]
        (lm / "config.yaml").write_text(CONFIG + "do_lm: true\n")


def _wavlm_experiment(exp, weights):
    """An experiment whose config leaves ECAPA's input size to WavLM weights at ``weights``
    (``feat_dim: -1``, as WeSpeaker's WavLM configs)."""
    _experiment(exp)
    (exp / "config.yaml").write_text(
        "model: ECAPA_TDNN_GLOB_c512\nmodel_args:\n  feat_dim: -1\n  embed_dim: 192\n"
        "  pooling_func: ASTP\ndataset_args:\n  frontend: s3prl\n  s3prl_args:\n"
        f"    upstream_args:\n      name: wavlm_large\n      path_or_url: {weights}\n"
        "    multilayer_feature: true\n    layer: -1\n    frozen: true\n"
        "    frame_shift: 20\n    frame_length: 20\n")


def test_params_of_a_model_sized_by_its_ssl_front_end_are_counted_from_its_weights(
        tmp_path, caplog):
    pytest.importorskip("transformers")
    import torch

    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm
    from wespeaker_py.models import get_model
    weights = str(tmp_path / "wavlm")
    write_random_wavlm(weights, tiny_wavlm_config(large_layout=True), seed=1)   # 32 wide
    _wavlm_experiment(tmp_path / "exp", weights)
    with torch.device("meta"):
        ecapa = get_model("ECAPA_TDNN_GLOB_c512", feat_dim=32, embed_dim=192,
                          pooling_func="ASTP")
    millions = sum(parameter.numel() for parameter in ecapa.parameters()) / 1e6
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        rows = parse_table(write_report([str(tmp_path / "exp")], ["trials"], None, None))
    assert rows[0]["Params"] == f"{millions:.2f}M"
    assert _warnings(caplog) == []


def test_params_are_na_with_a_warning_when_the_ssl_front_end_is_not_here(tmp_path, caplog):
    missing = str(tmp_path / "no_wavlm")
    _wavlm_experiment(tmp_path / "exp", missing)
    with caplog.at_level("INFO", logger="wespeaker_py.scoring.report"):
        rows = parse_table(write_report([str(tmp_path / "exp")], ["trials"], None, None))
    assert rows[0]["Params"] == "n/a"
    (warning,) = _warnings(caplog)
    assert warning.startswith(f"{tmp_path / 'exp' / 'config.yaml'}: Params is n/a")
    assert missing in warning
