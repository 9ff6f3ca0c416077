"""Classification heads that sit on top of the speaker embedding during training.

Each head maps ``embeddings [B, E]`` and integer ``labels [B]`` to logits
``[B, num_class]`` (the labels are needed because the margin acts only on each
sample's own class). Heads expose:

* ``margin_schedulable`` and ``update(margin)``: whether the head has a margin to
  schedule, and the setter the margin scheduler calls every step on a head that
  has one. The others (softmax, SphereFace's fixed multiplier) ignore ``update``;
  training warns of a ``margin_update`` that asks them for a margin.
* ``set_iteration(iteration)``: the global training iteration about to run,
  also set by the margin scheduler every step (SphereFace anneals by it).
* ``logits_and_loss(embeddings, labels, criterion)``: the training step's
  logits and loss. Most heads use ``criterion`` (cross-entropy); SphereFace2
  has its own binary loss.

Parameter names follow WeSpeaker (``weight``, ``bias``, ``trans.*``) so that the
head saved under ``projection.`` in a checkpoint loads unchanged.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from wespeaker_py.config.heads import HEADS, check_projection_args

Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cosine(embeddings: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every embedding and every class centre."""
    return F.linear(F.normalize(embeddings), F.normalize(weight))


def _sine(cosine: torch.Tensor) -> torch.Tensor:
    # Rounding can push |cos| a hair above 1; clamp so that sqrt stays real.
    return torch.sqrt((1.0 - cosine * cosine).clamp(min=0.0))


def _one_hot(labels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(like.shape).scatter_(1, labels.view(-1, 1).long(), 1.0)


def _class_weight(num_rows: int, in_features: int) -> nn.Parameter:
    weight = nn.Parameter(torch.empty(num_rows, in_features))
    nn.init.xavier_uniform_(weight)
    return weight


class ProjectionHead(nn.Module):
    """Common interface of the heads; subclasses implement ``forward``."""

    margin_schedulable = True

    def update(self, margin: float) -> None:
        """Set the margin (called by the margin scheduler)."""
        self.margin = margin

    def set_iteration(self, iteration: int) -> None:
        """The global training iteration (0-based) the next step runs; most heads ignore it."""

    def logits_and_loss(self, embeddings: torch.Tensor, labels: torch.Tensor,
                        criterion: Criterion) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits for accuracy and the training loss of one batch."""
        logits = self(embeddings, labels)
        return logits, criterion(logits, labels)


class _AngularMargin(ProjectionHead):
    """Shared state of the additive angular margin heads: cos(theta + m) for the target."""

    # ArcFace's option, an argument of its heads; SphereFace2 has none
    easy_margin = False

    def update(self, margin: float) -> None:
        self.margin = margin
        self.cos_m = math.cos(margin)
        self.sin_m = math.sin(margin)
        # Beyond theta = pi - m, cos(theta + m) stops decreasing; there the
        # target logit continues as cos(theta) - (1 + cos(pi - m)) instead,
        # which keeps it monotonic and continuous at the threshold.
        self.th = math.cos(math.pi - margin)
        self.mmm = 1.0 + math.cos(math.pi - margin)

    def _target_logit(self, cosine: torch.Tensor) -> torch.Tensor:
        phi = cosine * self.cos_m - _sine(cosine) * self.sin_m
        if self.easy_margin:
            return torch.where(cosine > 0, phi, cosine)
        return torch.where(cosine > self.th, phi, cosine - self.mmm)


class ArcMarginProduct(_AngularMargin):
    """Additive angular margin softmax (ArcFace/AAM): target logit ``s*cos(theta + m)``.

    With ``easy_margin`` the margin applies only where ``cos(theta) > 0``.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 32.0,
                 margin: float = 0.2, easy_margin: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.easy_margin = easy_margin
        self.weight = _class_weight(out_features, in_features)
        self.update(margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = _cosine(embeddings, self.weight)
        target = _one_hot(labels, cosine)
        logits = target * self._target_logit(cosine) + (1.0 - target) * cosine
        return logits * self.scale

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, margin={self.margin}, easy_margin={self.easy_margin}")


class ArcMarginProduct_intertopk_subcenter(_AngularMargin):
    """ArcMargin with K sub-centres per class and an inter-top-k penalty (arXiv:2110.05042).

    Each class has ``K`` centres and its cosine is the best of them. The
    ``k_top`` most similar wrong classes of each sample get their angle reduced
    by ``mp`` (``cos(theta - mp)``), a penalty that grows with the scheduled
    margin (``mp * margin / 0.2``). With ``do_lm`` (large-margin fine-tuning)
    the penalty is off.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 32.0,
                 margin: float = 0.2, easy_margin: bool = False, K: int = 3,
                 mp: float = 0.06, k_top: int = 5, do_lm: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.easy_margin = easy_margin
        self.do_lm = do_lm
        self.K = K
        self.mp = 0.0 if do_lm else mp
        self.k_top = 0 if do_lm else k_top
        self.weight = _class_weight(K * out_features, in_features)
        self.update(margin)

    def _set_hard_penalty(self, penalty: float) -> None:
        self.cos_mp = math.cos(penalty)
        self.sin_mp = math.sin(penalty)

    def update(self, margin: float) -> None:
        super().update(margin)
        self._set_hard_penalty(self.mp * (margin / 0.2) if margin > 0.001 else 0.0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = _cosine(embeddings, self.weight)
        cosine = cosine.reshape(-1, self.out_features, self.K).max(dim=2).values
        target = _one_hot(labels, cosine)
        target_logit = self._target_logit(cosine)
        if self.k_top <= 0:
            logits = target * target_logit + (1.0 - target) * cosine
            return logits * self.scale
        # Subtracting 2 from the target cosine keeps it out of the top k.
        _, hardest = torch.topk(cosine - 2 * target, self.k_top)
        hard = cosine.new_zeros(cosine.shape).scatter_(1, hardest, 1.0)
        penalised = cosine * self.cos_mp + _sine(cosine) * self.sin_mp
        logits = target * target_logit + hard * penalised + (1.0 - target - hard) * cosine
        return logits * self.scale

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, margin={self.margin}, easy_margin={self.easy_margin}, "
                f"K={self.K}, mp={self.mp}, k_top={self.k_top}, do_lm={self.do_lm}")


class AddMarginProduct(ProjectionHead):
    """Additive (cosine) margin softmax, AM-softmax/CosFace: target logit ``s*(cos(theta) - m)``."""

    def __init__(self, in_features: int, out_features: int, scale: float = 32.0,
                 margin: float = 0.2):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.margin = margin
        self.weight = _class_weight(out_features, in_features)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = _cosine(embeddings, self.weight)
        return (cosine - self.margin * _one_hot(labels, cosine)) * self.scale

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, margin={self.margin}")


class HyperbolicAMSoftmax(ProjectionHead):
    """Hyperbolic additive margin softmax (arXiv:2601.19709): logits ``-s * (d + m)``.

    Embeddings and class centres are pulled into the Poincare ball of curvature
    ``curvature`` (rows longer than its radius scaled back inside it); ``d`` is the
    Poincare distance of each embedding to each centre, and the margin ``m`` is added to
    the distance to the sample's own class. Centres start near the origin (normal, std
    1e-3). As WeSpeaker's, it forms every embedding-centre difference ``[B, C, E]`` at
    once: 0.8 GB of float32 for a batch of 128, 5,994 classes and 256-dimensional
    embeddings.
    """

    _EPS = 1e-5

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0,
                 margin: float = 0.2, curvature: float = 1.0):
        super().__init__()
        if curvature <= 0:
            raise ValueError(f"projection_args.curvature must be above 0, got {curvature}")
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.margin = margin
        self.curvature = curvature
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * 1e-3)

    def _into_ball(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.norm(x, dim=-1, keepdim=True).clamp(min=self._EPS)
        radius = (1.0 - self._EPS) / (self.curvature ** 0.5)
        return x * torch.clamp(radius / norm, max=1.0)

    def _poincare_distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = self._EPS
        x_norm = torch.norm(x, dim=-1, keepdim=True).clamp(max=1 - eps)
        y_norm = torch.norm(y, dim=-1, keepdim=True).clamp(max=1 - eps)
        gap = 2 * torch.norm(x - y, dim=-1, keepdim=True).pow(2)
        shrink = (1 - x_norm.pow(2)) * (1 - y_norm.pow(2))
        return torch.acosh((1 + gap / shrink.clamp_min(eps)).clamp(min=1.0 + eps))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        points, centres = self._into_ball(embeddings), self._into_ball(self.weight)
        shape = (points.shape[0], centres.shape[0], points.shape[1])
        distance = self._poincare_distance(points.unsqueeze(1).expand(shape),
                                           centres.unsqueeze(0).expand(shape)).squeeze(-1)
        return -self.scale * (distance + self.margin * _one_hot(labels, distance))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, margin={self.margin}, curvature={self.curvature}")


class SphereProduct(ProjectionHead):
    """Multiplicative angular margin (SphereFace/A-softmax): target ``psi(m*theta)``.

    ``margin`` is the integer multiplier m (at most 5). The target logit is
    blended from cos(theta) towards psi(m*theta) with a weight that anneals
    over training steps, and logits are scaled by the embedding norm. The
    margin is fixed: ``update`` leaves it alone.

    ``iter`` counts the training forward passes, as WeSpeaker's does. The
    training loop sets it from the global iteration before each step
    (:meth:`set_iteration`), so that a resumed run, which starts with a fresh
    head, and a run that dropped a step anneal as an uninterrupted one; it is
    not part of the state_dict, whose keys stay WeSpeaker's.
    """

    margin_schedulable = False
    # Annealing of the blend weight: lambda = max(min, base * (1 + gamma*step)^-power).
    _LAMBDA_BASE, _LAMBDA_GAMMA, _LAMBDA_POWER, _LAMBDA_MIN = 1000.0, 0.12, 1, 5.0

    def __init__(self, in_features: int, out_features: int, margin: int = 2):
        super().__init__()
        if not 0 <= int(margin) <= 5:
            raise ValueError(f"sphere margin must be an integer in 0..5, got {margin}")
        self.in_features = in_features
        self.out_features = out_features
        self.margin = int(margin)
        self.iter = 0
        self.weight = _class_weight(out_features, in_features)

    def update(self, margin: float) -> None:
        """No-op: SphereFace's integer margin is not scheduled."""

    def set_iteration(self, iteration: int) -> None:
        """Count ``iteration`` steps done: the next training forward anneals for step
        ``iteration + 1``, as in an uninterrupted run."""
        self.iter = iteration

    def _cos_multiple_angle(self, cos_theta: torch.Tensor) -> torch.Tensor:
        """cos(m*theta) as a Chebyshev polynomial of cos(theta)."""
        previous, current = torch.ones_like(cos_theta), cos_theta
        if self.margin == 0:
            return previous
        for _ in range(self.margin - 1):
            previous, current = current, 2 * cos_theta * current - previous
        return current

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.iter += 1
        blend = max(self._LAMBDA_MIN,
                    self._LAMBDA_BASE * (1 + self._LAMBDA_GAMMA * self.iter) ** -self._LAMBDA_POWER)
        cos_theta = _cosine(embeddings, self.weight).clamp(-1, 1)
        # k picks the monotonic branch psi = (-1)^k cos(m*theta) - 2k.
        k = (self.margin * cos_theta.detach().acos() / 3.14159265).floor()
        psi = (-1.0) ** k * self._cos_multiple_angle(cos_theta) - 2 * k
        target = _one_hot(labels, cos_theta)
        logits = target * (psi - cos_theta) / (1 + blend) + cos_theta
        return logits * embeddings.norm(p=2, dim=1, keepdim=True)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"margin={self.margin}")


class SphereFace2(_AngularMargin):
    """SphereFace2: one binary (target vs. not) logistic loss per class (arXiv:2108.01513).

    ``margin_type`` "C" subtracts the margin from g(cos) for the target and adds
    it for the others; "A" uses cos(theta +/- m) instead. ``lanbuda`` weighs the
    positive against the negative terms, ``t`` shapes g(z) = 2((z+1)/2)^t - 1.
    ``forward`` returns ``s * (cos - m * target)`` for accuracy;
    ``logits_and_loss`` also returns the binary loss (the criterion is unused).
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 32.0,
                 margin: float = 0.2, lanbuda: float = 0.7, t: int = 3,
                 margin_type: str = "C"):
        super().__init__()
        if margin_type not in ("A", "C"):
            raise ValueError(f"config key 'projection_args.margin_type' must be 'A' or 'C' "
                             f"(project_type sphereface2), got {margin_type!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.scale = scale
        self.lanbuda = lanbuda
        self.t = t
        self.margin_type = margin_type
        self.weight = _class_weight(out_features, in_features)
        self.bias = nn.Parameter(torch.zeros(1, 1))
        self.update(margin)

    def _g(self, z: torch.Tensor) -> torch.Tensor:
        return 2 * torch.pow((z + 1) / 2, self.t) - 1

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cosine = _cosine(embeddings, self.weight)
        return self.scale * (cosine - self.margin * _one_hot(labels, cosine))

    def logits_and_loss(self, embeddings: torch.Tensor, labels: torch.Tensor,
                        criterion: Criterion) -> Tuple[torch.Tensor, torch.Tensor]:
        cosine = _cosine(embeddings, self.weight)
        bias = self.bias[0][0]
        if self.margin_type == "A":
            positive = self.scale * self._g(self._target_logit(cosine)) + bias
            negative = (self.scale * self._g(cosine * self.cos_m + _sine(cosine) * self.sin_m)
                        + bias)
        else:
            g = self._g(cosine)
            positive = self.scale * (g - self.margin) + bias
            negative = self.scale * (g + self.margin) + bias
        # log(1 + exp(x)) written as softplus, which does not overflow.
        positive_loss = self.lanbuda * F.softplus(-positive)
        negative_loss = (1 - self.lanbuda) * F.softplus(negative)
        target = _one_hot(labels, cosine)
        loss = (target * positive_loss + (1 - target) * negative_loss).sum(dim=1).mean()
        logits = self.scale * (cosine - self.margin * target)
        return logits, loss

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"scale={self.scale}, lanbuda={self.lanbuda}, margin={self.margin}, "
                f"t={self.t}, margin_type={self.margin_type}")


class LinearSoftmax(ProjectionHead):
    """Plain softmax classifier: BatchNorm, ReLU and a linear layer (no margin)."""

    margin_schedulable = False

    def __init__(self, emb_dim: int, class_num: int):
        super().__init__()
        self.trans = nn.Sequential(nn.BatchNorm1d(emb_dim), nn.ReLU(inplace=True),
                                   nn.Linear(emb_dim, class_num))

    def update(self, margin: float) -> None:
        """No-op: a plain softmax has no margin."""

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.trans(embeddings)


def get_projection(projection_args: Mapping[str, Any], embed_dim: int,
                   num_class: int) -> ProjectionHead:
    """Build the head named by ``projection_args["project_type"]`` (``HEADS``,
    ``config/heads.py``).

    ``projection_args`` is the config's block of the same name, checked as a config's is
    when it loads (:func:`~wespeaker_py.config.heads.check_projection_args`: a key no head
    takes, or a value not of its key's kind or outside its range, is a ConfigError, a
    ValueError). ``embed_dim`` and ``num_class`` entries in it (which WeSpeaker writes into
    saved configs) are ignored in favour of the arguments, and so are the keys of other
    heads (:func:`~wespeaker_py.config.heads.keys_of_other_heads`). Margin heads start at
    ``projection_args["margin"]`` (default 0); the margin scheduler then sets the margin
    through ``update``. The sphere head's multiplier is always 4.
    """
    settings = check_projection_args(projection_args)
    return HEADS[settings["project_type"]].build_head(settings, embed_dim, num_class)
