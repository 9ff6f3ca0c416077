"""subtract_regions' sweep gives what scanning every excluded region for every region gives."""
import random

from wespeaker_py.diarization.metrics import merge_regions, subtract_regions


def scan_every_pair(regions, excluded):
    """The definition: each merged region less every merged excluded region, one by one."""
    excluded = merge_regions(excluded)
    kept = []
    for start, end in merge_regions(regions):
        cursor = start
        for ex_start, ex_end in excluded:
            if ex_end <= cursor or ex_start >= end:
                continue
            if ex_start > cursor:
                kept.append((cursor, ex_start))
            cursor = max(cursor, ex_end)
        if cursor < end:
            kept.append((cursor, end))
    return kept


def random_regions(rng, count, span):
    """Unsorted regions on a coarse grid: shared and touching ends, empty and reversed ones."""
    regions = []
    for _ in range(count):
        start = rng.randint(0, span) / 2
        regions.append((start, start + rng.randint(-2, 6) / 2))
    return regions


def test_the_sweep_matches_the_definition_on_random_layouts():
    rng = random.Random(7)
    for _ in range(2000):
        span = rng.randint(1, 40)
        regions = random_regions(rng, rng.randint(0, 8), span)
        excluded = random_regions(rng, rng.randint(0, 12), span)
        assert subtract_regions(regions, excluded) == scan_every_pair(regions, excluded), (
            regions, excluded)


def test_a_uem_of_many_pieces_against_collars():
    rng = random.Random(8)
    uem = [(6.0 * i, 6.0 * i + 5.0) for i in range(300)]
    collars = [(t - 0.25, t + 0.25) for t in sorted(rng.uniform(0, 1800) for _ in range(900))]
    collars += [(-1.0, 0.5), (1799.0, float("inf"))]
    kept = subtract_regions(uem, collars)
    assert kept == scan_every_pair(uem, collars)
    assert kept[0][0] == 0.5 and kept[-1][1] <= 1799.0
