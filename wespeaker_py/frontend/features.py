"""The fbank front-end as a module: fbank -> CMN -> SpecAugment, configured like WeSpeaker."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

from wespeaker_py.frontend.fbank import fbank
from wespeaker_py.frontend.specaug import apply_cmn, spec_augment

FBANK_ARG_TYPES = {"num_mel_bins": int, "frame_shift": (int, float),
                   "frame_length": (int, float), "dither": (int, float)}
CMVN_ARG_TYPES = {"norm_mean": bool, "norm_var": bool}
SPEC_AUG_ARG_TYPES = {"num_t_mask": int, "num_f_mask": int, "max_t": int, "max_f": int,
                      "prob": (int, float)}


def _checked_args(args: Any, types: Mapping[str, Any], where: str) -> dict:
    """Validate a sub-block of ``dataset_args``: known keys, right types."""
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(args).__name__}")
    for key, value in args.items():
        if key not in types:
            raise ValueError(f"unknown key {where}.{key} (known: {', '.join(types)})")
        # bool is a subclass of int: accept it only where a flag is expected.
        if isinstance(value, bool) != (types[key] is bool) or not isinstance(value, types[key]):
            raise ValueError(f"{where}.{key} has the wrong type: {value!r}")
    return dict(args)


def _checked_flag(dataset_args: Mapping[str, Any], key: str, default: bool) -> bool:
    value = dataset_args.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"dataset_args.{key} must be true or false, got {value!r}")
    return value


class FbankFeatures(torch.nn.Module):
    """Waveforms ``[B, samples]`` (int16 scale) -> features ``[B, frames, num_mel_bins]``.

    Runs Kaldi-compatible fbank, then per-utterance mean normalisation (``cmn``),
    then SpecAugment when ``spec_aug`` is set and the module is training. Dither
    is applied only in training mode. The module holds no parameters or buffers,
    so it adds nothing to a model's state_dict.
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 80,
                 frame_length: float = 25, frame_shift: float = 10, dither: float = 0.0,
                 cmn: bool = True, spec_aug: bool = False,
                 spec_aug_args: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.frame_length = frame_length
        self.frame_shift = frame_shift
        self.dither = dither
        self.cmn = cmn
        self.spec_aug = spec_aug
        self.spec_aug_args = _checked_args(spec_aug_args, SPEC_AUG_ARG_TYPES, "spec_aug_args")
        self.output_dim = num_mel_bins

    @classmethod
    def from_dataset_args(cls, dataset_args: Mapping[str, Any]) -> "FbankFeatures":
        """Build from WeSpeaker's ``dataset_args`` config block.

        Reads ``resample_rate``, ``fbank_args``, ``cmvn``, ``cmvn_args``, ``spec_aug``
        and ``spec_aug_args``; other keys belong to the input pipeline and are ignored.
        Unknown or mistyped keys inside the argument blocks raise ValueError
        naming the key.
        """
        if not isinstance(dataset_args, Mapping):
            raise ValueError(f"dataset_args must be a mapping, got {type(dataset_args).__name__}")
        frontend = dataset_args.get("frontend", "fbank")
        if frontend != "fbank":
            raise ValueError(f"dataset_args.frontend is {frontend!r}; FbankFeatures "
                             f"handles only 'fbank'")
        sample_rate = dataset_args.get("resample_rate", 16000)
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"dataset_args.resample_rate must be a positive integer, "
                             f"got {sample_rate!r}")
        fbank_args = _checked_args(dataset_args.get("fbank_args"), FBANK_ARG_TYPES,
                                   "dataset_args.fbank_args")
        spec_aug_args = _checked_args(dataset_args.get("spec_aug_args"), SPEC_AUG_ARG_TYPES,
                                      "dataset_args.spec_aug_args")
        cmvn_args = _checked_args(dataset_args.get("cmvn_args"), CMVN_ARG_TYPES,
                                  "dataset_args.cmvn_args")
        if cmvn_args.get("norm_var", False):
            raise ValueError("dataset_args.cmvn_args.norm_var: variance normalisation "
                             "is not supported by FbankFeatures")
        cmn = _checked_flag(dataset_args, "cmvn", True) and cmvn_args.get("norm_mean", True)
        return cls(sample_rate=sample_rate, **fbank_args, cmn=cmn,
                   spec_aug=_checked_flag(dataset_args, "spec_aug", False),
                   spec_aug_args=spec_aug_args)

    def forward(self, wavs: torch.Tensor) -> torch.Tensor:
        feats = fbank(wavs, sample_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
                      frame_length=self.frame_length, frame_shift=self.frame_shift,
                      dither=self.dither if self.training else 0.0)
        if self.cmn:
            feats = apply_cmn(feats)
        if self.spec_aug and self.training:
            feats = spec_augment(feats, **self.spec_aug_args)
        return feats

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
                f"frame_length={self.frame_length}, frame_shift={self.frame_shift}, "
                f"dither={self.dither}, cmn={self.cmn}, spec_aug={self.spec_aug}")
