"""Issue 20's faults of galleries, calibrations and their commands: model identity, minimum
trials for calibrate, broken gallery files, enrolling a name twice, flag ranges, export
to a folder. Every input is made here: two tiny models of one architecture with
different seeds, a 0-byte gallery, three trials, ..."""
import importlib.util
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tool_helpers import run_cli
import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from wespeaker_py.api.calibration import (MIN_TRIALS_PER_CLASS, CalibrationMissingError,
                                          TooFewTrialsError, fit_calibration, save_calibration)
from wespeaker_py.api.gallery import GalleryFileError, SpeakerExistsError
from wespeaker_py.errors import WespeakerError
from wespeaker_py.runtime.identity import (MIXED, ModelMismatchError, mean_vec_digest,
                                           short_identity)
from wespeaker_py.utils.paths import OutputNotWritableError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")),
    reason="onnx / onnxruntime not installed")


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two XVEC folders of the same architecture and settings, trained (seeded) apart."""
    root = tmp_path_factory.mktemp("identity")
    first, _ = wespeaker_folder(str(root / "a"), seed=0)
    second, _ = wespeaker_folder(str(root / "b"), seed=1)
    return first, second


@pytest.fixture(scope="module")
def speech():
    return mini_speech(3)


def load(folder, **kwargs):
    return wespeaker_py.load_model(folder, device="cpu", **kwargs)


def folder_with_config(source: str, target: str, change) -> str:
    """A copy of model folder ``source`` at ``target`` whose config ``change(config)`` edits."""
    os.makedirs(target)
    os.link(os.path.join(source, "avg_model.pt"), os.path.join(target, "avg_model.pt"))
    config = yaml.safe_load(open(os.path.join(source, "config.yaml")))
    change(config)
    with open(os.path.join(target, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle)
    return target


def test_identity_depends_on_weights_and_inference_settings_only(models, tmp_path):
    first, second = models
    identity = load(first).identity
    assert len(identity) == 64 and int(identity, 16) >= 0
    assert load(first).identity == identity           # another load of the same files
    assert load(second).identity != identity          # same architecture, other weights
    # the same in a fresh process
    script = ("import wespeaker_py, sys; "
              "print(wespeaker_py.load_model(sys.argv[1], device='cpu').identity)")
    fresh = subprocess.run([sys.executable, "-c", script, first], capture_output=True,
                           text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == identity
    # a front-end setting that changes embeddings changes it; a training-only one does not
    shifted = folder_with_config(first, str(tmp_path / "shift"), lambda config: config[
        "dataset_args"]["fbank_args"].update(frame_shift=12))
    undithered = folder_with_config(first, str(tmp_path / "dither"), lambda config: config[
        "dataset_args"]["fbank_args"].update(dither=0.0))
    assert load(shifted).identity != identity
    assert load(undithered).identity == identity


def test_a_gallery_of_another_model_is_an_error_naming_both_unless_forced(models, speech,
                                                                          tmp_path, capsys,
                                                                          caplog):
    first, second = models
    gallery = str(tmp_path / "speakers.npz")
    owner, other = load(first), load(second)
    owner.enroll("alice", speech[0], gallery=gallery)
    assert str(np.load(gallery)["identity"]) == owner.identity
    expected = (f"{gallery}: this gallery was made with model {short_identity(owner.identity)},"
                f" not with the model in use ({short_identity(other.identity)})")
    with pytest.raises(ModelMismatchError) as refused:
        other.identify(speech[1], gallery=gallery)
    assert str(refused.value).startswith(expected) and "--force" in str(refused.value)
    with pytest.raises(ModelMismatchError):
        other.enroll("bob", speech[1], gallery=gallery)

    with caplog.at_level(logging.WARNING):
        ranking = other.identify(speech[1], gallery=gallery, force=True)
    assert [name for name, _ in ranking] == ["alice"]
    assert any(expected in record.getMessage() for record in caplog.records)

    status, _, err = run_cli(capsys, "identify", "--model", second, "--device", "cpu",
                             "--gallery", gallery, speech[1])
    assert status == 2 and one_error_line(err).startswith(f"wespeaker-py: error: {expected}")
    status, out, _ = run_cli(capsys, "identify", "--model", second, "--device", "cpu",
                             "--gallery", gallery, speech[1], "--force")
    assert status == 0 and out.startswith("alice ")
    status, _, err = run_cli(capsys, "enroll", "--model", second, "--device", "cpu",
                             "--gallery", gallery, "bob", speech[1])
    assert status == 2 and expected in one_error_line(err)


def test_a_forced_enrolment_by_another_model_leaves_a_gallery_no_model_uses_unchecked(
        models, speech, tmp_path):
    first, second = models
    gallery = str(tmp_path / "speakers.npz")
    owner, other = load(first), load(second)
    owner.enroll("alice", speech[0], gallery=gallery)
    owner.enroll("bob", speech[1], gallery=gallery)
    other.enroll("carol", speech[2], gallery=gallery, force=True)
    assert str(np.load(gallery)["identity"]) == MIXED
    for model in (owner, other):   # neither made all of it
        with pytest.raises(ModelMismatchError, match="made with several models"):
            model.identify(speech[0], gallery=gallery)
    assert len(other.identify(speech[0], gallery=gallery, force=True)) == 3
    # a model re-enrolling its only speaker owns the gallery again; any other speaker
    # keeps it mixed
    alone = str(tmp_path / "alone.npz")
    owner.enroll("alice", speech[0], gallery=alone)
    other.enroll("alice", speech[1], gallery=alone, replace=True, force=True)
    assert str(np.load(alone)["identity"]) == other.identity
    other.enroll("alice", speech[2], gallery=alone, append=True)
    assert str(np.load(alone)["identity"]) == other.identity


def synthetic_calibration(identity: str, seed: int = 0):
    """A calibration fitted on made-up scores (20 target, 20 nontarget) by ``identity``."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(0.7, 0.1, 20), rng.normal(0.1, 0.1, 20)])
    labels = np.arange(40) < 20
    return fit_calibration(scores, labels, trials="made-up", model="XVEC", identity=identity)


def test_a_calibration_of_another_model_is_an_error_naming_both_unless_forced(
        models, speech, tmp_path, capsys, caplog):
    first, second = models
    owner_identity = load(first).identity
    path = str(tmp_path / "calibration.json")
    save_calibration(path, synthetic_calibration(owner_identity))
    assert json.load(open(path))["identity"] == owner_identity
    assert load(first, calibration=path).verify(speech[0], speech[1]).calibrated

    other = load(second, calibration=path)
    expected = (f"{path}: this calibration was made with model "
                f"{short_identity(owner_identity)}, not with the model in use "
                f"({short_identity(other.identity)})")
    with pytest.raises(ModelMismatchError, match="--force") as refused:
        other.verify(speech[0], speech[1])
    assert str(refused.value).startswith(expected)
    assert "not used" in other.info()["calibration"]
    with caplog.at_level(logging.WARNING):
        forced = load(second, calibration=path, force=True).verify(speech[0], speech[1])
    assert forced.calibrated and any(expected in r.getMessage() for r in caplog.records)

    common = ["verify", "--model", second, "--device", "cpu", "--calibration", path,
              speech[0], speech[1]]
    status, out, err = run_cli(capsys, *common)
    assert (status, out) == (2, "") and expected in one_error_line(err)
    status, out, _ = run_cli(capsys, *common, "--force", "--json")
    assert status == 0 and json.loads(out)["calibrated"]


def test_files_without_an_identity_warn_once_and_are_used(models, speech, tmp_path, caplog):
    first, _ = models
    model = load(first)
    gallery = str(tmp_path / "old.npz")
    unit = model.unit(model.embed(speech[0]))
    np.savez(gallery, model=np.array("XVEC/emb8"), names=np.array(["alice"]),
             sums=unit[None], counts=np.array([1]))   # the format before identities
    calibration = synthetic_calibration("")
    path = str(tmp_path / "old_calibration.json")
    save_calibration(path, calibration)
    stored = json.load(open(path))
    del stored["identity"]
    json.dump(stored, open(path, "w"))

    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert model.identify(speech[1], gallery=gallery)[0][0] == "alice"
        assert load(first, calibration=path).verify(speech[0], speech[1]).calibrated
        assert load(first, calibration=path).verify(speech[0], speech[1]).calibrated
    warnings = [r.getMessage() for r in caplog.records if "records no model identity" in
                r.getMessage()]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith(gallery) and warnings[1].startswith(path)
    # the next enrolment records the identity
    model.enroll("bob", speech[1], gallery=gallery)
    assert str(np.load(gallery)["identity"]) == model.identity


def test_a_gallery_or_calibration_made_with_another_mean_vector_is_an_error_unless_forced(
        models, speech, tmp_path, caplog):
    first, _ = models
    plain = load(first)
    mean_path = str(tmp_path / "mean_vec.npy")
    np.save(mean_path, np.linspace(-1, 1, plain.embed_dim, dtype=np.float32))
    centred = load(first, mean_vec=mean_path)
    assert centred.identity == plain.identity        # the weights are the same
    digest = mean_vec_digest(centred.mean_vec)
    assert digest == mean_vec_digest(np.load(mean_path).astype(np.float64)) != ""

    gallery = str(tmp_path / "speakers.npz")
    plain.enroll("alice", speech[0], gallery=gallery)
    assert str(np.load(gallery)["mean_vec"]) == ""
    with pytest.raises(ModelMismatchError, match=(
            rf"{gallery}: this gallery was made without a mean vector, and the model in use "
            rf"scores with mean vector {short_identity(digest)} subtracted.*--force")):
        centred.identify(speech[1], gallery=gallery)
    with pytest.raises(ModelMismatchError):
        centred.enroll("bob", speech[1], gallery=gallery)
    with caplog.at_level(logging.WARNING):
        assert centred.identify(speech[1], gallery=gallery, force=True)[0][0] == "alice"
    assert any("used anyway" in record.getMessage() for record in caplog.records)

    centred_gallery = str(tmp_path / "centred.npz")
    centred.enroll("alice", speech[0], gallery=centred_gallery)
    assert str(np.load(centred_gallery)["mean_vec"]) == digest
    assert centred.identify(speech[1], gallery=centred_gallery)[0][0] == "alice"
    with pytest.raises(ModelMismatchError, match="scores without a mean vector"):
        plain.identify(speech[1], gallery=centred_gallery)

    path = str(tmp_path / "calibration.json")
    save_calibration(path, synthetic_calibration(plain.identity))
    assert json.load(open(path))["mean_vec"] == ""
    assert load(first, calibration=path).verify(speech[0], speech[1]).calibrated
    with pytest.raises(ModelMismatchError, match="this calibration was made without a mean"):
        load(first, calibration=path, mean_vec=mean_path).verify(speech[0], speech[1])
    assert load(first, calibration=path, mean_vec=mean_path,
                force=True).verify(speech[0], speech[1]).calibrated


def test_a_calibration_named_but_missing_is_an_error_not_an_uncalibrated_answer(
        models, speech, tmp_path, capsys):
    first, _ = models
    missing = str(tmp_path / "nowhere" / "calibration.json")
    model = load(first, calibration=missing)
    with pytest.raises(CalibrationMissingError, match=rf"calibration file {missing} does not "
                                                      rf"exist; fit it with 'wespeaker-py "
                                                      rf"calibrate'"):
        model.verify(speech[0], speech[1])
    assert model.info()["calibration"].startswith(f"not used: calibration file {missing}")
    assert not load(first).verify(speech[0], speech[1]).calibrated   # none beside: allowed
    status, out, err = run_cli(capsys, "verify", "--model", first, "--device", "cpu",
                               "--calibration", missing, speech[0], speech[1])
    assert (status, out) == (2, "") and "does not exist" in one_error_line(err)
    os.makedirs(os.path.dirname(missing))
    save_calibration(missing, synthetic_calibration(model.identity))
    assert model.verify(speech[0], speech[1]).calibrated


def write_trials(tmp_path, speech, labels):
    trials = tmp_path / "trials"
    trials.write_text("".join(f"u0 u{1 + i % 2} {label}\n" for i, label in enumerate(labels)))
    wav_scp = tmp_path / "wav.scp"
    wav_scp.write_text("".join(f"u{i} {path}\n" for i, path in enumerate(speech)))
    return str(trials), str(wav_scp)


def test_calibrate_refuses_fewer_than_the_minimum_of_trials(models, speech, tmp_path, capsys):
    first, _ = models
    trials, wav_scp = write_trials(tmp_path, speech, ["target", "target", "nontarget"])
    message = (f"cannot calibrate on {trials}: 2 target and 1 nontarget trial(s); at least "
               f"{MIN_TRIALS_PER_CLASS} of each are needed")
    with pytest.raises(TooFewTrialsError) as refused:
        load(first).calibrate(trials, wav_scp, output=str(tmp_path / "c.json"),
                              progress=False)
    assert str(refused.value) == message
    status, out, err = run_cli(capsys, "calibrate", "--model", first, "--device", "cpu",
                               "--trials", trials, "--wav_scp", wav_scp,
                               "--output", tmp_path / "c.json")
    assert (status, out) == (2, "") and message in one_error_line(err)
    assert not (tmp_path / "c.json").exists()
    # the same holds for scores given directly, one short of the minimum
    count = MIN_TRIALS_PER_CLASS
    labels = np.arange(2 * count - 1) < count
    with pytest.raises(TooFewTrialsError, match=f"{count} target and {count - 1} nontarget"):
        fit_calibration(np.linspace(0, 1, len(labels))[::-1], labels)
    labels = np.arange(2 * count) < count
    assert fit_calibration(np.linspace(0, 1, len(labels))[::-1], labels).num_target == count


def test_broken_gallery_files_are_one_line_errors(models, speech, tmp_path, capsys):
    first, _ = models
    model = load(first)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "text.npz"
    text.write_text("alice 0.1 0.2\n")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    partial = tmp_path / "partial.npz"
    np.savez(partial, names=np.array(["alice"]))
    skewed = tmp_path / "skewed.npz"
    np.savez(skewed, model=np.array("XVEC/emb8"), names=np.array(["alice", "bob"]),
             sums=np.zeros((1, 8)), counts=np.array([1]))
    cases = [(empty, "is empty (0 bytes)"), (text, "not a speaker gallery"),
             (single, "not an .npz archive"), (partial, "no model, sums, counts"),
             (skewed, "2 names, sums of shape (1, 8)"), (tmp_path, "is a folder")]
    for path, what in cases:
        with pytest.raises(GalleryFileError, match=str(path)) as refused:
            model.identify(speech[0], gallery=str(path))
        assert what in str(refused.value)
    for command in (["identify", "--gallery", empty, speech[0]],
                    ["enroll", "--gallery", empty, "alice", speech[0]]):
        status, out, err = run_cli(capsys, command[0], "--model", first, "--device", "cpu",
                                   *command[1:])
        assert (status, out) == (2, "")
        assert f"gallery {empty} is empty (0 bytes)" in one_error_line(err)
    assert empty.read_bytes() == b""   # enroll did not overwrite it


def test_enrolments_at_the_same_time_each_keep_their_speaker(
        models, speech, tmp_path, monkeypatch):
    first, _ = models
    model = load(first)
    gallery = str(tmp_path / "speakers.npz")
    embed = model._embed_heard
    enrolled_meanwhile = []

    def embed_while_another_enrols(item, *args):
        if not enrolled_meanwhile:   # another enrolment lands while alice is embedded
            enrolled_meanwhile.append(load(first).enroll("bob", speech[1], gallery=gallery))
        return embed(item, *args)

    monkeypatch.setattr(model, "_embed_heard", embed_while_another_enrols)
    assert model.enroll("alice", speech[0], gallery=gallery) == 2
    assert sorted(np.load(gallery)["names"].tolist()) == ["alice", "bob"]


def test_the_gallery_lock_makes_another_process_wait(tmp_path):
    from wespeaker_py.api.gallery import gallery_lock
    gallery = str(tmp_path / "speakers.npz")
    said = tmp_path / "holder_said"
    # the holder writes "released" as the last thing it does before letting go (the pause
    # only gives this process time to ask for the lock while it is held)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from wespeaker_py.api.gallery import gallery_lock\n"
         "with gallery_lock(sys.argv[1]):\n"
         "    print('locked', flush=True); time.sleep(1.0)\n"
         "    with open(sys.argv[2], 'w') as out:\n"
         "        out.write('released')\n", gallery, str(said)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with gallery_lock(gallery):
        seen = said.read_text() if said.exists() else "(nothing yet)"
    assert holder.wait(timeout=30) == 0
    assert seen == "released"     # this process got the lock only after the holder let go


def test_enroll_makes_a_missing_folder_and_goes_on_where_folders_cannot_be_locked(
        models, speech, tmp_path, monkeypatch, caplog):
    import errno
    from wespeaker_py.api import gallery as gallery_module
    first, _ = models
    model = load(first)
    assert model.enroll("alice", speech[0], gallery=str(tmp_path / "new" / "g.npz")) == 1

    def nfs_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(gallery_module.fcntl, "flock", nfs_flock)
    gallery = str(tmp_path / "nfs" / "g.npz")
    with caplog.at_level(logging.WARNING):
        assert model.enroll("alice", speech[0], gallery=gallery) == 1
    assert any("cannot lock its folder" in record.getMessage() for record in caplog.records)


def test_enrolling_a_name_twice_needs_replace_or_append(models, speech, tmp_path, capsys):
    first, _ = models
    model = load(first)
    gallery = str(tmp_path / "speakers.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    with pytest.raises(SpeakerExistsError, match="'alice' is already enrolled") as refused:
        model.enroll("alice", speech[1], gallery=gallery)
    assert "--replace" in str(refused.value) and "--append" in str(refused.value)
    assert list(np.load(gallery)["counts"]) == [1]

    model.enroll("alice", speech[1], gallery=gallery, append=True)
    assert list(np.load(gallery)["counts"]) == [2]
    model.enroll("alice", speech[2], gallery=gallery, replace=True)
    assert list(np.load(gallery)["counts"]) == [1]
    # this untrained model embeds all three files alike (cosines ~1), so a score cannot
    # tell what the centroid holds: the stored sum must be speech[2]'s unit embedding alone
    replaced = model.embed(speech[2]).astype(np.float64)
    np.testing.assert_allclose(np.load(gallery)["sums"], [replaced / np.linalg.norm(replaced)],
                               atol=1e-6)
    with pytest.raises(WespeakerError, match="choose one of replace"):
        model.enroll("alice", speech[0], gallery=gallery, replace=True, append=True)

    common = ["enroll", "--model", first, "--device", "cpu", "--gallery", gallery, "alice",
              speech[0]]
    status, _, err = run_cli(capsys, *common)
    assert status == 2 and "speaker 'alice' is already enrolled" in one_error_line(err)
    status, out, _ = run_cli(capsys, *common, "--append")
    assert status == 0 and list(np.load(gallery)["counts"]) == [2]


@pytest.mark.parametrize("argv, flag, message", [
    (["identify", "--gallery", "g.npz", "a.wav", "--top_k", "0"], "--top_k",
     "must be at least 1, got 0"),
    (["verify", "a.wav", "b.wav", "--prior", "1.5"], "--prior",
     "must lie strictly between 0 and 1, got 1.5"),
    (["verify", "a.wav", "b.wav", "--prior", "0"], "--prior",
     "must lie strictly between 0 and 1, got 0"),
])
def test_flag_ranges_are_checked_at_parse_time(argv, flag, message, tmp_path, capsys):
    # the model does not exist: the flag is refused before anything is loaded
    status, _, err = run_cli(capsys, argv[0], "--model", tmp_path / "none", *argv[1:])
    assert status == 2
    assert err.strip().splitlines()[-1].startswith(
        f"wespeaker-py {argv[0]}: error: argument {flag}")
    assert message in err


def test_the_api_checks_the_same_ranges(models, speech, tmp_path):
    first, _ = models
    model = load(first)
    gallery = str(tmp_path / "speakers.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    with pytest.raises(WespeakerError, match="top_k must be at least 1, got 0"):
        model.identify(speech[0], gallery=gallery, top_k=0)
    with pytest.raises(WespeakerError, match="prior must lie strictly between 0 and 1"):
        model.verify(speech[0], speech[1], prior=1.5)   # uncalibrated: was ignored before


@needs_onnx
def test_export_to_a_folder_writes_model_onnx_inside(models, speech, tmp_path, capsys):
    first, _ = models
    existing = tmp_path / "existing"
    existing.mkdir()
    status, out, _ = run_cli(capsys, "export", "--model", first, "--device", "cpu",
                             "--onnx", existing, "--with_frontend")
    assert status == 0 and out.strip() == f"wrote {existing / 'model.onnx'}"
    assert sorted(os.listdir(existing)) == ["model.onnx"]
    status, out, _ = run_cli(capsys, "export", "--model", first, "--device", "cpu",
                             "--onnx", f"{tmp_path / 'new'}/")
    assert status == 0 and sorted(os.listdir(tmp_path / "new")) == ["model.onnx"]
    # a graph load_model would take for a checkpoint is not written
    status, _, err = run_cli(capsys, "export", "--model", first, "--device", "cpu",
                             "--onnx", str(tmp_path / "graph"))
    assert status == 2 and "name the graph NAME.onnx" in one_error_line(err)
    assert not (tmp_path / "graph").exists()
    # the graph carries the model's identity: a gallery of the torch model serves it
    torch_model, graph = load(first), wespeaker_py.load_model(str(existing / "model.onnx"))
    assert graph.identity == torch_model.identity
    gallery = str(tmp_path / "speakers.npz")
    torch_model.enroll("alice", speech[0], gallery=gallery)
    assert graph.identify(speech[0], gallery=gallery)[0][0] == "alice"


def test_calibrate_checks_its_output_before_embedding(models, speech, tmp_path, monkeypatch):
    first, _ = models
    trials, wav_scp = write_trials(tmp_path, speech, ["target", "nontarget"] * 10)
    model = load(first)
    embedded = []
    monkeypatch.setattr(model, "embed_many", lambda *args, **kwargs: embedded.append(1))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    with pytest.raises(OutputNotWritableError, match="cannot write .*a_file/c.json"):
        model.calibrate(trials, wav_scp, output=str(blocker / "c.json"), progress=False)
    model.calibration_path = None
    with pytest.raises(WespeakerError, match="say where to write the calibration"):
        model.calibrate(trials, wav_scp, progress=False)
    assert embedded == []
