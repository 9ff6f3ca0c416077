"""inference.extract_set: a set's embeddings and its side files, without the command line."""
import json
import os

import kaldiio
import numpy as np
import yaml

from inference_helpers import make_experiment, write_wav
from wespeaker_py.inference.extract_set import extract_set, side_files

LENGTHS = [16000, 12000, 9600, 20000]


def write_corpus(root):
    """A raw.list of 4 utterances of 2 speakers and its spk2utt; return (list, spk2utt)."""
    lines, speakers = [], {}
    for index, num_samples in enumerate(LENGTHS):
        key = f"spk{index % 2}-utt{index}"
        wav = os.path.join(root, key + ".wav")
        write_wav(wav, num_samples, seed=index)
        lines.append(json.dumps({"key": key, "wav": wav, "spk": f"spk{index % 2}"}))
        speakers.setdefault(f"spk{index % 2}", []).append(key)
    list_path, spk2utt = os.path.join(root, "raw.list"), os.path.join(root, "spk2utt")
    with open(list_path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(spk2utt, "w") as handle:
        handle.writelines(f"{spk} {' '.join(keys)}\n" for spk, keys in speakers.items())
    return list_path, spk2utt


def test_extract_set_writes_the_side_files_beside_an_ark_of_any_name(tmp_path):
    config, checkpoint, _ = make_experiment(str(tmp_path / "exp"))
    data_list, spk2utt = write_corpus(str(tmp_path))
    set_dir = tmp_path / "embeddings" / "vox"
    set_dir.mkdir(parents=True)
    (set_dir / "mean_vec.npy").write_bytes(b"an earlier run's")
    ark = str(set_dir / "part.ark")
    summary = extract_set(config, checkpoint, "raw", data_list, ark, device="cpu",
                          spk2utt=spk2utt, mean_vec=True)
    assert summary.extracted == len(LENGTHS)
    assert sorted(os.listdir(set_dir)) == ["mean_vec.npy", "part.ark", "part.scp",
                                           "spk_xvector.ark", "spk_xvector.scp"]
    embeddings = dict(kaldiio.load_ark(ark))
    means = dict(kaldiio.load_scp(str(set_dir / "spk_xvector.scp")))
    np.testing.assert_allclose(means["spk0"], np.mean([embeddings["spk0-utt0"],
                                                       embeddings["spk0-utt2"]], 0), atol=1e-6)
    np.testing.assert_allclose(np.load(set_dir / "mean_vec.npy"),
                               np.mean(list(embeddings.values()), 0), atol=1e-6)
    assert list(side_files(ark, True, True).values()) == [
        str(set_dir / "spk_xvector.ark"), str(set_dir / "spk_xvector.scp"),
        str(set_dir / "mean_vec.npy")]


def test_random_chunk_takes_its_length_from_the_config_unless_given(tmp_path):
    config, checkpoint, _ = make_experiment(str(tmp_path / "exp"))
    data_list, _ = write_corpus(str(tmp_path))
    num_frms = yaml.safe_load(open(config))["dataset_args"]["num_frms"]

    def extract(name, **chunk):
        ark = str(tmp_path / name / "xvector.ark")
        extract_set(config, checkpoint, "raw", data_list, ark, device="cpu",
                    random_chunk=True, **chunk)
        return dict(kaldiio.load_ark(ark))

    by_config, given = extract("by_config"), extract("given", num_frms=num_frms)
    for key, vector in by_config.items():
        np.testing.assert_array_equal(vector, given[key])
    other = extract("other", num_frms=num_frms // 2)
    assert any(not np.array_equal(vector, other[key]) for key, vector in by_config.items())
