"""One-shot GPU acceptance: everything a GPU session must know, in one command.

    bash bench/gpu_check.sh [--output bench/results_gpu.md] [--budget 480] [--dry-run]

On a machine with a CUDA GPU it runs, within ``--budget`` seconds (8 minutes by
default), and records into ``--output``:

  * the ``gpu``-marked tests;
  * training samples/s, peak memory and the fraction of step time spent
    waiting for data, for ResNet34 and ECAPA_TDNN_GLOB_c512 at batch 128 in
    fp32 and bf16 (ResNet34 also bf16 + channels_last; both with torch.compile
    last, if time remains), on generated 8 s wav files read through the real
    Dataset and DataLoader with the VoxCeleb config (speed perturbation,
    noise/reverb at aug_prob 0.6), next to the same step on in-memory batches;
  * fbank, W2V-BERT's and Whisper's input features on CUDA vs the CPU;
  * extraction utterances/s (the library's extract_embeddings on 8 s files);
  * AS-Norm of a Vox1-E-sized problem on the GPU;
  * a two-process DDP training run when two GPUs are present;
  * samples/s and peak memory of W2V-BERT 2.0's LoRA and joint training steps
    (random weights, bf16), from ``bench/bench_w2vbert.py``.

Each step runs in its own process (its own session, killed with its workers
when it overruns its timeout) and the results file is rewritten atomically
after every step, so a crash, a hang or a kill of this driver keeps what was
measured. Without a CUDA GPU the same steps run at tiny sizes on the CPU (a
dry run, which CI runs) and the script still exits 0.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import glob
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"ResNet34": "resnet34", "ECAPA_TDNN_GLOB_c512": "ecapa_tdnn_c512"}
VOX2_DEV_SPEAKERS = 5994


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of a full (GPU) run or a dry run."""

    batch: int
    warmup: int
    timed: int
    num_frms: int
    speakers: int
    wav_files: int
    wav_seconds: float
    workers: int
    extract_utts: int
    asnorm: Dict[str, int]
    fbank_batch: int
    model_args: Dict[str, Dict[str, int]]

    @classmethod
    def full(cls) -> "Sizes":
        return cls(batch=128, warmup=8, timed=24, num_frms=200, speakers=VOX2_DEV_SPEAKERS,
                   wav_files=96, wav_seconds=8.0, workers=max(1, (os.cpu_count() or 2) - 2),
                   extract_utts=256, fbank_batch=128, model_args={},
                   asnorm=dict(trials=579818, utts=145160, cohort=5994, top_n=300, dim=256))

    @classmethod
    def dry(cls) -> "Sizes":
        return cls(batch=2, warmup=1, timed=1, num_frms=20, speakers=4, wav_files=4,
                   wav_seconds=2.0, workers=1, extract_utts=2, fbank_batch=2,
                   model_args={"ResNet34": {"m_channels": 4}},
                   asnorm=dict(trials=2000, utts=400, cohort=100, top_n=10, dim=32))


# -- steps (each runs in a child process and returns markdown) ------------------

def _device():
    import torch
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_environment(work: str, sizes: Sizes) -> str:
    import torch
    lines = [f"- torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"cuDNN {torch.backends.cudnn.version()}",
             f"- {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}"]
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        lines.append(f"- GPU {index}: {props.name}, {props.total_memory / 2**30:.0f} GiB, "
                     f"compute capability {props.major}.{props.minor}, "
                     f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
    if not torch.cuda.device_count():
        lines.append("- no CUDA GPU: dry run on the CPU at tiny sizes")
    return "\n".join(lines)


def step_data(work: str, sizes: Sizes) -> str:
    """Generate 8 s wav files, a raw list whose utt2spk names the VoxCeleb2 speaker count,
    and synthetic MUSAN/RIR lists."""
    import numpy as np
    import soundfile as sf

    from wespeaker_py.dataset.synthetic_aug import coloured_noise, make_synthetic_aug_data
    rng = np.random.default_rng(0)
    wav_dir = os.path.join(work, "wav")
    os.makedirs(wav_dir, exist_ok=True)
    wavs = []
    length = int(16000 * sizes.wav_seconds)
    for index in range(sizes.wav_files):
        path = os.path.join(wav_dir, f"utt{index:04d}.wav")
        audio = 0.3 * coloured_noise(length, 1.0, rng) * np.hanning(length) ** 0.25
        sf.write(path, audio, 16000, subtype="PCM_16")
        wavs.append(path)
    # every speaker gets a line (the head has VoxCeleb2's size); the lines share the files
    utts = max(sizes.speakers, sizes.wav_files)
    with open(os.path.join(work, "raw.list"), "w") as raw, \
            open(os.path.join(work, "utt2spk"), "w") as utt2spk:
        for index in range(utts):
            spk = f"spk{index % sizes.speakers:05d}"
            key = f"{spk}-{index:06d}"
            raw.write(json.dumps({"key": key, "wav": wavs[index % len(wavs)], "spk": spk}) + "\n")
            utt2spk.write(f"{key} {spk}\n")
    with open(os.path.join(work, "extract.list"), "w") as raw:
        for index in range(sizes.extract_utts):
            raw.write(json.dumps({"key": f"test{index:05d}", "wav": wavs[index % len(wavs)]})
                      + "\n")
    aug = make_synthetic_aug_data(os.path.join(work, "aug"), wavs[:3], duration=sizes.wav_seconds)
    with open(os.path.join(work, "aug.json"), "w") as handle:
        json.dump(aug, handle)
    return (f"{sizes.wav_files} generated {sizes.wav_seconds:g} s 16 kHz PCM wav files; "
            f"{utts} list lines of {sizes.speakers} speakers; synthetic MUSAN/RIR lists")


def _training_config(work: str, sizes: Sizes, model: str, bf16: bool, channels_last: bool,
                     compile_model: bool):
    from wespeaker_py.config import load_config
    aug = json.load(open(os.path.join(work, "aug.json")))
    overrides = [("enable_amp", str(bf16)), ("amp_dtype", "bfloat16"),
                 ("channels_last", str(channels_last)), ("compile", str(compile_model)),
                 ("dataloader_args.batch_size", str(sizes.batch)),
                 ("dataloader_args.num_workers", str(sizes.workers)),
                 ("dataloader_args.pin_memory", "True"),
                 ("dataset_args.num_frms", str(sizes.num_frms)),
                 ("dataset_args.shuffle_args.shuffle_size", str(min(2500, 8 * sizes.batch))),
                 ("log_batch_interval", str(10 ** 6)),
                 ("exp_dir", os.path.join(work, "exp")), ("data_type", "raw"),
                 ("train_data", os.path.join(work, "raw.list")),
                 ("train_label", os.path.join(work, "utt2spk")),
                 ("noise_data", aug["musan"]), ("reverb_data", aug["rirs"])]
    overrides += [(f"model_args.{key}", str(value))
                  for key, value in sizes.model_args.get(model, {}).items()]
    return load_config(os.path.join(REPO, "conf", MODELS[model] + ".yaml"), overrides)


def _train_rates(work: str, sizes: Sizes, model: str, bf16: bool = False,
                 channels_last: bool = False, compile_model: bool = False) -> str:
    """Samples/s through the real DataLoader and on in-memory batches; data wait; memory."""
    import resource

    import torch

    from wespeaker_py.train import builder
    from wespeaker_py.train.distributed import DistContext
    from wespeaker_py.train.loop import train_epoch
    from wespeaker_py.train.plan import resolve
    from wespeaker_py.train.trainer import Trainer

    device = _device()
    config = _training_config(work, sizes, model, bf16, channels_last, compile_model)
    world = DistContext(rank=0, local_rank=0, world_size=1, device=device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    steps = sizes.warmup + sizes.timed
    plan = dataclasses.replace(resolve(config, world), epoch_iter=steps, seed=1)
    trainer = Trainer(plan)
    dataset = builder.build_dataset(plan)
    loader = builder.build_loader(plan, dataset)

    marks: Dict[str, float] = {"wait": 0.0}

    def timed_batches(source):
        iterator = iter(source)
        for index in range(steps):
            if index == sizes.warmup:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                _sync(device)
                marks["start"], marks["wait"] = time.perf_counter(), 0.0
            start = time.perf_counter()
            batch = next(iterator)
            marks["wait"] += time.perf_counter() - start
            yield batch

    dataset.set_epoch(1)
    train_epoch(trainer, 1, timed_batches(loader))
    _sync(device)
    real_seconds = time.perf_counter() - marks["start"]
    real_wait = marks["wait"]
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    in_process = dataclasses.replace(plan.dataloader_args, num_workers=0)
    first = next(iter(builder.build_loader(dataclasses.replace(plan, dataloader_args=in_process),
                                           dataset)))
    if device.type == "cuda":
        first = {k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in first.items()}
    train_epoch(trainer, 2, timed_batches([first] * steps))
    _sync(device)
    memory_seconds = time.perf_counter() - marks["start"]
    samples = sizes.batch * sizes.timed
    parts = ["bf16" if bf16 else "fp32"]
    parts += ["channels_last"] if channels_last else []
    parts += ["compile"] if compile_model else []
    variant = " + ".join(parts)
    memory_label = "peak GPU memory (GiB)" if device.type == "cuda" else "peak RSS (GiB)"
    return (f"| {model} | {variant} | {sizes.batch} | {samples / real_seconds:.1f} | "
            f"{100.0 * real_wait / real_seconds:.0f}% | {samples / memory_seconds:.1f} | "
            f"{peak:.2f} {memory_label} | {sizes.workers} |")


TRAIN_HEADER = ("| model | variant | batch | samples/s (DataLoader) | time waiting for data | "
                "samples/s (in-memory batches) | memory | workers |\n"
                "|---|---|---|---|---|---|---|---|")


def _train_step(model: str, bf16: bool, channels_last: bool = False,
                compile_model: bool = False) -> Callable[[str, Sizes], str]:
    def run(work: str, sizes: Sizes) -> str:
        return TRAIN_HEADER + "\n" + _train_rates(work, sizes, model, bf16, channels_last,
                                                  compile_model)
    return run


def step_gpu_tests(work: str, sizes: Sizes) -> str:
    files = sorted(path for path in glob.glob(os.path.join(REPO, "tests", "test_*.py"))
                   if "mark.gpu" in open(path).read())
    names = ", ".join(os.path.relpath(path, REPO) for path in files)
    if _device().type != "cuda":
        return f"not run without CUDA; the gpu-marked tests are in {names}"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu",
                           "-p", "no:cacheprovider"] + files,
                          cwd=REPO, capture_output=True, text=True)
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
    return f"`pytest -m gpu` on {names}: exit {done.returncode}\n\n```\n{tail}\n```"


def _best_of_five(run, device) -> float:
    """Seconds of the fastest of five calls of ``run`` on ``device``, after one warm-up."""
    run()
    _sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def step_fbank(work: str, sizes: Sizes) -> str:
    import torch

    from wespeaker_py.frontend import fbank
    device = _device()
    waves = (torch.randn(sizes.fbank_batch, 32240) * 3000).clamp(-32768, 32767)
    rows = []
    for target in ([torch.device("cpu"), device] if device.type == "cuda" else [device]):
        data = waves.to(target)
        best = _best_of_five(lambda: fbank(data, 16000, 80, dither=1.0), target)
        rows.append(f"| {target.type} ({torch.get_num_threads()} threads) | "
                    f"{best * 1e3:.2f} | {sizes.fbank_batch * 200 / best:,.0f} |")
    return ("batch of %d x 2.015 s, 80 mels, dither 1.0, best of 5\n\n"
            "| device | ms per batch | frames/s |\n|---|---|---|\n" % sizes.fbank_batch
            + "\n".join(rows))


def step_w2vbert_features(work: str, sizes: Sizes) -> str:
    import torch

    from wespeaker_py.frontend.w2vbert_features import W2VBertFeatures
    device = _device()
    waves = (torch.randn(sizes.fbank_batch, 48240) * 3000).clamp(-32768, 32767)
    reference = W2VBertFeatures()(waves)
    rows = []
    for target in ([torch.device("cpu"), device] if device.type == "cuda" else [device]):
        data = waves.to(target)
        for dtype in (torch.float64, torch.float32):
            features = W2VBertFeatures(compute_dtype=dtype).to(target)
            out = features(data)
            best = _best_of_five(lambda: features(data), target)
            difference = (out.cpu() - reference).abs().max().item()
            rows.append(f"| {target.type} | {str(dtype).split('.')[-1]} | {best * 1e3:.2f} | "
                        f"{difference:.1e} |")
    return ("W2V-BERT input features, batch of %d x 3.015 s, best of 5; difference from the "
            "CPU float64 result\n\n| device | compute | ms per batch | max abs difference |\n"
            "|---|---|---|---|\n" % sizes.fbank_batch + "\n".join(rows))


def step_whisper_features(work: str, sizes: Sizes) -> str:
    import torch

    from wespeaker_py.frontend.whisper_features import WhisperLogMel
    device = _device()
    waves = (torch.randn(sizes.fbank_batch, 80000) * 3000).clamp(-32768, 32767)
    reference = WhisperLogMel()(waves.double())
    rows = []
    for target in ([torch.device("cpu"), device] if device.type == "cuda" else [device]):
        features = WhisperLogMel().to(target)
        data = waves.to(target)
        out = features(data)
        best = _best_of_five(lambda: features(data), target)
        difference = (out.double().cpu() - reference).abs().max().item()
        rows.append(f"| {target.type} | {best * 1e3:.2f} | {difference:.1e} |")
    return ("Whisper log-mel (80 bands), batch of %d x 5 s chunks (Whisper-PMFA's), float32, "
            "best of 5; difference from the CPU float64 result\n\n| device | ms per batch | "
            "max abs difference |\n|---|---|---|\n" % sizes.fbank_batch + "\n".join(rows))


def step_w2vbert_training(work: str, sizes: Sizes) -> str:
    from bench_w2vbert import training_rates, training_table

    device = _device()
    if sizes.speakers == VOX2_DEV_SPEAKERS:  # a full run: W2V-BERT 2.0's size
        from transformers import Wav2Vec2BertConfig
        config, batch, seconds, what = Wav2Vec2BertConfig(), 32, 3.015, "W2V-BERT-2.0-sized"
    else:
        from wespeaker_py.frontend.w2vbert_random import tiny_w2vbert_config
        config, batch, seconds, what = tiny_w2vbert_config(), 2, 1.0, "tiny"
    rows = training_rates(config, batch, seconds, sizes.timed, sizes.warmup, device,
                          num_class=3 * sizes.speakers)
    return (f"random {what} W2V-BERT + W2VBert_Adapter_MFA + ArcMargin on {device.type}, batch "
            f"{batch} x {seconds:g} s, AdamW, bf16 autocast on CUDA, {sizes.timed} timed "
            f"steps\n\n" + training_table(rows))


def step_extraction(work: str, sizes: Sizes) -> str:
    import torch

    from wespeaker_py.inference.extraction import ExtractionOptions, extract_embeddings
    from wespeaker_py.train import builder
    from wespeaker_py.train.distributed import DistContext
    from wespeaker_py.train.plan import resolve
    device = _device()
    config = _training_config(work, sizes, "ResNet34", False, False, False)
    cpu = DistContext(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    model = builder.build_model(resolve(config, cpu))
    model_path = os.path.join(work, "resnet34_random.pt")
    torch.save(model.state_dict(), model_path)
    rows = []
    for batch_size in (1, 16):
        ark = os.path.join(work, f"xvector_b{batch_size}.ark")
        start = time.perf_counter()
        options = ExtractionOptions(batch_size=batch_size, num_workers=min(4, sizes.workers))
        summary = extract_embeddings(config, model_path, "raw",
                                     os.path.join(work, "extract.list"), ark,
                                     options=options, device=device.type)
        seconds = time.perf_counter() - start
        rows.append(f"| {batch_size} | {summary.extracted} | {seconds:.1f} | "
                    f"{summary.extracted / seconds:.1f} |")
    return (f"ResNet34 (random weights), {sizes.wav_seconds:g} s utterances, "
            f"{min(4, sizes.workers)} workers, on {device.type}, model loading included\n\n"
            "| batch size | utterances | seconds | utterances/s |\n|---|---|---|---|\n"
            + "\n".join(rows))


def step_asnorm(work: str, sizes: Sizes) -> str:
    import numpy as np

    from wespeaker_py.scoring.cosine import cosine_score_trials
    from wespeaker_py.io.ark import EmbeddingTable
    from wespeaker_py.scoring.norm import normalize_trial_scores
    from wespeaker_py.scoring.trials import TrialList
    device = _device()
    size = sizes.asnorm
    rng = np.random.default_rng(0)
    keys = [f"u{i:06d}" for i in range(size["utts"])]
    matrix = rng.standard_normal((size["utts"], size["dim"]), dtype=np.float32)
    cohort = rng.standard_normal((size["cohort"], size["dim"]), dtype=np.float32)
    enroll = rng.integers(0, size["utts"], size=size["trials"]).astype(np.int32)
    test = rng.integers(0, size["utts"], size=size["trials"]).astype(np.int32)
    first = np.zeros(size["utts"], dtype=np.int64)
    trials = TrialList(path="generated", enroll_keys=keys, test_keys=keys,
                       enroll_first_line=first, test_first_line=first, enroll=enroll, test=test,
                       labels=(rng.random(size["trials"]) < 0.5).astype(np.int8))
    table = EmbeddingTable(keys=keys, matrix=matrix, source="generated")
    mean_vec = matrix.mean(axis=0)
    rows = []
    for target in [device.type]:  # the CPU's figure is in bench/results_scoring.md
        start = time.perf_counter()
        scores = cosine_score_trials(table, trials, mean_vec, target)
        cosine_seconds = time.perf_counter() - start
        start = time.perf_counter()
        normalize_trial_scores(scores, enroll.astype(np.int64), test.astype(np.int64), matrix,
                               cohort, "asnorm", size["top_n"], mean_vec, target)
        rows.append(f"| {target} | {cosine_seconds:.2f} | {time.perf_counter() - start:.2f} |")
    return (f"{size['trials']} trials over {size['utts']} {size['dim']}-d embeddings, cohort "
            f"{size['cohort']}, top {size['top_n']}\n\n"
            "| device | cosine (s) | AS-Norm (s) |\n|---|---|---|\n" + "\n".join(rows))


def step_ddp(work: str, sizes: Sizes) -> str:
    import torch
    if torch.cuda.device_count() < 2:
        return f"not run: {torch.cuda.device_count()} CUDA GPU(s), two are needed"
    config = _training_config(work, sizes, "ResNet34", True, False, False)
    steps = sizes.warmup + sizes.timed
    aug = json.load(open(os.path.join(work, "aug.json")))
    exp_dir = os.path.join(work, "ddp")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "wespeaker_py.bin.train",
               "--config", os.path.join(REPO, "conf", "resnet34.yaml"), "--exp_dir", exp_dir,
               "--gpus", "[0,1]", "--data_type", "raw", "--train_data", config.train_data,
               "--train_label", config.train_label, "--noise_data", aug["musan"],
               "--reverb_data", aug["rirs"], "--num_epochs", "1", "--enable_amp", "True",
               "--dataloader_args.batch_size", str(sizes.batch),
               "--dataloader_args.num_workers", str(max(1, sizes.workers // 2)),
               "--dataset_args.sample_num_per_epoch", str(2 * sizes.batch * steps),
               "--log_batch_interval", str(max(1, steps // 4))]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = open(os.path.join(exp_dir, "train.log")).read() if os.path.exists(
        os.path.join(exp_dir, "train.log")) else ""
    tail = "\n".join([line for line in log.splitlines() if "epoch" in line][-6:]
                     or (done.stderr or "").splitlines()[-15:])
    return (f"torchrun, 2 processes, ResNet34 bf16, batch {sizes.batch} per GPU, {steps} steps: "
            f"exit {done.returncode} after {seconds:.0f} s (start-up included)\n\n```\n{tail}\n```")


def _steps(dry: bool):
    """(name, function, timeout seconds), most important first."""
    steps = [("environment", step_environment, 60), ("data", step_data, 120),
             ("gpu tests", step_gpu_tests, 150),
             ("train ResNet34 fp32", _train_step("ResNet34", False), 120),
             ("train ResNet34 bf16", _train_step("ResNet34", True), 120),
             ("train ECAPA_TDNN_GLOB_c512 fp32", _train_step("ECAPA_TDNN_GLOB_c512", False), 120),
             ("train ECAPA_TDNN_GLOB_c512 bf16", _train_step("ECAPA_TDNN_GLOB_c512", True), 120)]
    if not dry:
        steps.append(("train ResNet34 bf16 + channels_last",
                      _train_step("ResNet34", True, channels_last=True), 120))
    steps += [("fbank", step_fbank, 60), ("W2V-BERT features", step_w2vbert_features, 60),
              ("Whisper features", step_whisper_features, 60),
              ("extraction", step_extraction, 120),
              ("AS-Norm", step_asnorm, 120), ("DDP", step_ddp, 180),
              ("train W2V-BERT LoRA and joint", step_w2vbert_training, 240)]
    if not dry:  # compile last: its first step can take minutes
        steps += [("train ResNet34 bf16 + channels_last + compile",
                   _train_step("ResNet34", True, channels_last=True, compile_model=True), 240),
                  ("train ECAPA_TDNN_GLOB_c512 bf16 + compile",
                   _train_step("ECAPA_TDNN_GLOB_c512", True, compile_model=True), 240)]
    return steps


# -- the driver -------------------------------------------------------------------

def _write_atomically(path: str, text: str) -> None:
    from wespeaker_py.utils.atomic_files import atomic_open
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _run_in_child(name: str, function, work: str, sizes: Sizes, timeout: float,
                  fork: bool, argv: List[str]) -> tuple:
    """Run one step in its own process session; return (status, markdown, seconds)."""
    result_path = os.path.join(work, "step.md")
    log_path = os.path.join(work, "step.log")
    for path in (result_path,):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    start = time.perf_counter()
    if fork:
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.setsid()
                log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                sys.stdout = sys.stderr = open(log, "w", buffering=1, closefd=False)
                _fresh_tqdm_lock()
                _write_atomically(result_path, function(work, sizes))
                code = 0
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
    else:
        with open(log_path, "w") as log:
            pid = subprocess.Popen(argv + ["--run-step", name], stdout=log, stderr=log,
                                   start_new_session=True, cwd=REPO).pid
    status = _wait(pid, timeout)
    seconds = time.perf_counter() - start
    if status == "ok" and os.path.exists(result_path):
        return status, open(result_path).read(), seconds
    tail = ""
    if os.path.exists(log_path):
        tail = "\n".join(open(log_path, errors="replace").read().strip().splitlines()[-20:])
    return status if status != "ok" else "failed", f"```\n{tail}\n```", seconds


def _fresh_tqdm_lock() -> None:
    """Give a forked step its own tqdm lock: the default one is a semaphore shared with
    the driver's other children, and a child killed while holding it would lock it."""
    import threading

    from tqdm import tqdm
    tqdm.set_lock(threading.RLock())


def _wait(pid: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ok" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"timed out after {timeout:.0f} s"
        time.sleep(0.05)


def _cuda_present() -> bool:
    """Whether a CUDA GPU is visible, asked without initialising CUDA in this process."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch
    return torch.cuda.is_available()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(REPO, "bench", "results_gpu.md"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    parser.add_argument("--work", help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU run even with a GPU")
    parser.add_argument("--isolation", choices=["fork", "process"],
                        help="how steps are isolated (default: fork for a dry run, a fresh "
                             "interpreter on a GPU, where CUDA does not survive a fork)")
    parser.add_argument("--workers", type=int,
                        help="DataLoader workers of the training steps (default: CPU cores - 2)")
    parser.add_argument("--only", nargs="+", metavar="STEP",
                        help="run only these steps (names as in the results table; "
                             "environment and data always run)")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, REPO)
    cuda = _cuda_present()
    dry = args.dry_run or not cuda
    sizes = Sizes.dry() if dry else Sizes.full()
    if args.workers is not None:
        if args.workers < 0:
            parser.error(f"--workers must be at least 0, got {args.workers}")
        sizes = dataclasses.replace(sizes, workers=args.workers)
    steps = _steps(dry)
    if args.only:
        known = [name for name, _, _ in steps]
        unknown = [name for name in args.only if name not in known]
        if unknown:
            parser.error(f"--only: no step named {', '.join(map(repr, unknown))}; the steps: "
                         f"{', '.join(known)}")
        steps = [step for step in steps if step[0] in ("environment", "data", *args.only)]
    if args.run_step:  # a child started by the driver
        function = dict((name, fn) for name, fn, _ in steps)[args.run_step]
        _write_atomically(os.path.join(args.work, "step.md"), function(args.work, sizes))
        return 0
    import tempfile
    work = args.work or tempfile.mkdtemp(prefix="wsp_gpu_check.")
    os.makedirs(work, exist_ok=True)
    child_argv = ([sys.executable, os.path.abspath(__file__), "--work", work, "--budget",
                   str(args.budget)] + (["--dry-run"] if args.dry_run else [])
                  + (["--workers", str(args.workers)] if args.workers is not None else []))
    # a dry run forks from this process (the library already imported: fast, as CI
    # needs); a GPU run starts fresh interpreters, since CUDA does not survive a fork
    fork = (args.isolation or ("fork" if dry else "process")) == "fork"
    if fork:
        import torch
        torch.set_num_threads(1)  # tiny sizes: more threads only spin
        import wespeaker_py.inference.extraction  # noqa: F401
        import wespeaker_py.scoring.norm  # noqa: F401
        import wespeaker_py.train.trainer  # noqa: F401,F811
    started = time.monotonic()
    # a copy of the tree without git (a lent GPU machine) names its commit in GPU_CHECK_COMMIT
    commit = os.environ.get("GPU_CHECK_COMMIT", "")
    if not commit:
        with contextlib.suppress(OSError):
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip()
    commit = commit or "unknown"
    options = ((" --dry-run" if args.dry_run else "")
               + (f" --workers {args.workers}" if args.workers is not None else "")
               + (" --only" + "".join(f" '{name}'" for name in args.only) if args.only else ""))
    header = [f"# GPU check ({'dry run on the CPU, tiny sizes' if dry else 'CUDA'})", "",
              f"`bash bench/gpu_check.sh{options}` on "
              f"{platform.node()}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
              f"UTC, commit {commit}, budget {args.budget:.0f} s.", ""]
    if not cuda:
        print("no CUDA GPU: running the dry run of every step at tiny sizes on the CPU")
        header += ["No CUDA GPU was found, so every step ran at tiny sizes on the CPU to "
                   "check that the script works; the figures below mean nothing.", ""]
    sections: List[str] = []
    summary: List[str] = []

    def publish(final: bool) -> None:
        elapsed = time.monotonic() - started
        state = "finished" if final else "in progress"
        text = "\n".join(header + [f"Status: {state} after {elapsed:.0f} s.", "",
                                   "| step | status | seconds |", "|---|---|---|"]
                         + summary + [""] + sections) + "\n"
        _write_atomically(args.output, text)

    publish(False)
    for name, function, timeout in steps:
        remaining = args.budget - (time.monotonic() - started)
        if remaining < 10:
            summary.append(f"| {name} | not run: out of time budget | 0 |")
            continue
        status, text, seconds = _run_in_child(name, function, work, sizes,
                                              min(timeout, remaining), fork, child_argv)
        print(f"{name}: {status} ({seconds:.0f} s)", flush=True)
        summary.append(f"| {name} | {status} | {seconds:.0f} |")
        sections += [f"## {name}", "", text, ""]
        publish(False)
    publish(True)
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
