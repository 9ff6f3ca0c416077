"""identify with the model's calibration: each candidate carries the decision verify would make
for the recording and that speaker, and the command says when no enrolled speaker passes."""
import copy
import json
import logging
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
from wespeaker_py.runtime.identity import ModelMismatchError, mean_vec_digest


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


def calibrate_at(model, folder, eer_threshold, identity=None):
    """Write a calibration.json of ``model`` (or, given ``identity``, of that model) into
    ``folder`` whose EER point is ``eer_threshold`` (and whose 1% false-accept point, 1.0,
    accepts nothing)."""
    points = {"eer": OperatingPoint(eer_threshold, 0.1, 0.1),
              "fa1": OperatingPoint(1.0, 0.01, 0.5)}
    save_calibration(os.path.join(folder, "calibration.json"),
                     Calibration(weight=20.0, bias=-10.0, eer=0.1, cllr=0.5, num_target=10,
                                 num_nontarget=10, operating_points=points,
                                 identity=identity or model.identity,
                                 mean_vec=mean_vec_digest(model.mean_vec)))


def copy_of_model(folder, tmp_path, name="model"):
    """A copy of the model folder ``folder`` as ``tmp_path/name``, to write a calibration
    into."""
    copied = str(tmp_path / name)
    os.makedirs(copied)
    for name in os.listdir(folder):
        shutil.copy(os.path.join(folder, name), copied)
    return copied


def identify_cli(capsys, folder, gallery, audio, *flags):
    return run_cli(capsys, "identify", "--model", folder, "--device", "cpu", "--gallery",
                   gallery, audio, *flags)


def ranked_lines(out):
    """The ``(name, score)`` of each stdout line of ``identify``, which must hold exactly
    those two fields, as a ``while read name score`` loop reads them."""
    rows = [line.split(" ") for line in out.splitlines()]
    assert all(len(row) == 2 for row in rows), out
    return [(name, float(score)) for name, score in rows]


def summary_of(err):
    """The line of ``identify``'s stderr that says what was decided."""
    [line] = [line for line in err.splitlines()
              if "enrolled speaker" in line or "no decision is made" in line]
    return line


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
    status, out, err = identify_cli(capsys, folder, gallery, alice)
    # stdout is the ranking alone; what was (not) decided goes to stderr, naming the model
    assert status == 0 and [name for name, _ in ranked_lines(out)] == ["alice", "bob"]
    assert summary_of(err) == (f"the scores are uncalibrated cosines, so no decision is made "
                               f"(fit the calibration of {folder} with 'wespeaker-py "
                               f"calibrate', or give --threshold)")


def test_candidate_is_exported_beside_verification(enrolled):
    from wespeaker_py import api
    folder, gallery, alice, _ = enrolled
    ranking = wespeaker_py.load_model(folder, device="cpu").identify(alice, gallery=gallery)
    assert {"Candidate", "Verification"} <= set(api.__all__)
    assert all(isinstance(candidate, api.Candidate) for candidate in ranking)


def test_with_a_calibration_each_candidate_gets_the_decision_verify_makes(enrolled, tmp_path,
                                                                          capsys):
    folder, gallery, alice, stranger = enrolled
    copied = copy_of_model(folder, tmp_path)
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

    status, out, err = identify_cli(capsys, copied, gallery, stranger)
    # a decision leaves stdout the 'name score' lines it was; the summary is on stderr
    assert status == 0 and ranked_lines(out) == [(name, pytest.approx(score, abs=1e-6))
                                                 for name, score in unknown]
    assert summary_of(err).startswith(f"no enrolled speaker is decided the same speaker; "
                                      f"nearest: {unknown[0].speaker} (cosine "
                                      f"{unknown[0].score:.4f}); threshold rule: score > ")
    status, out, err = identify_cli(capsys, copied, gallery, alice)
    assert [name for name, _ in ranked_lines(out)] == ["alice", "bob"]
    assert summary_of(err).startswith("1 enrolled speaker(s) decided the same speaker: alice; "
                                      "threshold rule: score > ")
    # the Bayes rule has no threshold to pass: the line names the rule that decided
    status, out, err = identify_cli(capsys, copied, gallery, alice, "--prior", "0.01")
    assert status == 0 and [name for name, _ in ranked_lines(out)] == ["alice", "bob"]
    assert summary_of(err).startswith("1 enrolled speaker(s) decided the same speaker: alice; "
                                      "Bayes rule at prior 0.01: ")
    assert "threshold" not in summary_of(err)
    status, out, _ = identify_cli(capsys, copied, gallery, alice, "--json", "--prior", "0.01")
    top = json.loads(out)[0]
    assert status == 0 and (top["speaker"], top["rule"]) == ("alice", "bayes")
    assert (top["score"], top["llr"], top["decision"]) == \
        (ranking[0].score, ranking[0].verification.llr, bayes[0].verification.decision)


def test_a_calibration_of_another_model_leaves_a_plain_ranking_undecided(enrolled, tmp_path,
                                                                         capsys, caplog):
    folder, gallery, alice, _ = enrolled
    copied = copy_of_model(folder, tmp_path)
    stale = os.path.join(copied, "calibration.json")
    calibrate_at(wespeaker_py.load_model(copied, device="cpu"), copied, 0.5,
                 identity="0" * 64)
    model = wespeaker_py.load_model(copied, device="cpu")

    # a plain ranking works as it did before identify read calibrations: one warning
    # naming the file and why, and no decision
    with caplog.at_level(logging.WARNING):
        ranking = model.identify(alice, gallery=gallery)
        assert model.identify(alice, gallery=gallery) == ranking
    assert [name for name, _ in ranking] == ["alice", "bob"]
    assert all(candidate.verification is None for candidate in ranking)
    [warning] = [record.getMessage() for record in caplog.records
                 if record.levelno == logging.WARNING]
    assert warning.startswith(f"{stale}: this calibration was made with model 000000000000")
    # a rule asks for a decision that this calibration cannot give
    for rule in ({"prior": 0.01}, {"operating_point": "eer"}, {"threshold": 0.3}):
        with pytest.raises(ModelMismatchError, match=r"pass --force \(force=True\)"):
            model.identify(alice, gallery=gallery, **rule)
    # identify's force covers the calibration as it does the gallery (and --force)
    forced = model.identify(alice, gallery=gallery, operating_point="eer", force=True)
    assert forced[0].verification.calibrated and forced[0].verification.decision
    assert model.identify(alice, gallery=gallery, force=True)[0].verification.calibrated
    # ... for that call only: the model itself still refuses the file
    with pytest.raises(ModelMismatchError):
        model.verify(alice, alice)
    # verify and decide take the same per-call force
    assert model.verify(alice, alice, force=True).calibrated
    assert model.decide(0.9, operating_point="eer", force=True).decision
    with pytest.raises(ModelMismatchError):
        model.decide(0.9)

    # the command likewise (another copy: the warning above is given once per process)
    command_copy = copy_of_model(copied, tmp_path, "command_model")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        status, out, err = identify_cli(capsys, command_copy, gallery, alice)
    assert status == 0 and [name for name, _ in ranked_lines(out)] == ["alice", "bob"]
    assert any(record.getMessage().startswith(f"{command_copy}/calibration.json: this "
                                              f"calibration was made with model 000000000000")
               for record in caplog.records)
    # not "give --threshold": with this file that is an error too
    assert summary_of(err) == (f"{command_copy}/calibration.json does not fit {command_copy}, "
                               f"so no decision is made (fit it again with 'wespeaker-py "
                               f"calibrate', or pass --force to use it anyway)")
    status, _, err = identify_cli(capsys, command_copy, gallery, alice, "--prior", "0.01")
    assert status == 2 and "--force" in err
    status, out, err = identify_cli(capsys, command_copy, gallery, alice, "--prior", "0.01",
                                    "--force")
    assert status == 0 and summary_of(err).startswith("1 enrolled speaker(s) decided the same")
