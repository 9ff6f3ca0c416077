import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
stage=-1
stop_stage=-1
trials="a b"
. {repo}/tools/parse_options.sh
corpus=$(basename "$PWD")
echo "$stage|$stop_stage|$trials|$#|$*"
"""


def _run(tmp_path, *args):
    script = tmp_path / "recipe.sh"
    script.write_text(SCRIPT.format(repo=REPO))
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_options_overwrite_defaults(tmp_path):
    result = _run(tmp_path, "--stage", "3", "--stop-stage=5", "--trials", "x y")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3|5|x y|0|"


def test_a_stray_word_is_an_error_naming_it(tmp_path):
    # --trials a b, unquoted: "b" is no option's value; it was silently dropped
    result = _run(tmp_path, "--trials", "a", "b", "--stage", "3")
    assert result.returncode != 0
    assert "unexpected argument 'b'" in result.stderr and result.stdout == ""
    result = _run(tmp_path, "extra")
    assert result.returncode != 0 and "unexpected argument 'extra'" in result.stderr


def test_unknown_option_is_an_error_naming_it(tmp_path):
    result = _run(tmp_path, "--stagee", "3")
    assert result.returncode != 0
    assert "--stagee" in result.stderr


def test_missing_value_is_an_error(tmp_path):
    result = _run(tmp_path, "--stage")
    assert result.returncode != 0
    assert "needs a value" in result.stderr


def test_help_lists_only_the_options_the_script_accepts(tmp_path):
    result = _run(tmp_path, "--help")
    assert result.returncode == 0
    listed = [line.split("=")[0].strip() for line in result.stderr.splitlines()[1:]]
    assert listed == ["--stage", "--stop_stage", "--trials"]   # not --corpus, set later
    assert _run(tmp_path, "--corpus", "x").returncode != 0


def test_a_stage_that_is_no_whole_number_is_an_error(tmp_path):
    for args in (["--stage", "abc"], ["--stop_stage", "2.5"]):
        result = _run(tmp_path, *args)
        assert result.returncode != 0 and result.stdout == ""
        assert "must be a whole number, got" in result.stderr


def test_a_stage_range_that_runs_nothing_is_an_error(tmp_path):
    result = _run(tmp_path, "--stage", "5", "--stop_stage", "3")
    assert result.returncode != 0 and result.stdout == ""
    assert "--stage 5 comes after --stop_stage 3: no stage would run" in result.stderr
    assert _run(tmp_path, "--stage", "3", "--stop_stage", "3").returncode == 0
