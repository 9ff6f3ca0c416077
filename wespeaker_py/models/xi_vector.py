"""Xi-vector models (Lee, Wang & Koshinaka, IEEE SPL 2021) as in WeSpeaker.

An ECAPA-TDNN or x-vector TDNN whose pooling is the xi-vector posterior
pooling (:class:`wespeaker_py.models.pooling.XI`): each frame carries a learned
precision, and the embedding comes from the Gaussian posterior of the
utterance vector, so uncertain frames weigh less.
"""
from __future__ import annotations

from wespeaker_py.models.ecapa_tdnn import ECAPA_TDNN
from wespeaker_py.models.tdnn import XVEC


def _xi_ecapa_factory(channels: int):
    def factory(feat_dim: int, embed_dim: int, pooling_func: str = "XI",
                emb_bn: bool = False) -> ECAPA_TDNN:
        return ECAPA_TDNN(channels=channels, feat_dim=feat_dim, embed_dim=embed_dim,
                          pooling_func=pooling_func, emb_bn=emb_bn)
    return factory


def _xi_xvec(feat_dim: int, embed_dim: int, pooling_func: str = "XI") -> XVEC:
    return XVEC(feat_dim=feat_dim, embed_dim=embed_dim, pooling_func=pooling_func)


MODELS = {
    "XI_VEC_ECAPA_TDNN_c512": _xi_ecapa_factory(512),
    "XI_VEC_ECAPA_TDNN_c1024": _xi_ecapa_factory(1024),
    "XI_VEC_XVEC": _xi_xvec,
}

# The VoxCeleb v2 recipe's model_args beyond the input size (models.complexity reads them).
RECIPE_MODEL_ARGS = {"XI_VEC_ECAPA_TDNN_c512": {"embed_dim": 192},
                     "XI_VEC_ECAPA_TDNN_c1024": {"embed_dim": 192},
                     "XI_VEC_XVEC": {"embed_dim": 512}}
