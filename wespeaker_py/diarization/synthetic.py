"""Synthetic conversations from a speaker-labelled corpus, with their true RTTM.

Speakers take turns of 1-6 s cut from their utterances, separated by pauses,
and now and then the next speaker starts before the current one has finished.
The speaker of each turn differs from the previous one. By default a turn is
cut at a random place of a random utterance, so a short corpus is heard again
and again (windows of repeated audio are near-duplicates, which the clustering
sees as extra tight groups); with ``ConversationStyle.reuse=False`` each
speaker reads their utterances once, in order, and leaves when they run out,
and the conversation ends when fewer than two speakers are left. The true RTTM marks
speech only: a turn is split where its source utterance pauses for 0.3 s or
more (found once per utterance by a strict energy VAD on the clean recording),
so a good VAD is not charged with "missing" a reader's pauses. Everything is
drawn from one seeded generator, so a seed fixes a conversation.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wespeaker_py.audio import INT16_SCALE, load_audio, write_wav
from wespeaker_py.diarization.rttm import write_rttm
from wespeaker_py.diarization.turns import Turn
from wespeaker_py.diarization.vad import EnergyVAD, Region, RegionRules
from wespeaker_py.utils.tables import read_key_value, read_lines, resolve_wav, write_table

# the rate conversations are built and written at
SAMPLE_RATE = 16000


@dataclass
class ConversationStyle:
    """How turns are drawn (seconds; probabilities per turn change)."""

    min_turn: float = 1.0
    max_turn: float = 6.0
    min_pause: float = 0.2
    max_pause: float = 1.5
    overlap_probability: float = 0.15
    min_overlap: float = 0.3
    max_overlap: float = 1.0
    level_db: float = -26.0      # RMS of each turn, re full scale ...
    level_spread_db: float = 3.0  # ... give or take this much
    reuse: bool = True           # False: no stretch of an utterance is heard twice


class SpeakerCorpus:
    """The utterances of each speaker of a Kaldi-style corpus directory, loaded on demand.

    ``speakers_file`` (e.g. ``test_spk``), when given, limits the speakers.
    """

    def __init__(self, corpus_dir: str, speakers_file: Optional[str] = None):
        wav_scp = read_key_value(os.path.join(corpus_dir, "wav.scp"))
        utt2spk = read_key_value(os.path.join(corpus_dir, "utt2spk"), allow_spaces_in_value=False)
        allowed = set(read_lines(speakers_file)) if speakers_file else None
        self.utterances: Dict[str, List[str]] = {}
        for utt in sorted(utt2spk):
            speaker = utt2spk[utt]
            if (allowed is None or speaker in allowed) and utt in wav_scp:
                self.utterances.setdefault(speaker, []).append(
                    resolve_wav(wav_scp[utt], corpus_dir))
        if not self.utterances:
            raise ValueError(f"{corpus_dir}: no utterances of the selected speakers")
        self._cache: Dict[str, Tuple[np.ndarray, List[Region]]] = {}
        self._vad = EnergyVAD(dynamic_range_db=25.0, rules=RegionRules(
            threshold=0.5, offset_threshold=0.5, min_speech=0.1, min_silence=0.3, pad=0.05))

    @property
    def speakers(self) -> List[str]:
        return sorted(self.utterances)

    def speech(self, path: str) -> Tuple[np.ndarray, List[Region]]:
        """An utterance (16 kHz, float in [-1, 1]) cut to its first and last speech, and its
        speech regions."""
        if path not in self._cache:
            audio = load_audio(path, SAMPLE_RATE) / np.float32(INT16_SCALE)
            regions = self._vad(audio, SAMPLE_RATE) or [(0.0, audio.size / SAMPLE_RATE)]
            first, last = regions[0][0], regions[-1][1]
            audio = audio[int(first * SAMPLE_RATE):int(last * SAMPLE_RATE)]
            self._cache[path] = (audio, [(a - first, b - first) for a, b in regions])
        return self._cache[path]


def _level(audio: np.ndarray, level_db: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) + 1e-9
    return (audio * (10.0 ** (level_db / 20.0) / rms)).astype(np.float32)


def _speech_turns(regions: Sequence[Region], offset: float, length: float, start: float,
                  speaker: str, shortest: float = 0.1) -> List[Turn]:
    """The speech regions of an utterance inside ``[offset, offset+length)``, moved to ``start``."""
    turns = []
    for a, b in regions:
        a, b = max(a, offset), min(b, offset + length)
        if b - a >= shortest:
            turns.append(Turn(round(start + a - offset, 3), round(start + b - offset, 3), speaker))
    return turns


def _next_piece(corpus: SpeakerCorpus, speaker: str, style: ConversationStyle,
                rng: np.random.Generator, read: Dict[str, Tuple[int, int]]):
    """The audio, speech regions, sample offset and size of the speaker's next turn.

    With ``style.reuse`` a random stretch of a random utterance; else the next unread
    stretch of the speaker's utterances (``read``: utterance index and sample
    position per speaker, advanced here), or None when they are all read.
    """
    utterances = corpus.utterances[speaker]
    if style.reuse:   # (the order of the draws fixes the conversations of a seed)
        audio, regions = corpus.speech(utterances[rng.integers(len(utterances))])
        length = min(rng.uniform(style.min_turn, style.max_turn), audio.size / SAMPLE_RATE)
        size = int(length * SAMPLE_RATE)
        return audio, regions, int(rng.integers(0, audio.size - size + 1)), size
    length = rng.uniform(style.min_turn, style.max_turn)
    index, position = read.get(speaker, (0, 0))
    while index < len(utterances):
        audio, regions = corpus.speech(utterances[index])
        left = audio.size - position
        if left >= int(0.5 * SAMPLE_RATE):   # a rest under 0.5 s is not a turn
            size = min(int(length * SAMPLE_RATE), left)
            if left - size < int(0.5 * SAMPLE_RATE):
                size = left
            read[speaker] = (index, position + size)
            return audio, regions, position, size
        index, position = index + 1, 0
    read[speaker] = (index, 0)
    return None


def build_conversation(corpus: SpeakerCorpus, speakers: Sequence[str], duration: float,
                       rng: np.random.Generator,
                       style: ConversationStyle = ConversationStyle()
                       ) -> Tuple[np.ndarray, List[Turn]]:
    """A 16 kHz mix of about ``duration`` seconds among ``speakers``, and its true turns.

    Without ``style.reuse`` it may be shorter: it ends when fewer than two
    speakers (one, for a monologue) have unread speech.
    """
    if len(speakers) < 1:
        raise ValueError("a conversation needs at least one speaker")
    pieces: List[Tuple[int, np.ndarray]] = []
    turns: List[Turn] = []
    cursor, previous = 0.5, None
    active, read, ends = list(speakers), {}, {}
    while cursor < duration and len(active) >= min(2, len(speakers)):
        choices = [s for s in active if s != previous] or list(active)
        speaker = choices[rng.integers(len(choices))]
        piece = _next_piece(corpus, speaker, style, rng, read)
        if piece is None:
            active.remove(speaker)
            continue
        audio, regions, offset, size = piece
        length = size / SAMPLE_RATE   # (with reuse: the drawn length, to the sample)
        gain = style.level_db + rng.uniform(-style.level_spread_db, style.level_spread_db)
        # two overlaps in a row could start a speaker before their own last turn ends
        cursor = max(cursor, ends.get(speaker, 0.0))
        start = int(cursor * SAMPLE_RATE)
        pieces.append((start, _level(audio[offset:offset + size], gain)))
        turns += _speech_turns(regions, offset / SAMPLE_RATE, length, start / SAMPLE_RATE,
                               speaker)
        end = ends[speaker] = (start + size) / SAMPLE_RATE
        if rng.random() < style.overlap_probability and length > style.max_overlap:
            cursor = end - rng.uniform(style.min_overlap, style.max_overlap)
        else:
            cursor = end + rng.uniform(style.min_pause, style.max_pause)
        previous = speaker
    if not pieces:
        raise ValueError(f"no speech of {', '.join(speakers)} in the corpus")
    total = max(start + piece.size for start, piece in pieces) + SAMPLE_RATE // 2
    mix = np.zeros(total, dtype=np.float32)
    for start, piece in pieces:
        mix[start:start + piece.size] += piece
    peak = float(np.max(np.abs(mix)))
    if peak > 0.99:
        mix *= 0.99 / peak
    return mix, sorted(turns, key=lambda t: (t.start, t.end))


def write_conversations(corpus: SpeakerCorpus, out_dir: str, count: int,
                        num_speakers: Tuple[int, int] = (2, 4), duration: float = 60.0,
                        seed: int = 0, style: ConversationStyle = ConversationStyle()
                        ) -> List[str]:
    """Write ``count`` conversations: ``wav/<id>.wav``, ``wav.scp`` and ``ref.rttm`` in ``out_dir``.

    Each has between ``num_speakers[0]`` and ``num_speakers[1]`` speakers drawn
    from the corpus. Returns the recording ids.
    """
    low, high = num_speakers
    if not 1 <= low <= high <= len(corpus.speakers):
        raise ValueError(f"num_speakers {num_speakers}: the corpus has "
                         f"{len(corpus.speakers)} speakers")
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(out_dir, "wav"), exist_ok=True)
    references: Dict[str, List[Turn]] = {}
    scp_rows = []
    for index in range(count):
        chosen = rng.choice(corpus.speakers, size=int(rng.integers(low, high + 1)),
                            replace=False)
        mix, turns = build_conversation(corpus, list(chosen), duration, rng, style)
        key = f"conv{index:03d}_{len(chosen)}spk"
        wav_path = os.path.join(out_dir, "wav", f"{key}.wav")
        write_wav(wav_path, mix, SAMPLE_RATE)
        references[key] = turns
        scp_rows.append((key, os.path.abspath(wav_path)))
    write_table(os.path.join(out_dir, "wav.scp"), scp_rows)
    write_rttm(os.path.join(out_dir, "ref.rttm"), references)
    return list(references)
