"""examples/cnceleb/v2/local/prepare_data.sh on a fake CN-Celeb release: archives, the
combined training set, the eval set and its two trial lists, skips and errors."""
import hashlib
import os
import shutil
import subprocess
import tarfile

import pytest
import soundfile as sf

from recipe_helpers import (CNCELEB_DIR, REPO, make_fake_noise_downloads, mtimes, read_table,
                            run_script, write_tone)

RATE = 16000
# training audio: key -> seconds (CN-Celeb1 dev speakers < id00800, CN-Celeb2 id1xxxx)
CN1_TRAIN = {"id00000/interview-01-001": 1.0, "id00000/interview-01-002": 2.0,
             "id00000/interview-01-003": 6.0, "id00000/singing-01-001": 1.5,
             "id00001/vlog-01-001": 3.0, "id00001/vlog-01-002": 2.5,
             "id00001/speech-01-001": 5.5}
CN2_TRAIN = {"id10000/movie-01-001": 0.8, "id10000/movie-01-002": 0.9,
             "id10000/movie-01-003": 0.7, "id10001/advertisement-01-001": 4.0,
             "id10001/advertisement-02-001": 1.5}
# eval speakers' files of CN-Celeb_flac/data (the enrollment utterances); one is a .wav
ENROLL_UTTS = {"id00800-enroll": ["id00800/singing-01-002.flac", "id00800/singing-01-003.flac"],
               "id00801-enroll": ["id00801/drama-01-001.wav"]}
TESTS = ["id00800-singing-01-001.flac", "id00801-drama-01-002.flac", "id00801-vlog-01-001.wav"]
COMBINED = {"id00000/interview-01-001-comb3.wav": 9.0, "id00001/vlog-01-001-comb2.wav": 5.5,
            "id10000/movie-01-001-comb3.wav": 2.4,
            "id10001/advertisement-01-001-comb2.wav": 5.5}
SINGLES = ["id00000/singing-01-001.wav", "id00001/speech-01-001.wav"]
ARCHIVES = ("musan.tar.gz", "rirs_noises.zip", "cn-celeb_v2.tar.gz", "cn-celeb2_v2.tar.gz")


def _tone(path, seconds, index):
    write_tone(str(path), seconds, RATE, 120 + 20 * index, seed=index)


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as out:
        out.writelines(line + "\n" for line in lines)


def _cnceleb1(root):
    """CN-Celeb_flac: data/, dev/dev.lst, eval/{enroll,test,lists}; names in lists end .wav."""
    for index, (key, seconds) in enumerate(CN1_TRAIN.items()):
        _tone(root / "data" / f"{key}.flac", seconds, index)
    _tone(root / "data" / "id00800" / "vlog-01-009.flac", 1.0, 30)   # an eval speaker's
    _write_lines(root / "dev" / "dev.lst", ["id00000", "id00001"])
    map_lines, lst_lines = [], []
    for index, (model, utts) in enumerate(ENROLL_UTTS.items()):
        for number, name in enumerate(utts):
            _tone(root / "data" / name, 1.0, 40 + 5 * index + number)
        _tone(root / "eval" / "enroll" / f"{model}.flac", 2.0, 50 + index)
        map_lines.append(" ".join([model] + [name.rsplit(".", 1)[0] + ".wav" for name in utts]))
        lst_lines.append(f"{model} enroll/{model}.wav")
    for index, name in enumerate(TESTS):
        _tone(root / "eval" / "test" / name, 1.0, 60 + index)
    trials = [f"{model} test/{name.rsplit('.', 1)[0]}.wav {int(name[:7] == model[:7])}"
              for model in ENROLL_UTTS for name in TESTS]
    _write_lines(root / "eval" / "lists" / "enroll.map", map_lines)
    _write_lines(root / "eval" / "lists" / "enroll.lst", lst_lines)
    _write_lines(root / "eval" / "lists" / "trials.lst", trials)


def _cnceleb2(root):
    for index, (key, seconds) in enumerate(CN2_TRAIN.items()):
        _tone(root / "data" / f"{key}.flac", seconds, 70 + index)
    _write_lines(root / "spk.lst", ["id10000", "id10001"])


def _tar(path, source, name):
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source, name)


def make_fake_cnceleb_downloads(tmp_path, download_dir):
    """The four archives of the recipe, marked verified."""
    tree = tmp_path / "release"
    _cnceleb1(tree / "CN-Celeb_flac")
    _cnceleb2(tree / "CN-Celeb2_flac")
    wav = tmp_path / "tone.wav"
    _tone(wav, 0.5, 99)
    make_fake_noise_downloads(str(download_dir), str(wav))
    _tar(download_dir / "cn-celeb_v2.tar.gz", tree / "CN-Celeb_flac", "CN-Celeb_flac")
    _tar(download_dir / "cn-celeb2_v2.tar.gz", tree / "CN-Celeb2_flac", "CN-Celeb2_flac")
    for name in ARCHIVES:
        (download_dir / f"{name}.md5_ok").touch()


def _prepare(data, *args, check=True, env=None):
    return run_script(CNCELEB_DIR, "local/prepare_data.sh", "--data", str(data), "--nj", "2",
                      *args, check=check, env=env)


def _prepared(tmp_path, *args, folder="data"):
    data = tmp_path / folder
    make_fake_cnceleb_downloads(tmp_path, data / "download_data")
    return data, _prepare(data, "--stage", "1", "--stop_stage", "4", *args)


def _scp(path):
    """A wav.scp as key -> path (the rest of the line: paths may hold spaces)."""
    return dict(line.split(" ", 1) for line in _lines(path))


def _lines(path):
    with open(path) as handle:
        return [line.rstrip("\n") for line in handle]


@pytest.mark.parametrize("folder", ["data", "da ta"])
def test_prepare_data_writes_wespeakers_lists_with_combined_training_audio(tmp_path, folder):
    data, result = _prepared(tmp_path, folder=folder)
    train = data / "cnceleb_train"
    wav_scp = _scp(train / "wav.scp")
    assert sorted(wav_scp) == sorted(list(COMBINED) + SINGLES)
    assert read_table(train / "spk2utt") == {
        "id00000": ["id00000/interview-01-001-comb3.wav", "id00000/singing-01-001.wav"],
        "id00001": ["id00001/speech-01-001.wav", "id00001/vlog-01-001-comb2.wav"],
        "id10000": ["id10000/movie-01-001-comb3.wav"],
        "id10001": ["id10001/advertisement-01-001-comb2.wav"]}
    assert all(read_table(train / "utt2spk")[key] == [key.split("/")[0]] for key in wav_scp)
    # single utterances are read where they are; a combined one is its parts' samples
    raw = data / "raw_data"
    assert wav_scp["id00001/speech-01-001.wav"] == str(
        raw / "CN-Celeb_flac" / "data" / "id00001" / "speech-01-001.flac")
    durations = read_table(train / "utt2dur")
    for key, seconds in COMBINED.items():
        path = wav_scp[key]
        assert path.startswith(str(raw)) and path.endswith(".wav")
        audio, rate = sf.read(path, dtype="int16")
        parts = read_table(train / "utt2utts")[key]
        corpus = "CN-Celeb_flac" if key.startswith("id0") else "CN-Celeb2_flac"
        assert len(audio) == sum(sf.info(str(raw / corpus / "data" / f"{part}.flac")).frames
                                 for part in parts)
        assert rate == RATE and abs(float(durations[key][0]) - seconds) < 1e-3
    assert "cnceleb_train: 6 utterances of 4 speakers" in result.stdout


def test_prepare_data_writes_the_eval_set_and_both_trial_lists(tmp_path):
    data, result = _prepared(tmp_path)
    eval_dir = data / "eval"
    wav_scp = read_table(eval_dir / "wav.scp")
    assert sorted(wav_scp) == [
        "enroll/id00800-enroll.wav", "enroll/id00801-enroll.wav", "id00800/singing-01-002.wav",
        "id00800/singing-01-003.wav", "id00801/drama-01-001.wav",
        "test/id00800-singing-01-001.wav", "test/id00801-drama-01-002.wav",
        "test/id00801-vlog-01-001.wav"]
    assert all(os.path.isfile(path) for (path,) in wav_scp.values())
    # a list's .wav name is the .flac file of the release, or the .wav where there is one
    assert wav_scp["test/id00800-singing-01-001.wav"][0].endswith(
        "CN-Celeb_flac/eval/test/id00800-singing-01-001.flac")
    assert wav_scp["id00801/drama-01-001.wav"][0].endswith("data/id00801/drama-01-001.wav")
    utt2spk = read_table(eval_dir / "utt2spk")
    assert utt2spk["enroll/id00800-enroll.wav"] == ["id00800"]
    assert utt2spk["test/id00801-vlog-01-001.wav"] == ["id00801"]
    assert utt2spk["id00800/singing-01-003.wav"] == ["id00800-enroll"]
    enroll_map = read_table(eval_dir / "enroll.map")
    assert enroll_map["id00800-enroll"] == ["id00800/singing-01-002.wav",
                                            "id00800/singing-01-003.wav"]
    avg = _lines(eval_dir / "trials" / "CNC-Eval-Avg.lst")
    concat = _lines(eval_dir / "trials" / "CNC-Eval-Concat.lst")
    assert avg[0] == "id00800-enroll test/id00800-singing-01-001.wav target"
    assert avg[1] == "id00800-enroll test/id00801-drama-01-002.wav nontarget"
    assert concat[0] == "enroll/id00800-enroll.wav test/id00800-singing-01-001.wav target"
    assert len(avg) == len(concat) == 6
    for line in avg:
        enroll, test, _ = line.split()
        assert enroll in enroll_map and test in wav_scp
        assert all(utt in wav_scp for utt in enroll_map[enroll])
    assert all(line.split()[0] in wav_scp for line in concat)
    # the eval speakers' data stay out of training
    assert not [key for key in read_table(data / "cnceleb_train" / "wav.scp")
                if key.startswith("id008")]
    assert sorted(read_table(data / "musan" / "wav.scp")) == [
        "music/fma/music-fma-0000.wav", "noise/free-sound/noise-free-sound-0000.wav",
        "speech/librivox/speech-librivox-0000.wav"]
    assert list(read_table(data / "rirs" / "wav.scp")) == ["smallroom/Room001/Room001-00001.wav"]
    assert "eval: 8 utterances, 2 enrollment ids, 6 trials" in result.stdout


def test_a_rerun_skips_every_finished_step(tmp_path):
    data, _ = _prepared(tmp_path)
    outputs = [str(path) for path in data.glob("*/*") if path.is_file()]
    outputs += [str(path) for path in (data / "eval" / "trials").iterdir()]
    outputs += [str(path) for path in (data / "raw_data" / "cnceleb_train_combined").glob("*/*")]
    before = mtimes(outputs)
    again = _prepare(data, "--stage", "1", "--stop_stage", "4")
    assert again.stdout.count("present and verified") == 4
    assert again.stdout.count("already unpacked") == 4
    assert "cnceleb_train is up to date (min_duration=5)" in again.stdout
    assert mtimes(outputs) == before
    # an unpacked folder removed by hand is unpacked again, not taken as there
    shutil.rmtree(data / "raw_data" / "CN-Celeb_flac")
    again = _prepare(data, "--stage", "2", "--stop_stage", "2")
    assert "CN-Celeb_flac is gone: unpacking it again" in again.stdout
    assert (data / "raw_data" / "CN-Celeb_flac" / "dev" / "dev.lst").is_file()
    # an edited release list is taken up: a trial list of fewer lines
    trials = data / "raw_data" / "CN-Celeb_flac" / "eval" / "lists" / "trials.lst"
    trials.write_text("\n".join(_lines(trials)[:2]) + "\n")
    _prepare(data, "--stage", "4", "--stop_stage", "4")
    assert len(_lines(data / "eval" / "trials" / "CNC-Eval-Avg.lst")) == 2
    assert len(_lines(data / "eval" / "trials" / "CNC-Eval-Concat.lst")) == 2


def test_combine_short_audio_0_lists_the_training_utterances_as_they_are(tmp_path):
    data, _ = _prepared(tmp_path, "--combine_short_audio", "0")
    wav_scp = read_table(data / "cnceleb_train" / "wav.scp")
    assert sorted(wav_scp) == sorted(f"{key}.wav" for key in {**CN1_TRAIN, **CN2_TRAIN})
    assert all(path.endswith(".flac") for (path,) in wav_scp.values())
    assert not (data / "raw_data" / "cnceleb_train_combined").exists()
    # switching it on again combines (the lists were made with the other setting)
    _prepare(data, "--stage", "3", "--stop_stage", "4")
    assert sorted(read_table(data / "cnceleb_train" / "wav.scp")) == sorted(
        list(COMBINED) + SINGLES)
    assert len(read_table(data / "cnceleb_train" / "spk2utt")["id10000"]) == 1
    bad = _prepare(data, "--combine_short_audio", "yes", check=False)
    assert bad.returncode != 0 and "--combine_short_audio must be 0 or 1" in bad.stderr


def test_a_corrupt_or_missing_archive_is_named(tmp_path):
    data = tmp_path / "data"
    downloads = data / "download_data"
    make_fake_cnceleb_downloads(tmp_path, downloads)
    os.remove(downloads / "cn-celeb_v2.tar.gz.md5_ok")   # present but not verified
    result = _prepare(data, "--stage", "1", "--stop_stage", "1", check=False)
    assert result.returncode != 0
    assert "cn-celeb_v2.tar.gz has md5" in result.stderr
    assert "expected 7ab1b214028a7439e26608b2d5a0336c" in result.stderr
    assert not (downloads / "cn-celeb_v2.tar.gz.md5_ok").exists()

    os.remove(downloads / "cn-celeb_v2.tar.gz")
    result = _prepare(data, "--stage", "1", "--stop_stage", "1", "--openslr_url", "",
                      check=False)
    assert result.returncode != 0
    assert "missing archives: cn-celeb_v2.tar.gz." in result.stderr
    result = _prepare(data, "--stage", "2", "--stop_stage", "2", check=False)
    assert result.returncode != 0
    assert "cn-celeb_v2.tar.gz is missing or unverified; run stage 1 first" in result.stderr


def test_cn_celeb2_is_downloaded_as_its_three_parts_and_checked(tmp_path):
    data = tmp_path / "data"
    downloads = data / "download_data"
    make_fake_cnceleb_downloads(tmp_path, downloads)
    whole = (downloads / "cn-celeb2_v2.tar.gz").read_bytes()
    server = tmp_path / "server"
    os.makedirs(server)
    third = len(whole) // 3 + 1
    for index, suffix in enumerate(("aa", "ab", "ac")):
        (server / f"cn-celeb2_v2.tar.gz{suffix}").write_bytes(
            whole[index * third:(index + 1) * third])
    for name in ("cn-celeb2_v2.tar.gz", "cn-celeb2_v2.tar.gz.md5_ok"):
        os.remove(downloads / name)
    bin_dir, log = tmp_path / "bin", tmp_path / "wget.log"
    os.makedirs(bin_dir)
    (bin_dir / "wget").write_text(   # serves the basename of the URL from the folder
        "#!/usr/bin/env bash\n"
        f'url=${{@: -1}}; echo "$url" >> "{log}"\n'
        'while [ $# -gt 0 ]; do [ "$1" == "-O" ] && out=$2; shift; done\n'
        f'cp "{server}/$(basename "$url")" "$out"\n')
    os.chmod(bin_dir / "wget", 0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = _prepare(data, "--stage", "1", "--stop_stage", "1", "--openslr_url",
                      "http://mirror/resources", check=False, env=env)
    assert _lines(log) == [f"http://mirror/resources/82/cn-celeb2_v2.tar.gz{suffix}"
                           for suffix in ("aa", "ab", "ac")]
    # the joined parts are the archive; its md5 is not the real release's
    assert (downloads / "cn-celeb2_v2.tar.gz").read_bytes() == whole
    assert result.returncode != 0
    assert (f"has md5 {hashlib.md5(whole).hexdigest()}, expected "
            "55c47cf0b6d0bf793e88bf79d5dfc660") in result.stderr
    # joining the same parts again would give the same file: the user is told of them
    assert ("it was joined from cn-celeb2_v2.tar.gzaa cn-celeb2_v2.tar.gzab "
            "cn-celeb2_v2.tar.gzac: delete those") in result.stderr


def test_stages_name_the_missing_step_and_malformed_list_lines(tmp_path):
    data = tmp_path / "data"
    make_fake_cnceleb_downloads(tmp_path, data / "download_data")
    early = _prepare(data, "--stage", "3", "--stop_stage", "3", check=False)
    assert early.returncode != 0
    assert "CN-Celeb_flac/dev/dev.lst not found; run stage 2 first" in early.stderr
    _prepare(data, "--stage", "1", "--stop_stage", "2")
    early = _prepare(data, "--stage", "4", "--stop_stage", "4", check=False)
    assert early.returncode != 0
    assert "cnceleb_train/utt2utts not found; run stage 3 first" in early.stderr
    dev_lst = data / "raw_data" / "CN-Celeb_flac" / "dev" / "dev.lst"
    with open(dev_lst, "a") as out:
        out.write("id00002")   # no newline at the end: still read
    bad = _prepare(data, "--stage", "3", "--stop_stage", "3", check=False)
    assert bad.returncode != 0
    assert f"{dev_lst}:3: speaker id00002 has no folder" in bad.stderr
    dev_lst.write_text("id00000\nid00001\n")

    lists = data / "raw_data" / "CN-Celeb_flac" / "eval" / "lists"
    trials = lists / "trials.lst"
    good = trials.read_text()
    trials.write_text(good + "id00800-enroll test/id00800-singing-01-001.wav maybe\n")
    bad = _prepare(data, "--stage", "3", "--stop_stage", "4", check=False)
    assert bad.returncode != 0
    assert f"{trials}:7: expected" in bad.stderr
    assert not list((data / "eval" / "trials").iterdir())   # no list half written

    trials.write_text(good)
    shutil.copy(lists / "enroll.map", tmp_path / "enroll.map")
    with open(lists / "enroll.map", "a") as out:
        out.write("id00802-enroll id00802/gone-01-001.wav\n")
    os.remove(data / "eval" / "enroll.map")
    bad = _prepare(data, "--stage", "4", "--stop_stage", "4", check=False)
    assert bad.returncode != 0
    assert f"{lists / 'enroll.map'}:3: id00802/gone-01-001.wav: neither" in bad.stderr

    shutil.copy(tmp_path / "enroll.map", lists / "enroll.map")
    _prepare(data, "--stage", "4", "--stop_stage", "4")
    assert len(_lines(data / "eval" / "trials" / "CNC-Eval-Concat.lst")) == 6


def test_the_smoke_corpus_of_librispeech_speech_is_read_whole_and_can_calibrate(tmp_path):
    """bench/make_fake_cnceleb.py (bench/run_cnceleb_smoke.sh's corpus) gives stage 1 a
    release it reads whole: short utterances joined, every trial kept, and enough speech
    per training speaker for stage 7's duration-stratified calibration trials."""
    from wespeaker_py.scoring.calibration_set import generate_calibration_trials
    from wespeaker_py.utils.tables import read_utt2dur
    data = tmp_path / "data"
    made = subprocess.run(["python", os.path.join(REPO, "bench", "make_fake_cnceleb.py"),
                           "--out", str(data / "download_data")],
                          check=True, capture_output=True, text=True).stdout
    counts = dict(item.split() for item in made.strip().split(", "))
    result = _prepare(data, "--stage", "1", "--stop_stage", "4")
    assert result.stdout.count("present and verified") == 4
    train = data / "cnceleb_train"
    pieces = read_table(train / "utt2utts")
    assert sum(len(parts) for parts in pieces.values()) == int(counts["training_pieces"])
    assert sum(len(parts) > 1 for parts in pieces.values()) > 100
    assert len(read_table(train / "spk2utt")) == 93
    for name in ("CNC-Eval-Avg.lst", "CNC-Eval-Concat.lst"):
        assert len(_lines(data / "eval" / "trials" / name)) == int(counts["trials"])
    genres = {key.split("/")[1].split("-")[0] for key in pieces if key.startswith("id00000/")}
    assert len(genres) >= 3
    trials = generate_calibration_trials(read_utt2dur(str(train / "utt2dur")),
                                         each_trial_num=100)
    assert len({enroll.split("/")[0] for enroll, _, _ in trials}) >= 2
