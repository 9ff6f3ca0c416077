"""examples/finetune/run.sh with a fake python: what it reuses, and the rates it reads."""
import os
import sys

from recipe_helpers import REPO, run_script, write_tone

FINETUNE_DIR = os.path.join(REPO, "examples", "finetune")

# logs each call; runs inline programs (-c, -) for real; "embed" writes its output's scp
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "{log}"
if [ "$1" == "-c" ] || [ "$1" == "-" ]; then exec {python} "$@"; fi
if [ "$3" == "embed" ]; then
  while [ $# -gt 0 ]; do [ "$1" == "--output" ] && out=$2; shift; done
  echo "u1 ${{out}}:4" > "${{out%.ark}}.scp"
fi
exit 0
"""


def _recipe_copy(tmp_path):
    """The recipe's files linked into a folder of its own, so that its data/ and exp/ land
    there."""
    recipe = tmp_path / "recipe"
    os.makedirs(recipe)
    for name in ("run.sh", "path.sh", "tools", "local"):
        os.symlink(os.path.realpath(os.path.join(FINETUNE_DIR, name)), recipe / name)
    return str(recipe)


def _fake_env(tmp_path):
    bin_dir, log = tmp_path / "fakebin", tmp_path / "python.log"
    os.makedirs(bin_dir)
    (bin_dir / "python").write_text(FAKE_PYTHON.format(log=log, python=sys.executable))
    os.chmod(bin_dir / "python", 0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def _calls(log, text):
    with open(log) as handle:
        return [line.split() for line in handle if text in line]


def _test_folder(path, wav):
    os.makedirs(path)
    (path / "wav.scp").write_text(f"u1 {wav}\n")
    (path / "trials").write_text("u1 u1 target\n")
    return str(path)


def test_source_embeddings_are_made_again_for_another_test_folder(tmp_path):
    env, log = _fake_env(tmp_path)
    model = tmp_path / "model"
    os.makedirs(model)
    (model / "avg_model.pt").write_text("weights")
    first = _test_folder(tmp_path / "test1", "/nowhere/a.wav")
    second = _test_folder(tmp_path / "test2", "/nowhere/b.wav")
    recipe = _recipe_copy(tmp_path)

    def stage3(test_dir):
        return run_script(recipe, "run.sh", "--stage", "3", "--stop_stage", "3",
                          "--model", str(model), "--data_dir", str(tmp_path / "data"),
                          "--test_dir", test_dir, "--name", "calls", env=env)

    def source_embeds():
        return [call[call.index("--wav_scp") + 1] for call in _calls(log, " embed ")
                if call[call.index("--model") + 1] == str(model)]

    stage3(first)
    stage3(first)
    assert source_embeds() == [f"{first}/wav.scp"]  # made once
    stage3(second)  # the same --name: the first folder's embeddings are not reused
    assert source_embeds() == [f"{first}/wav.scp", f"{second}/wav.scp"]
    future = os.path.getmtime(os.path.join(second, "wav.scp")) + 10
    os.utime(os.path.join(second, "wav.scp"), (future, future))  # an edited list, too
    stage3(second)
    assert source_embeds()[-1] == f"{second}/wav.scp" and len(source_embeds()) == 3


def test_stage1_reads_the_corpus_rate_from_an_absolute_path_or_a_pipe(tmp_path):
    env, log = _fake_env(tmp_path)
    wav = str(tmp_path / "audio" / "a.wav")
    write_tone(wav, 0.5, 22050, 200)
    recipe = _recipe_copy(tmp_path)
    for first_entry in (wav, f"cat {wav} |"):
        corpus = tmp_path / f"corpus{len(first_entry)}"
        os.makedirs(corpus)
        (corpus / "wav.scp").write_text(f"u1 {first_entry}\n")
        run_script(recipe, "run.sh", "--stage", "1", "--stop_stage", "1",
                   "--corpus_dir", str(corpus), env=env)
        reference = _calls(log, "local/resample_data.py")[-1]
        assert reference[reference.index("--rate") + 1] == "22050", first_entry
