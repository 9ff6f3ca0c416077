"""Choose the front-end named by a config's ``dataset_args.frontend``."""
from __future__ import annotations

from typing import Any, Mapping, Union

import torch.nn as nn

from wespeaker_py.config import DatasetArgs, as_dataset_args


def build_frontend(dataset_args: Union[DatasetArgs, Mapping[str, Any]]) -> nn.Module:
    """The front-end module for ``dataset_args`` (the checked block, or a mapping to check).

    ``frontend: fbank`` (the default) gives :class:`FbankFeatures`;
    ``frontend: s3prl`` gives :class:`SSLFrontend` (needs the ``ssl`` extra,
    ``transformers``); ``frontend: tfmel`` gives :class:`TFMelFeatures`
    (ReDimNet2's). All map int16-scale waveforms ``[B, samples]`` to
    features ``[B, frames, dim]`` and expose the feature size as ``output_dim``.
    """
    config = as_dataset_args(dataset_args)
    if config.frontend == "fbank":
        from wespeaker_py.frontend.features import FbankFeatures
        return FbankFeatures.from_dataset_args(config)
    if config.frontend == "tfmel":
        from wespeaker_py.frontend.tfmel import TFMelFeatures
        return TFMelFeatures.from_dataset_args(config)
    from wespeaker_py.frontend.ssl import SSLFrontend
    return SSLFrontend.from_dataset_args(config)
