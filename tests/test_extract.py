"""Embedding extraction: ark/scp output, batching without padding, bad input, jobs and merging."""
import json
import os
import tarfile

import kaldiio
import numpy as np
import pytest
import torch
import yaml

from inference_helpers import (FEAT_DIM, TINY_XVEC_ARGS, make_experiment, make_raw_list_corpus,
                               read_int16_scale, write_wav)
from wespeaker_py.bin.extract import main as extract_main
from wespeaker_py.bin.extract import gpus_flag
from wespeaker_py.config import TfmelArgs
from wespeaker_py.frontend import FbankFeatures
from wespeaker_py.frontend.tfmel import TFMelFeatures
from wespeaker_py.config import load_model_config
from wespeaker_py.inference import (ExtractionOptions, embed_utterances, extract_embeddings,
                                    extract_embeddings_parallel, merge_embedding_arks,
                                    open_embedding_writer, split_data_list)
from wespeaker_py.audio.errors import AudioMissingError, AudioUnreadableError
from wespeaker_py.dataset import stats as reasons
from wespeaker_py.dataset.lists import TableEntry
from wespeaker_py.dataset.shards import make_shards
from wespeaker_py.runtime import (LengthBuckets, SpeakerEmbedder, TorchBackend, load_embedder,
                                  min_valid_frames)
from wespeaker_py.models import get_model
from wespeaker_py.io.ark import load_embeddings
from wespeaker_py.runtime.checkpoint import CheckpointMismatchError
from wespeaker_py.runtime.engine import fewest_samples
from wespeaker_py.errors import RunFailedError, WespeakerError
from wespeaker_py.utils.tables import DataFormatError

# Sample counts: 16000 and 16050 both give 98 frames, so three utterances share
# a length, two share 74 frames, the rest are alone.
GOOD_LENGTHS = [16000, 12000, 16000, 20000, 12000, 16050, 8000, 9600]
XVEC_MIN_FRAMES = 14 + 2  # 14 frames of TDNN context, then a std over >= 2 frames


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("exp"))
    config_path, checkpoint, network = make_experiment(root)
    return {"config_path": config_path, "config": load_model_config(config_path),
            "checkpoint": checkpoint, "network": network, "root": root}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    bad_dir = os.path.join(root, "bad")
    os.makedirs(bad_dir)
    corrupt = os.path.join(bad_dir, "corrupt.wav")
    with open(corrupt, "wb") as handle:
        handle.write(np.random.default_rng(0).bytes(3000))
    extra = [json.dumps({"key": "bad-missing", "wav": os.path.join(bad_dir, "nope.wav"),
                         "spk": "bad"}),
             json.dumps({"key": "bad-corrupt", "wav": corrupt, "spk": "bad"})]
    list_path, wavs = make_raw_list_corpus(root, GOOD_LENGTHS, extra)
    # shorter than one fbank window (dropped by the pipeline), and too short for XVEC
    short = {"bad-window": 300, "bad-model": 2000}
    with open(list_path, "a") as handle:
        for key, num_samples in short.items():
            path = os.path.join(bad_dir, key + ".wav")
            write_wav(path, num_samples, seed=99)
            handle.write(json.dumps({"key": key, "wav": path, "spk": "bad"}) + "\n")
    good_list = os.path.join(root, "good.list")
    with open(list_path) as source, open(good_list, "w") as target:
        target.writelines(line for line in source if '"bad' not in line)
    return {"list": list_path, "good_list": good_list, "wavs": wavs, "root": root}


def reference_embeddings(experiment, wavs):
    """Each utterance alone, through the front-end and the network built in the fixture."""
    frontend = FbankFeatures.from_dataset_args(experiment["config"].dataset_args).eval()
    with torch.no_grad():
        return {key: experiment["network"](frontend(read_int16_scale(path)[None]))[0].numpy()
                for key, path in wavs.items()}


def read_ark(ark_path):
    scp = ark_path[:-4] + ".scp"
    return {key: np.asarray(vector) for key, vector in kaldiio.load_scp(scp).items()}


def test_one_embedding_per_good_utterance_equal_to_extraction_alone(experiment, corpus,
                                                                    tmp_path):
    ark = str(tmp_path / "emb" / "xvector.ark")
    summary = extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                                 corpus["list"], ark,
                                 options=ExtractionOptions(batch_size=4, num_workers=0),
                                 device="cpu")
    embeddings = read_ark(ark)
    assert set(embeddings) == set(corpus["wavs"])
    assert summary.extracted == len(corpus["wavs"])
    reference = reference_embeddings(experiment, corpus["wavs"])
    for key, vector in embeddings.items():
        assert vector.shape == (TINY_XVEC_ARGS["embed_dim"],)
        np.testing.assert_allclose(vector, reference[key], atol=1e-4, rtol=0)
    # the scp names the final ark by its absolute path, and no temporary file is left
    with open(ark[:-4] + ".scp") as handle:
        assert all(line.split()[1].rsplit(":", 1)[0] == os.path.abspath(ark) for line in handle)
    assert sorted(os.listdir(os.path.dirname(ark))) == ["xvector.ark", "xvector.scp"]


def test_bad_and_too_short_files_are_skipped_and_counted(experiment, corpus, tmp_path):
    ark = str(tmp_path / "xvector.ark")
    summary = extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                                 corpus["list"], ark,
                                 options=ExtractionOptions(batch_size=2, num_workers=1),
                                 device="cpu")
    assert not any(key.startswith("bad") for key in read_ark(ark))
    # too short for the model: skipped by the extractor; missing, corrupt and
    # shorter than one window: dropped (and logged) by the input pipeline, whose
    # workers report why
    assert summary.skipped == {reasons.TOO_SHORT_FOR_MODEL: 1, AudioMissingError.reason: 1,
                               AudioUnreadableError.reason: 1, reasons.TOO_SHORT: 1}
    assert summary.num_skipped == 4


def test_a_shard_cut_off_at_a_header_is_reported_by_extraction(experiment, corpus, tmp_path):
    entries = [TableEntry(key, key.split("-")[0], path) for key, path in corpus["wavs"].items()]
    shard_list = str(tmp_path / "shard.list")
    _, second = make_shards(entries, str(tmp_path / "shards"), shard_list,
                            num_utts_per_shard=4)
    with tarfile.open(second) as tar:
        cut = tar.getmembers()[4].offset  # after the shard's first two utterances
    with open(second, "r+b") as handle:
        handle.truncate(cut)
    ark = str(tmp_path / "xvector.ark")
    summary = extract_embeddings(experiment["config"], experiment["checkpoint"], "shard",
                                 shard_list, ark,
                                 options=ExtractionOptions(batch_size=4, num_workers=0),
                                 device="cpu")
    assert sorted(read_ark(ark)) == sorted(entry.key for entry in entries[:6])
    assert summary.extracted == 6
    assert summary.skipped == {reasons.BAD_SHARD: 1}


def test_batches_hold_only_equal_lengths_and_match_one_by_one(experiment, corpus):
    embedder = load_embedder(experiment["config"], experiment["checkpoint"])
    backend = TorchBackend(embedder, torch.device("cpu"))
    assert backend.min_frames == XVEC_MIN_FRAMES  # found before the hook counts batches
    batch_shapes = []
    embedder.model.register_forward_hook(
        lambda module, inputs, output: batch_shapes.append(tuple(inputs[0].shape)))
    samples = [{"key": key, "wav": read_int16_scale(path)} for key, path in corpus["wavs"].items()]

    class Collect:
        def __init__(self):
            self.rows = {}

        def write(self, key, vector):
            self.rows[key] = vector

    collected = Collect()
    summary = embed_utterances(backend, samples, collected, batch_size=8)
    assert summary.extracted == len(samples)
    assert sorted(shape[0] for shape in batch_shapes) == [1, 1, 1, 2, 3]
    assert {shape[1] for shape in batch_shapes if shape[0] == 3} == {98}
    reference = reference_embeddings(experiment, corpus["wavs"])
    for key, vector in collected.rows.items():
        np.testing.assert_allclose(vector, reference[key], atol=1e-4, rtol=0)


class LogStdModel(torch.nn.Module):
    """Log of the per-dimension standard deviation over time: -inf for constant features."""

    def forward(self, feats):
        return feats.std(dim=1)[:, :4].log()


def test_a_non_finite_embedding_is_skipped_not_written(tmp_path):
    frontend = FbankFeatures(num_mel_bins=FEAT_DIM).eval()
    embedder = SpeakerEmbedder(frontend, LogStdModel())
    generator = torch.Generator().manual_seed(0)
    samples = [{"key": "speech", "wav": 3000 * torch.randn(8000, generator=generator)},
               {"key": "silence", "wav": torch.zeros(8000)}]
    ark = str(tmp_path / "xvector.ark")
    with open_embedding_writer(ark) as writer:
        summary = embed_utterances(TorchBackend(embedder, torch.device("cpu")), samples,
                                   writer, batch_size=2)
    assert summary.extracted == 1 and summary.skipped == {reasons.NON_FINITE_EMBEDDING: 1}
    embeddings = read_ark(ark)
    assert list(embeddings) == ["speech"] and np.isfinite(embeddings["speech"]).all()


def test_length_buckets_group_equal_lengths_and_respect_the_memory_budget():
    def feats(frames):
        return torch.zeros(frames, 4)  # 16 bytes a frame

    buckets = LengthBuckets(batch_size=2, max_buffer_bytes=10_000)
    assert buckets.add("a", feats(10)) == []
    assert buckets.add("b", feats(20)) == []
    ready = buckets.add("c", feats(10))
    assert [(keys, batch.shape) for keys, batch in ready] == [(["a", "c"], (2, 10, 4))]
    assert [keys for keys, _ in buckets.drain()] == [["b"]]

    tight = LengthBuckets(batch_size=8, max_buffer_bytes=16 * 70)
    assert tight.add("x", feats(30)) == []
    assert tight.add("y", feats(30)) == []
    spilled = tight.add("z", feats(15))  # 75 frames waiting > 70: the fullest bucket goes
    assert [keys for keys, _ in spilled] == [["x", "y"]]
    assert [keys for keys, _ in tight.drain()] == [["z"]]

    # equal lengths of different groups (rates the audio came at) never share a batch
    grouped = LengthBuckets(batch_size=2, max_buffer_bytes=10_000)
    assert grouped.add("wide", feats(10), group=0) == []
    assert grouped.add("narrow", feats(10), group=8000) == []
    assert [keys for keys, _ in grouped.add("wide2", feats(10), group=0)] == [["wide", "wide2"]]
    assert [keys for keys, _ in grouped.drain()] == [["narrow"]]


def test_min_valid_frames_finds_the_models_shortest_input():
    model = get_model("XVEC", **TINY_XVEC_ARGS).eval()
    assert min_valid_frames(model, FEAT_DIM, torch.device("cpu")) == XVEC_MIN_FRAMES


def test_bare_and_training_checkpoints_load_the_same(tmp_path):
    bare_config, bare_ckpt, _ = make_experiment(str(tmp_path / "bare"), bare=True, seed=3)
    dict_config, dict_ckpt, _ = make_experiment(str(tmp_path / "dict"), bare=False, seed=3)
    feats = torch.randn(2, 50, FEAT_DIM)
    with torch.no_grad():
        bare = load_embedder(load_model_config(bare_config), bare_ckpt)(feats)
        full = load_embedder(load_model_config(dict_config), dict_ckpt)(feats)
    torch.testing.assert_close(bare, full, rtol=0, atol=0)


def test_a_checkpoint_that_does_not_fit_is_an_error_naming_the_tensor(experiment, tmp_path):
    state = torch.load(experiment["checkpoint"], weights_only=False)["model"]
    missing = {key: value for key, value in state.items() if key != "seg_2.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(CheckpointMismatchError, match="seg_2.bias"):
        load_embedder(experiment["config"], str(tmp_path / "missing.pt"))
    stray_frontend = dict(state, **{"frontend.weight": torch.zeros(3)})
    torch.save(stray_frontend, tmp_path / "stray.pt")
    with pytest.raises(CheckpointMismatchError, match="weight"):
        load_embedder(experiment["config"], str(tmp_path / "stray.pt"))


@pytest.mark.parametrize("bad, named", [({"buffer_mb": -1}, "buffer_mb must be >= 0, got -1"),
                                        ({"max_fail_fraction": 1.5},
                                         r"max_fail_fraction must be a number in \[0, 1\], "
                                         r"got 1.5")])
def test_extraction_options_refuse_a_bad_value_naming_it(bad, named):
    with pytest.raises(ValueError, match=named):
        ExtractionOptions(**bad)


def test_extraction_options_spell_a_channel_policy_one_way():
    # a resumed extraction compares the policy with the first run's: "Mean" is "mean"
    assert ExtractionOptions(channel=" Mean").channel == ExtractionOptions(channel="mean").channel
    assert ExtractionOptions(channel="1").channel == 1
    with pytest.raises(ValueError, match="channel must be one of first, mean, loudest"):
        ExtractionOptions(channel="left")


def test_two_jobs_merged_equal_one_job(experiment, corpus, tmp_path):
    single_ark = str(tmp_path / "single" / "xvector.ark")
    split_ark = str(tmp_path / "split" / "xvector.ark")
    options = ExtractionOptions(batch_size=4, num_workers=0)
    single = extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                                corpus["list"], single_ark, options=options, device="cpu")
    split = extract_embeddings_parallel(experiment["config"], experiment["checkpoint"], "raw",
                                        corpus["list"], split_ark, num_jobs=2, gpus=[],
                                        options=options)
    assert split.extracted == single.extracted and split.skipped == single.skipped
    one, two = read_ark(single_ark), read_ark(split_ark)
    assert set(one) == set(two)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-5, rtol=0)
    assert sorted(os.listdir(os.path.dirname(split_ark))) == ["xvector.ark", "xvector.scp"]


def test_a_failing_job_fails_the_run_naming_the_cause_and_writes_no_output(experiment,
                                                                           tmp_path):
    (tmp_path / "b.wav").write_bytes(b"never read")
    data_list = tmp_path / "one.list"
    data_list.write_text(json.dumps({"key": "b", "wav": str(tmp_path / "b.wav")}) + "\n")
    ark = tmp_path / "out" / "xvector.ark"
    # a valid list of one line, one job (a malformed list fails before any job starts); the
    # job fails on a chunk of one frame, too short for the model
    with pytest.raises(RuntimeError, match=r"job 0 .*split_000.list.*ValueError.*num_frms"):
        extract_embeddings_parallel(experiment["config"], experiment["checkpoint"], "raw",
                                    str(data_list), str(ark), num_jobs=2, gpus=[],
                                    options=ExtractionOptions(num_workers=0, chunk_frames=1))
    # only the hidden work folder, kept for the next run of the same command
    assert os.listdir(tmp_path / "out") == [".extract_jobs.xvector.ark"]


def test_split_data_list_makes_contiguous_near_equal_parts(tmp_path):
    data_list = tmp_path / "list"
    data_list.write_text("".join(f"line{i}\n" for i in range(7)))
    parts = split_data_list(str(data_list), 3, str(tmp_path))
    contents = [open(part).read().split() for part in parts]
    assert contents == [["line0", "line1", "line2"], ["line3", "line4"], ["line5", "line6"]]
    assert len(split_data_list(str(data_list), 20, str(tmp_path))) == 7


def test_writer_round_trip_and_atomicity(tmp_path):
    ark = str(tmp_path / "out" / "xvector.ark")
    vectors = {f"utt{i}": np.random.default_rng(i).standard_normal(6).astype(np.float32)
               for i in range(5)}
    with open_embedding_writer(ark) as writer:
        for key, vector in vectors.items():
            writer.write(key, vector)
    loaded = read_ark(ark)
    assert list(loaded) == list(vectors)
    for key in vectors:
        np.testing.assert_array_equal(loaded[key], vectors[key])
    table = load_embeddings(ark[:-4] + ".scp")  # the scoring side reads it too
    np.testing.assert_array_equal(table.matrix[table.index["utt3"]], vectors["utt3"])

    before = {name: open(os.path.join(tmp_path, "out", name), "rb").read()
              for name in ("xvector.ark", "xvector.scp")}
    with pytest.raises(RuntimeError, match="interrupted"):
        with open_embedding_writer(ark) as writer:
            writer.write("other", np.zeros(6, dtype=np.float32))
            raise RuntimeError("interrupted")
    after = {name: open(os.path.join(tmp_path, "out", name), "rb").read()
             for name in ("xvector.ark", "xvector.scp")}
    assert after == before
    assert sorted(os.listdir(tmp_path / "out")) == ["xvector.ark", "xvector.scp"]
    with pytest.raises(ValueError, match="twice"):
        with open_embedding_writer(str(tmp_path / "dup.ark")) as writer:
            writer.write("same", np.zeros(2))
            writer.write("same", np.ones(2))


def test_merge_concatenates_parts_and_rejects_duplicates(tmp_path):
    parts = []
    for part in range(3):
        ark = str(tmp_path / f"part{part}.ark")
        with open_embedding_writer(ark) as writer:
            for index in range(part + 1):
                writer.write(f"p{part}-u{index}", np.full(4, part * 10 + index, np.float32))
        parts.append(ark)
    merged = str(tmp_path / "merged" / "xvector.ark")
    assert merge_embedding_arks(parts, merged) == 6
    loaded = read_ark(merged)
    assert len(loaded) == 6
    np.testing.assert_array_equal(loaded["p2-u1"], np.full(4, 21, np.float32))
    with pytest.raises(ValueError, match="p0-u0"):
        merge_embedding_arks([parts[0], parts[0]], str(tmp_path / "dup.ark"))
    # an scp pointing into another ark is refused (it would be copied wrongly)
    os.replace(parts[1][:-4] + ".scp", parts[2][:-4] + ".scp")
    with pytest.raises(DataFormatError, match="part1.ark"):
        merge_embedding_arks([parts[2]], str(tmp_path / "bad.ark"))


def test_cli_writes_embeddings_speaker_means_and_set_mean(experiment, corpus, tmp_path):
    spk2utt = tmp_path / "spk2utt"
    speakers = {}
    for key in corpus["wavs"]:
        speakers.setdefault(key.split("-")[0], []).append(key)
    spk2utt.write_text("".join(f"{spk} {' '.join(utts)}\n" for spk, utts in speakers.items()))
    ark = str(tmp_path / "embeddings" / "vox" / "xvector.ark")
    extract_main(["--config", experiment["config_path"], "--model_path",
                  experiment["checkpoint"], "--data_type", "raw",
                  "--data_list", corpus["good_list"], "--embed_ark", ark, "--batch-size", "3",
                  "--num-workers", "1", "--gpus", "[]", "--spk2utt", str(spk2utt),
                  "--mean_vec", "True"])
    embeddings = read_ark(ark)
    spk_means = read_ark(str(tmp_path / "embeddings" / "vox" / "spk_xvector.ark"))
    assert set(spk_means) == set(speakers)
    for spk, utts in speakers.items():
        np.testing.assert_allclose(spk_means[spk], np.mean([embeddings[u] for u in utts], 0),
                                   rtol=1e-6, atol=1e-6)
    mean_vec = np.load(tmp_path / "embeddings" / "vox" / "mean_vec.npy")
    np.testing.assert_allclose(mean_vec, np.mean(list(embeddings.values()), 0),
                               rtol=1e-6, atol=1e-6)


def test_speaker_means_leave_out_what_extraction_was_allowed_to_skip(experiment, corpus,
                                                                     tmp_path):
    """4 of the 12 utterances of corpus["list"] are skipped (under --max_fail_fraction 0.5);
    the speaker of only skipped utterances is left out of the cohort, not an error."""
    spk2utt = tmp_path / "spk2utt"
    speakers = {}
    for key in [json.loads(line)["key"] for line in open(corpus["list"])]:
        speakers.setdefault(key.split("-")[0], []).append(key)
    assert len(speakers["bad"]) == 4
    spk2utt.write_text("".join(f"{spk} {' '.join(utts)}\n" for spk, utts in speakers.items()))
    embed_dir = tmp_path / "embeddings"
    ark = str(embed_dir / "xvector.ark")

    def extract(*extra):
        extract_main(["--config", experiment["config_path"], "--model_path",
                      experiment["checkpoint"], "--data_type", "raw", "--data_list",
                      corpus["list"], "--embed_ark", ark, "--gpus", "[]", "--spk2utt",
                      str(spk2utt), "--mean_vec", "True", *extra])

    extract()
    assert set(read_ark(str(embed_dir / "spk_xvector.ark"))) == set(speakers) - {"bad"}
    # new embeddings whose means cannot be made do not stay beside the earlier ones' means
    spk2utt.write_text(spk2utt.read_text() + "ghost ghost-001\n")
    with pytest.raises(RunFailedError, match=r"5 of 13 utterances .* more than "
                                             r"--max_fail_fraction 0.35"):
        extract("--max_fail_fraction", "0.35")   # extraction skips 4 of 12
    assert sorted(os.listdir(embed_dir)) == ["xvector.ark", "xvector.scp"]


def test_bad_output_names_devices_and_keys_are_refused_before_any_work(experiment, corpus,
                                                                       tmp_path, capsys):
    def extract(*extra, ark=str(tmp_path / "out" / "xvector.ark")):
        with pytest.raises(SystemExit) as refused:
            extract_main(["--config", experiment["config_path"], "--model_path",
                          experiment["checkpoint"], "--data_type", "raw", "--data_list",
                          corpus["list"], "--embed_ark", ark, "--gpus", "[]", *extra])
        assert refused.value.code == 2
        return capsys.readouterr().err

    assert "--embed_ark: an embedding archive must end in '.ark'" in extract(
        ark=str(tmp_path / "out" / "xvector"))
    assert "--device sets the device of a single job" in extract("--nj", "2", "--device", "cpu")
    spaced = tmp_path / "spaced.list"
    lines = open(corpus["good_list"]).read().splitlines()
    entry = json.loads(lines[1])
    lines[1] = json.dumps(dict(entry, key="spk1 utt2"))
    spaced.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=f"{spaced}:2: key 'spk1 utt2' cannot be an "
                                              f"embedding's: it has whitespace"):
        extract_main(["--config", experiment["config_path"], "--model_path",
                      experiment["checkpoint"], "--data_type", "raw", "--data_list",
                      str(spaced), "--embed_ark", str(tmp_path / "out" / "xvector.ark")])
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []   # no work folder, no lock


def test_shard_members_whose_names_cannot_be_keys_are_skipped_and_counted(experiment, corpus,
                                                                          tmp_path):
    entries = [TableEntry(key, "spk", path) for key, path in list(corpus["wavs"].items())[:4]]
    entries[1] = TableEntry("a b", "spk", entries[1].wav)
    entries[3] = TableEntry(entries[0].key, "spk", entries[3].wav)   # a key given twice
    shards = make_shards(entries, str(tmp_path / "shards"), str(tmp_path / "shard.list"), 10)
    assert len(shards) == 1
    summary = extract_embeddings(experiment["config"], experiment["checkpoint"], "shard",
                                 str(tmp_path / "shard.list"), str(tmp_path / "x.ark"),
                                 device="cpu")
    assert summary.extracted == 2
    assert dict(summary.skipped) == {reasons.BAD_KEY: 1, reasons.REPEATED_KEY: 1}
    assert set(read_ark(str(tmp_path / "x.ark"))) == {entries[0].key, entries[2].key}


def test_cli_refuses_augmentation_and_parses_gpu_lists(experiment, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        extract_main(["--config", experiment["config_path"], "--model_path",
                      experiment["checkpoint"], "--data_list", corpus["list"],
                      "--embed_ark", str(tmp_path / "x.ark"), "--aug-prob", "0.5"])
    assert stop.value.code == 2
    assert "--aug_prob: augmenting utterances at extraction is not supported" in \
        capsys.readouterr().err
    assert gpus_flag("[0,1]") == [0, 1] and gpus_flag("0,1") == [0, 1] and gpus_flag("2") == [2]
    assert gpus_flag("[]") == [] and gpus_flag("-1") == [] and gpus_flag("") == []
    with pytest.raises(SystemExit) as stop:
        extract_main(["--config", experiment["config_path"], "--model_path",
                      experiment["checkpoint"], "--data_list", corpus["list"],
                      "--embed_ark", str(tmp_path / "x.ark"), "--gpus", "[0,zero]"])
    assert stop.value.code == 2
    assert "argument --gpus: --gpus must list device ids" in capsys.readouterr().err


def test_extraction_refuses_to_run_under_torchrun(experiment, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="--nj"):
        extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                           corpus["list"], str(tmp_path / "x.ark"), device="cpu")


def test_ssl_frontend_model_extracts_with_frozen_weights_from_the_pretrained_path(
        corpus, tmp_path):
    pytest.importorskip("transformers")
    from wespeaker_py.frontend.ssl import SSLFrontend
    from wespeaker_py.frontend.wavlm_random import tiny_wavlm_config, write_random_wavlm

    wavlm_dir = str(tmp_path / "wavlm")
    write_random_wavlm(wavlm_dir, tiny_wavlm_config(large_layout=True), seed=1)
    dataset_args = {"frontend": "s3prl", "resample_rate": 16000,
                    "s3prl_args": {"upstream_args": {"name": "wavlm_large",
                                                     "path_or_url": wavlm_dir},
                                   "multilayer_feature": True, "layer": -1, "frozen": True,
                                   "frame_shift": 20, "frame_length": 20}}
    frontend = SSLFrontend.from_dataset_args(dataset_args).eval()
    model_args = dict(TINY_XVEC_ARGS, feat_dim=frontend.output_dim)
    network = get_model("XVEC", **model_args).eval()
    layer_weights = torch.linspace(-1.0, 1.0, frontend.layer_weights.numel())
    # a frozen run's checkpoint: speaker model, head, layer weights, no WavLM weights
    state = dict(network.state_dict(), **{"frontend.layer_weights": layer_weights,
                                          "projection.weight": torch.randn(4, 8)})
    checkpoint = str(tmp_path / "ssl.pt")
    torch.save(state, checkpoint)
    config = {"model": "XVEC", "model_args": dict(model_args, feat_dim=-1),
              "dataset_args": dataset_args}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    wavs = dict(list(corpus["wavs"].items())[:3])
    data_list = tmp_path / "ssl.list"
    data_list.write_text("".join(json.dumps({"key": k, "wav": p, "spk": "s"}) + "\n"
                                 for k, p in wavs.items()))
    ark = str(tmp_path / "ssl" / "xvector.ark")
    summary = extract_embeddings(load_model_config(str(config_path)), checkpoint, "raw",
                                 str(data_list), ark,
                                 options=ExtractionOptions(batch_size=2, num_workers=0),
                                 device="cpu")
    assert summary.extracted == 3
    frontend.layer_weights.data.copy_(layer_weights)
    embeddings = read_ark(ark)
    with torch.no_grad():
        for key, path in wavs.items():
            expected = network(frontend(read_int16_scale(path)[None]))[0].numpy()
            np.testing.assert_allclose(embeddings[key], expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("frontend", [
    FbankFeatures(sample_rate=16000, frame_length=25, frame_shift=10),
    FbankFeatures(sample_rate=8000, frame_length=25, frame_shift=10),
    TFMelFeatures(TfmelArgs(), sample_rate=16000),
])
@pytest.mark.parametrize("frames", [1, 2, 17, 200])
def test_fewest_samples_is_the_exact_shortest_input_of_each_frontend(frontend, frames):
    samples = fewest_samples(frontend, frames)
    assert frontend.num_frames(samples) >= frames
    assert frontend.num_frames(samples - 1) < frames
    # the front-end really makes that many frames from that many samples
    with torch.inference_mode():
        made = frontend.eval()(torch.randn(1, samples) * 1000).shape[1]
    assert made == frontend.num_frames(samples)


def test_reader_workers_that_deliver_nothing_fail_the_run_naming_dev_shm(
        experiment, corpus, tmp_path, monkeypatch):
    import threading
    from wespeaker_py.inference import extraction

    def stalled(self):
        # as a worker whose waveform could not go through a full /dev/shm: alive, silent
        threading.Event().wait()
        yield {}

    monkeypatch.setattr(extraction, "READER_TIMEOUT_S", 1)
    monkeypatch.setattr(extraction.Dataset, "__iter__", stalled)
    ark = str(tmp_path / "xvector.ark")
    with pytest.raises(RunFailedError, match=r"/dev/shm has .*--num_workers 0"):
        extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                           corpus["good_list"], ark, options=ExtractionOptions(num_workers=1),
                           device="cpu")
    assert not os.path.exists(ark)


def _shm_warnings(caplog):
    return [record.getMessage() for record in caplog.records
            if record.levelname == "WARNING" and "/dev/shm has" in record.getMessage()]


def test_an_extraction_warns_once_at_its_start_when_dev_shm_is_small(
        experiment, corpus, tmp_path, monkeypatch, caplog):
    """Reader workers hand whole waveforms over through /dev/shm: one too small for the 4
    each keeps ready (sized as 30 s at the config's 16 kHz, 7.3 MB a worker) is said at
    the start, with the advice of the timeout's error, not only after its 600 s."""
    import collections
    import shutil
    from wespeaker_py.inference import extraction
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 0, 10 << 20))
    extraction.warn_if_shared_memory_short(experiment["config"], num_workers=1)
    assert not _shm_warnings(caplog)
    for workers, jobs in ((2, 1), (1, 2)):
        caplog.clear()
        extraction.warn_if_shared_memory_short(experiment["config"], workers, jobs)
        assert _shm_warnings(caplog) == [
            "/dev/shm has 10 MB free, less than the 15 MB that the 8 waveforms the reader "
            "workers keep ready may take (4 per worker, of up to 30 s): a worker that cannot "
            "put one there drops it, and the run stops after 600 s without one. "
            + extraction.SHARED_MEMORY_ADVICE]
    caplog.clear()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 20, 0, 1 << 20))
    for workers in (0, 1):
        extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                           corpus["good_list"], str(tmp_path / f"{workers}.ark"),
                           options=ExtractionOptions(num_workers=workers), device="cpu")
    assert len(_shm_warnings(caplog)) == 1   # not without workers
    assert "--num_workers 0, or give /dev/shm more room (docker run --shm-size 8g)" \
        in _shm_warnings(caplog)[0]


def test_utterances_of_a_lost_shard_count_as_skipped_when_the_list_size_is_known(
        experiment, corpus, tmp_path):
    entries = [TableEntry(key, key.split("-")[0], path) for key, path in corpus["wavs"].items()]
    shard_list = str(tmp_path / "shard.list")
    first, *_ = make_shards(entries, str(tmp_path / "shards"), shard_list,
                            num_utts_per_shard=3)
    os.remove(first)   # 3 of the 8 utterances
    ark = str(tmp_path / "xvector.ark")

    def extract(**options):
        return extract_embeddings(experiment["config"], experiment["checkpoint"], "shard",
                                  shard_list, ark,
                                  options=ExtractionOptions(num_workers=0, **options),
                                  device="cpu", expected_utterances=len(entries))

    # 3 of 8 lost: more than 35%, though the lost shard is 1 entry of 6 (a sixth) and 1 of
    # the list's 3 tar files (a third, let through by the check of the list's files)
    with pytest.raises(RunFailedError, match=r"5 done, 3 skipped"):
        extract(max_fail_fraction=0.35)
    summary = extract()
    assert summary.extracted == 5
    assert summary.skipped == {reasons.BAD_SHARD: 1, reasons.NOT_DELIVERED_FROM_SHARDS: 2}
    assert len(read_ark(ark)) == 5


def test_cli_refuses_an_expected_utterance_count_for_a_raw_list(
        experiment, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit):
        extract_main(["--config", experiment["config_path"], "--model_path",
                      experiment["checkpoint"], "--data_type", "raw", "--data_list",
                      corpus["good_list"], "--embed_ark", str(tmp_path / "xvector.ark"),
                      "--expected_utterances", "8"])
    assert "--expected_utterances is for a shard list" in capsys.readouterr().err


def test_workers_under_a_temporary_folder_too_long_for_their_socket_are_refused_first(
        experiment, corpus, tmp_path, use_temp_folder):
    deep = tmp_path / ("t" * 90)
    deep.mkdir()
    use_temp_folder(deep)
    ark = tmp_path / "out" / "xvector.ark"
    with pytest.raises(WespeakerError, match="too long for DataLoader workers"):
        extract_embeddings(experiment["config"], experiment["checkpoint"], "raw",
                           corpus["list"], str(ark),
                           options=ExtractionOptions(num_workers=1), device="cpu")
    assert not ark.exists()
