"""Choose the front-end named by a config's ``dataset_args.frontend``."""
from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

FRONTENDS = ("fbank", "s3prl")


def build_frontend(dataset_args: Mapping[str, Any]) -> nn.Module:
    """The front-end module for ``dataset_args``.

    ``frontend: fbank`` (the default) gives :class:`FbankFeatures`;
    ``frontend: s3prl`` gives :class:`SSLFrontend` (needs the ``ssl`` extra,
    ``transformers``). Both map int16-scale waveforms ``[B, samples]`` to
    features ``[B, frames, dim]`` and expose the feature size as ``output_dim``.
    """
    frontend = dataset_args.get("frontend", "fbank")
    if frontend == "fbank":
        from wespeaker_py.frontend.features import FbankFeatures
        return FbankFeatures.from_dataset_args(dataset_args)
    if frontend == "s3prl":
        from wespeaker_py.frontend.ssl import SSLFrontend
        return SSLFrontend.from_dataset_args(dataset_args)
    raise ValueError(f"dataset_args.frontend is {frontend!r}; known: {', '.join(FRONTENDS)}")
