"""identify with the model's calibration: each candidate carries the decision verify would make
for the recording and that speaker, and the command says when no enrolled speaker passes."""
import copy
import json
import os
import pickle
import shutil

import numpy as np
import pytest

import wespeaker_py
from api_helpers import mini_speech, wespeaker_folder
from tool_helpers import run_cli
from wespeaker_py.api.calibration import Calibration, OperatingPoint, save_calibration
from wespeaker_py.errors import WespeakerError
from wespeaker_py.runtime.identity import mean_vec_digest


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    """A tiny model folder, a gallery of alice and bob (one recording each), the recording
    alice was enrolled from, and one of a speaker not enrolled."""
    root = tmp_path_factory.mktemp("identify")
    folder, _ = wespeaker_folder(str(root / "model"))
    speech = mini_speech(8)
    # an untrained model's embeddings all point one way; its mean vector spreads their cosines
    untrained = wespeaker_py.load_model(folder, device="cpu")
    np.save(os.path.join(folder, "mean_vec.npy"),
            np.mean([untrained.embed(path) for path in speech], axis=0))
    model = wespeaker_py.load_model(folder, device="cpu")
    gallery = str(root / "speakers.npz")
    model.enroll("alice", speech[0], gallery=gallery)
    model.enroll("bob", speech[1], gallery=gallery)
    return folder, gallery, speech[0], speech[2]


def calibrate_at(model, folder, eer_threshold):
    """Write a calibration.json of ``model`` into ``folder`` whose EER point is
    ``eer_threshold`` (and whose 1% false-accept point, 1.0, accepts nothing)."""
    points = {"eer": OperatingPoint(eer_threshold, 0.1, 0.1),
              "fa1": OperatingPoint(1.0, 0.01, 0.5)}
    save_calibration(os.path.join(folder, "calibration.json"),
                     Calibration(weight=20.0, bias=-10.0, eer=0.1, cllr=0.5, num_target=10,
                                 num_nontarget=10, operating_points=points, identity=model.identity,
                                 mean_vec=mean_vec_digest(model.mean_vec)))


def identify_cli(capsys, folder, gallery, audio, *flags):
    return run_cli(capsys, "identify", "--model", folder, "--device", "cpu", "--gallery",
                   gallery, audio, *flags)


def test_without_a_calibration_identify_decides_nothing_and_says_so(enrolled, capsys):
    folder, gallery, alice, _ = enrolled
    model = wespeaker_py.load_model(folder, device="cpu")
    ranking = model.identify(alice, gallery=gallery)
    # still (name, cosine) pairs, most similar first
    assert [name for name, _ in ranking] == ["alice", "bob"]
    assert dict(ranking)["alice"] == pytest.approx(1.0, abs=1e-6)
    assert all(candidate.verification is None for candidate in ranking)
    # a raw-score threshold decides, marked uncalibrated, as verify's does
    [top] = model.identify(alice, gallery=gallery, top_k=1, threshold=0.9)
    assert top.verification.decision and not top.verification.calibrated
    with pytest.raises(WespeakerError, match="needs a calibration"):
        model.identify(alice, gallery=gallery, operating_point="fa1")

    status, out, _ = identify_cli(capsys, folder, gallery, alice, "--json")
    assert status == 0 and [sorted(entry) for entry in json.loads(out)] == \
        [["score", "speaker"]] * 2
    status, out, _ = identify_cli(capsys, folder, gallery, alice)
    lines = out.splitlines()
    assert status == 0 and [line.split()[0] for line in lines[:2]] == ["alice", "bob"]
    assert lines[2].startswith("the scores are uncalibrated cosines, so no decision is made")


def test_with_a_calibration_each_candidate_gets_the_decision_verify_makes(enrolled, tmp_path,
                                                                          capsys):
    folder, gallery, alice, stranger = enrolled
    copied = str(tmp_path / "model")
    os.makedirs(copied)
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), copied)
    plain = wespeaker_py.load_model(copied, device="cpu")
    near = plain.identify(stranger, gallery=gallery, top_k=1)[0].score
    # the EER point just above the stranger's nearest speaker: alice passes, the stranger not
    calibrate_at(plain, copied, near + 0.01)
    model = wespeaker_py.load_model(copied, device="cpu")

    ranking = model.identify(alice, gallery=gallery)
    assert [name for name, _ in ranking] == ["alice", "bob"]
    for candidate in ranking:
        assert candidate.verification == model.decide(candidate.score)
        assert candidate.verification.llr == pytest.approx(20.0 * candidate.score - 10.0)
    assert ranking[0].verification.decision
    # alice was enrolled from one recording: her entry is what verify of that pair decides
    paired = model.verify(alice, alice)
    assert (ranking[0].verification.decision, ranking[0].verification.threshold) == \
        (paired.decision, paired.threshold)
    unknown = model.identify(stranger, gallery=gallery)
    assert not any(candidate.verification.decision for candidate in unknown)
    # the same rules as verify's
    strict = model.identify(alice, gallery=gallery, operating_point="fa1")
    assert strict[0].verification.threshold == 1.0 and not strict[0].verification.decision
    bayes = model.identify(alice, gallery=gallery, prior=0.01)
    assert [c.verification for c in bayes] == [model.decide(c.score, prior=0.01) for c in bayes]
    with pytest.raises(WespeakerError, match="give one of them"):
        model.identify(alice, gallery=gallery, prior=0.01, threshold=0.3)
    assert pickle.loads(pickle.dumps(ranking[0])).verification == ranking[0].verification
    assert copy.deepcopy(ranking)[1].verification == ranking[1].verification

    status, out, _ = identify_cli(capsys, copied, gallery, stranger)
    lines = out.splitlines()
    assert status == 0 and lines[0].startswith(f"{unknown[0].speaker} {unknown[0].score:.6f} "
                                               f"LLR ")
    assert lines[0].endswith(" different speakers")
    assert lines[-1].startswith(f"no enrolled speaker passes the threshold; nearest: "
                                f"{unknown[0].speaker} (cosine {unknown[0].score:.4f}); "
                                f"threshold rule: score > ")
    status, out, _ = identify_cli(capsys, copied, gallery, alice)
    assert out.splitlines()[0].endswith(" same speaker")
    assert out.splitlines()[-1].startswith("1 enrolled speaker(s) pass the threshold: alice; ")
    status, out, _ = identify_cli(capsys, copied, gallery, alice, "--json", "--prior", "0.01")
    top = json.loads(out)[0]
    assert status == 0 and (top["speaker"], top["rule"]) == ("alice", "bayes")
    assert (top["score"], top["llr"], top["decision"]) == \
        (ranking[0].score, ranking[0].verification.llr, bayes[0].verification.decision)
