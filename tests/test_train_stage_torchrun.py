"""tools/recipe/train_stage.sh gives torchrun's ranks time to save when the job is stopped."""
import os
import subprocess

import pytest

from recipe_helpers import MINI_DIR

FAKE_TORCHRUN = """#!/usr/bin/env bash
# test stand-in: logs the stop settings it was started with
echo "timeout=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT-unset} signals=${PET_SIGNALS_TO_HANDLE-unset}" \\
  >> "%s"
"""


def _launch(tmp_path, environment):
    """train_stage with two processes and a fake torchrun: the line it logged."""
    bin_dir, log = tmp_path / "bin", tmp_path / "launch.log"
    os.makedirs(bin_dir)
    (bin_dir / "torchrun").write_text(FAKE_TORCHRUN % log)
    os.chmod(bin_dir / "torchrun", 0o755)
    config = tmp_path / "conf.yaml"
    config.write_text("num_epochs: 3\n")
    settings = {"config": str(config), "exp_dir": str(tmp_path / "exp"), "data": "D",
                "data_type": "raw", "gpus": "[0,1]", "num_avg": "2", "checkpoint": ""}
    script = "; ".join(["set -eo pipefail", ". ./path.sh", ". tools/recipe_helpers.sh",
                        ". tools/recipe/train_stage.sh"]
                       + [f"{key}='{value}'" for key, value in settings.items()]
                       + ["train_stage D/train"])
    env = {key: value for key, value in os.environ.items()
           if key not in ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SIGNALS_TO_HANDLE")}
    env.update(environment, PATH=f"{bin_dir}:{os.environ['PATH']}")
    result = subprocess.run(["bash", "-c", script], cwd=MINI_DIR, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return open(log).read().strip()


@pytest.mark.parametrize("environment, expected", [
    # torchrun's own 30 s is too short for a rank to finish its batch and write its state;
    # SIGUSR1 is passed on to the ranks rather than end torchrun
    ({}, "timeout=300 signals=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"),
    ({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "900", "PET_SIGNALS_TO_HANDLE": "SIGTERM"},
     "timeout=900 signals=SIGTERM"),   # the job's own settings are kept
])
def test_torchrun_waits_for_the_ranks_to_save_on_a_stop_signal(tmp_path, environment,
                                                               expected):
    assert _launch(tmp_path, environment) == expected
