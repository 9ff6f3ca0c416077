"""PLDA scoring of files: one embedding file given for enrolment and test is read once."""
import shutil

import numpy as np

from wespeaker_py.io.ark import write_embeddings
from wespeaker_py.scoring import plda_files


def test_one_file_for_enrolment_and_test_is_read_once_and_scores_the_same(tmp_path,
                                                                          monkeypatch):
    rng = np.random.default_rng(6)
    speakers = rng.standard_normal((12, 6))
    keys = [f"s{i // 5:02d}-u{i}" for i in range(60)]
    matrix = (speakers[np.arange(60) // 5] + 0.3 * rng.standard_normal((60, 6))
              ).astype(np.float32)
    scp = write_embeddings(str(tmp_path / "xvector.ark"), keys, matrix)
    (tmp_path / "utt2spk").write_text("".join(f"{k} {k[:3]}\n" for k in keys))
    (tmp_path / "utt2self").write_text("".join(f"{k} {k}\n" for k in keys))
    (tmp_path / "trials").write_text("".join(
        f"{keys[a]} {keys[b]} {'target' if a // 5 == b // 5 else 'nontarget'}\n"
        for a, b in rng.integers(0, 60, (200, 2))))
    model = str(tmp_path / "plda.pt")
    plda_files.train_plda_files(scp, str(tmp_path / "utt2spk"), model, num_iters=2)
    shutil.copy(scp, tmp_path / "copy.scp")

    reads = []
    load = plda_files.load_embeddings

    def counting_load(path, *args, **kwargs):
        reads.append(path)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(plda_files, "load_embeddings", counting_load)
    monkeypatch.chdir(tmp_path)
    outputs = {}
    for name, test_scp in (("same", scp), ("same, relative", "./xvector.scp"),
                           ("copy", str(tmp_path / "copy.scp"))):
        reads.clear()
        outputs[name] = str(tmp_path / f"{name}.score")
        plda_files.eval_plda_files(model, scp, str(tmp_path / "utt2self"), test_scp,
                                   str(tmp_path / "trials"), outputs[name])
        assert len(reads) == (2 if name == "copy" else 1), name
    texts = {name: open(path).read() for name, path in outputs.items()}
    assert len(texts["copy"].splitlines()) == 200
    assert texts["same"] == texts["copy"] == texts["same, relative"]
