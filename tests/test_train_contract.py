"""The training contract: a seeded CPU run gives the same weights, bit for bit, as the
code that recorded them did, and a checkpoint written by that code still resumes exactly.

The digests were recorded with the reference code (d8a62e4, torch 2.13) and the runs
below: speed perturbation, noise and reverb on, one loader worker, two epochs. A change
that moves any number (an extra draw from a generator, a different summation order, a
lost RNG restore) changes them. Another CPU kind rounds differently, and two epochs of
training carry that far (0.2 relative in the worst tensor, against 12 for another seed),
so the digests are kept per CPU kind the reference code has run on; the run must give
those of one kind. So does another FFT: the CPU augmentation's reverb goes through
``scipy.signal.fftconvolve``, and scipy 1.18 rounds it differently from 1.17 (the
device run, whose reverb is torch's, is the same under both). Another torch release
changes its kernels, so each kind names the torch it was recorded under, and a torch
with no recorded kind skips (nothing to compare with) where a torch with one must match
it. On a new kind, a scipy whose FFT changed or a new torch, run the reference commit's
test there and add its digests.
"""
import hashlib
import os
import shutil

import numpy as np
import pytest
import torch

from dataset_helpers import write_audio
from train_helpers import load_checkpoint, make_speaker_corpus, tiny_config
from train_helpers import single_torch_thread  # noqa: F401  (autouse fixture)
from train_helpers import run_training

from wespeaker_py.train.checkpoint import RUN_SETTINGS, SPK2ID_DIGEST

DATA = os.path.join(os.path.dirname(__file__), "data")
# model_1.pt of the cpu-augmentation run below, written by the reference commit
REFERENCE_CHECKPOINT = os.path.join(DATA, "train_contract_model_1.pt")

# per CPU kind (and the torch and scipy it ran under): the final digests of the two fresh
# runs, and of resuming REFERENCE_CHECKPOINT
RECORDED_DIGESTS = {
    "x86-64 of the first recording (d8a62e4)": {
        "torch": "2.13",
        "cpu": "4e43610a966b3047d6cb4066a68c55c49a5e0bbc5508a45db29fc6a3f94d3ff5",
        "device": "7f55432124372ca9ca7adb4c5c5c439e7705697104447021d196a987a34f7022",
        "resume": "4e43610a966b3047d6cb4066a68c55c49a5e0bbc5508a45db29fc6a3f94d3ff5",
    },
    "AMD EPYC, AVX-512 (the reference code aa5a23e rerun on it)": {
        "torch": "2.13",
        "cpu": "12400547309d769c458525a0bf206f4ca715ad65352f36fa701ede53dc487b1d",
        "device": "863a2e04b17c285ae553a591e7360f9f46970afbffa9d1b30039cdf76dba8be6",
        "resume": "3236eeb3c040df38e62a8dbb15af144aeabf337a3846c511041747ed9ee94a81",
    },
    "AMD EPYC, AVX-512, scipy 1.18 (aa5a23e rerun on it, Python 3.12)": {
        "torch": "2.13",
        "cpu": "f32a88c71662faf4c1eb36b2d427a870eb3a9ffbd9efc6ddd7ad9acfa5ab6c60",
        "device": "863a2e04b17c285ae553a591e7360f9f46970afbffa9d1b30039cdf76dba8be6",
        "resume": "4961c2e007bb563a602abaacc2ae644a075c24c75cb7b56033f25dc6571d2a1d",
    },
    "Intel Xeon, scipy 1.17 (aa5a23e rerun on it, Python 3.11)": {
        "torch": "2.13",
        "cpu": "9713bce4a90fead26fe548234565f760fecf4e27f4d87db57362f13e59e88b75",
        "device": "db1616cf0afa7eb77c0fbaf486551a3dcebd077a5cdf078941d33bec3b1b219f",
        "resume": "756f37540639d2ca8a88ba829b029f1e40ce3dd9a1488a615b1ca901dd237963",
    },
    "AMD EPYC, AVX-512, scipy 1.15 (aa5a23e rerun on it, Python 3.10)": {
        "torch": "2.8",
        "cpu": "ed998df994d40886db1ee35b0b2b6f6f2e841bbb808b2982e07040f77796b26d",
        "device": "47155efee0173ec2ecde5a2e91887d3cbd18131eee66c10be72370aa9feb2273",
        "resume": "3f198ec3de2bb0913a40dcdc0611df9f9f48df0e4d94bb82306f63e4c9688e77",
    },
}


def torch_release() -> str:
    """The running torch's ``major.minor``."""
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


@pytest.fixture(scope="module")
def recorded():
    """The CPU kinds recorded under this torch release; none: skip, nothing to compare
    with, before anything trains (module scope and first in the tests' arguments, so it
    comes before the corpus too)."""
    release = torch_release()
    kinds = {kind: runs for kind, runs in RECORDED_DIGESTS.items()
             if runs["torch"] == release}
    if not kinds:
        known = sorted({runs["torch"] for runs in RECORDED_DIGESTS.values()})
        pytest.skip(f"digests are recorded under torch {', '.join(known)}, not {release}: "
                    "run the reference commit's test under it and add them")
    return kinds


def assert_recorded(recorded, digest: str, run: str) -> None:
    """``digest`` is what the reference code gave for ``run`` on one of the ``recorded``
    CPU kinds (those of this torch release)."""
    kinds = [kind for kind, runs in recorded.items() if runs[run] == digest]
    assert kinds, (f"{run} run: digest {digest} matches no CPU kind recorded under torch "
                   f"{torch_release()}; if this CPU (or scipy's FFT) is new, run the "
                   "reference commit's test here and add its digests (see the module doc)")


def state_digest(checkpoint) -> str:
    """SHA-256 over the model's and the optimizer's tensors, keys in sorted order."""
    digest = hashlib.sha256()
    tensors = dict(checkpoint["model"])
    for index, state in checkpoint["optimizer"]["state"].items():
        tensors.update({f"optimizer.{index}.{key}": value for key, value in state.items()
                        if torch.is_tensor(value)})
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four speakers, MUSAN-like noise (incl. babble) and room impulse responses."""
    root = tmp_path_factory.mktemp("contract")
    paths = make_speaker_corpus(str(root), num_spks=4, utts_per_spk=6)
    rng = np.random.default_rng(11)
    noise_rows = []
    for index, key in enumerate(["noise/a", "music/b", "speech/c", "babble/1", "babble/2",
                                 "babble/3"]):
        samples = (rng.standard_normal(16000) * 3000 / (index + 1)).astype(np.int16)
        noise_rows.append(f"{key} {write_audio(str(root / f'noise{index}.wav'), samples)}\n")
    rir_rows = []
    for index, seconds in enumerate((0.2, 0.5)):
        t = np.arange(int(seconds * 16000)) / 16000
        rir = rng.standard_normal(t.size) * np.exp(-t / 0.08)
        rir[0] = 4.0
        samples = (8000 * rir / np.abs(rir).max()).astype(np.int16)
        rir_rows.append(f"rir/{index} {write_audio(str(root / f'rir{index}.wav'), samples)}\n")
    (root / "noise.scp").write_text("".join(noise_rows))
    (root / "rir.scp").write_text("".join(rir_rows))
    return dict(paths, noise=str(root / "noise.scp"), rir=str(root / "rir.scp"))


def contract_config(exp_dir, corpus, augment_on, **overrides):
    """Two epochs with speed perturbation, noise and reverb, one loader worker."""
    config = tiny_config(exp_dir, corpus, num_epochs=2, reverb_data=corpus["rir"],
                         noise_data=corpus["noise"], **overrides)
    config["dataloader_args"]["num_workers"] = 1
    config["dataset_args"].update(speed_perturb=True, aug_prob=0.8, augment_on=augment_on)
    return config


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_seeded_run_gives_the_recorded_weights(recorded, corpus, tmp_path, augment_on):
    exp_dir = str(tmp_path / "exp")
    history = run_training(contract_config(exp_dir, corpus, augment_on))
    assert [result.epoch for result in history] == [1, 2]
    final = load_checkpoint(os.path.join(exp_dir, "models", "model_2.pt"))
    assert_recorded(recorded, state_digest(final), augment_on)


def test_a_checkpoint_of_the_reference_code_resumes_exactly(recorded, corpus, tmp_path):
    exp_dir = str(tmp_path / "exp")
    os.makedirs(os.path.join(exp_dir, "models"))
    start = os.path.join(exp_dir, "models", "model_1.pt")
    shutil.copy(REFERENCE_CHECKPOINT, start)
    torch.manual_seed(987)  # the checkpoint's generator states must replace these
    history = run_training(contract_config(exp_dir, corpus, "cpu", checkpoint=start))
    assert [result.epoch for result in history] == [2]
    final = load_checkpoint(os.path.join(exp_dir, "models", "model_2.pt"))
    assert_recorded(recorded, state_digest(final), "resume")
    # what a checkpoint holds has not changed either, but for what a resume compares
    reference = load_checkpoint(REFERENCE_CHECKPOINT)
    assert set(final) == set(reference) | {RUN_SETTINGS, SPK2ID_DIGEST}
    assert set(final["model"]) == set(reference["model"])
    assert set(final["optimizer"]) == set(reference["optimizer"])
    assert final["scheduler"].keys() == reference["scheduler"].keys()
    assert final["margin_scheduler"].keys() == reference["margin_scheduler"].keys()
