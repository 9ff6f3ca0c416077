"""A converted (or random) WavLM folder is written atomically by atomic_files.atomic_dir: a
killed conversion's half-written folder is removed by the next one beside it."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

from wespeaker_py.frontend.wavlm_convert import save_hf_directory  # noqa: E402
from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_wavlm():
    from transformers import WavLMModel
    return WavLMModel(tiny_wavlm_config())


def test_a_killed_conversions_folder_is_removed_by_the_next(tmp_path):
    killed = str(tmp_path / "killed")
    code = ("import os\n"
            "from transformers import WavLMModel\n"
            "from wespeaker_py.frontend.wavlm_convert import save_hf_directory\n"
            "from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config\n"
            "model = WavLMModel(tiny_wavlm_config())\n"
            "def killed(folder, **kwargs):\n"
            "    open(os.path.join(folder, 'config.json'), 'w').close()\n"
            "    os._exit(9)\n"
            "model.save_pretrained = killed\n"
            f"save_hf_directory(model, {killed!r})\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert result.returncode == 9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".tmp_killed.") and not os.path.exists(killed)
    save_hf_directory(_tiny_wavlm(), str(tmp_path / "next"))
    assert os.listdir(tmp_path) == ["next"]
    assert sorted(os.listdir(tmp_path / "next")) == ["config.json", "model.safetensors"]


def test_a_converted_folder_follows_umask_and_is_never_half_written(tmp_path):
    old = os.umask(0o022)
    try:
        save_hf_directory(_tiny_wavlm(), str(tmp_path / "out"))
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    for name in os.listdir(tmp_path / "out"):
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == 0o644, name
    with pytest.raises(FileExistsError, match="out exists and is not empty"):
        save_hf_directory(_tiny_wavlm(), str(tmp_path / "out"))

    def failing(folder, **kwargs):
        open(os.path.join(folder, "config.json"), "w").close()
        raise RuntimeError("disk trouble")

    model = _tiny_wavlm()
    model.save_pretrained = failing
    with pytest.raises(RuntimeError, match="disk trouble"):
        save_hf_directory(model, str(tmp_path / "failed"))
    assert os.listdir(tmp_path) == ["out"]
