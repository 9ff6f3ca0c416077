"""Speed perturbation as WeSpeaker does it: 1.0, 0.9 or 1.1, a new speaker per speed.

The speed at index ``i`` of :data:`SPEEDS` shifts the speaker label by
``num_spks * i`` (0.9 -> +num_spks, 1.1 -> +2 num_spks), so a model trained with
speed perturbation has ``3 * num_spks`` classes. Speeds are fractions so that the
resampling ratios stay exact (soxr is fastest on rational ratios).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Tuple

import numpy as np

SPEEDS: Tuple[Fraction, ...] = (Fraction(1), Fraction(9, 10), Fraction(11, 10))


def choose_speed_index(rng: np.random.Generator) -> int:
    """Pick a speed index uniformly, as WeSpeaker's ``random.randint(0, 2)``."""
    return int(rng.integers(0, len(SPEEDS)))


def shifted_label(label: int, speed_index: int, num_spks: int) -> int:
    """The speaker label of a sample perturbed with ``SPEEDS[speed_index]``."""
    return label + num_spks * speed_index
