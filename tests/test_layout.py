"""The experiment folder's and an embedding set's file names (wespeaker_py/io/layout.py)."""
import os
import subprocess
import sys

from wespeaker_py.io.layout import EmbeddingSetLayout, ExperimentLayout
from wespeaker_py.train.plan import Layout


def test_experiment_files_keep_wespeaker_names():
    layout = ExperimentLayout(os.path.join("exp", "run"))
    assert layout.config_path == os.path.join("exp", "run", "config.yaml")
    assert layout.avg_model_path == os.path.join("exp", "run", "models", "avg_model.pt")
    assert layout.scores_dir == os.path.join("exp", "run", "scores")
    assert layout.score_path(os.path.join("data", "vox1_O_cleaned.kaldi")) == \
        os.path.join("exp", "run", "scores", "vox1_O_cleaned.kaldi.score")
    assert layout.embeddings_dir == os.path.join("exp", "run", "embeddings")


def test_training_layout_adds_the_checkpoints_to_the_experiment_files():
    layout = Layout("exp")
    assert isinstance(layout, ExperimentLayout)
    assert layout.checkpoint_path(3) == os.path.join("exp", "models", "model_3.pt")
    assert layout.interrupted_path == os.path.join("exp", "models", "interrupted.pt")


def test_embedding_set_side_files_lie_beside_any_ark(tmp_path):
    side = EmbeddingSetLayout.beside(str(tmp_path / "vox" / "part.ark"))
    assert side.embeddings_scp == str(tmp_path / "vox" / "xvector.scp")
    assert side.speaker_means_ark == str(tmp_path / "vox" / "spk_xvector.ark")
    assert side.speaker_means_scp == str(tmp_path / "vox" / "spk_xvector.scp")
    assert side.mean_path == str(tmp_path / "vox" / "mean_vec.npy")


def test_layout_imports_no_torch():
    script = "import sys, wespeaker_py.io.layout; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
