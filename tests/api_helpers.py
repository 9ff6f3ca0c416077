"""Models in WeSpeaker's released-folder layout and the mini corpus's speech for the API/CLI
tests."""
import os
import shutil

from inference_helpers import make_experiment

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI_CORPUS = os.path.join(REPO_ROOT, "examples", "mini", "data", "librispeech_tc100")


def wespeaker_folder(root: str, model: str = "XVEC", model_args=None, seed: int = 0):
    """``root/config.yaml`` + ``root/avg_model.pt`` (a bare state_dict with its head), as
    WeSpeaker releases models; return (folder, eval-mode network)."""
    _, checkpoint, network = make_experiment(root, model=model, model_args=model_args,
                                             bare=True, seed=seed)
    shutil.move(checkpoint, os.path.join(root, "avg_model.pt"))
    os.rmdir(os.path.join(root, "models"))
    return root, network


def mini_speech(num: int):
    """Paths of ``num`` utterances of the embedded mini corpus, of different speakers."""
    table = {}
    with open(os.path.join(MINI_CORPUS, "wav.scp")) as handle:
        for line in handle:
            key, path = line.split()
            table.setdefault(key.split("-")[0], os.path.join(MINI_CORPUS, path))
    return list(table.values())[:num]
