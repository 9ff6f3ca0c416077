from wespeaker_py.frontend.framing import frame_params, num_frames, samples_for_frames


def test_frame_params_16k():
    assert frame_params(16000) == (400, 160)
    assert frame_params(8000, 25, 10) == (200, 80)


def test_samples_for_frames_round_trips():
    for sr in (8000, 16000):
        for frames in (1, 2, 200, 600):
            samples = samples_for_frames(frames, sr)
            assert num_frames(samples, sr) == frames
            assert num_frames(samples - 1, sr) == frames - 1


def test_too_short_gives_zero_frames():
    assert num_frames(399, 16000) == 0
