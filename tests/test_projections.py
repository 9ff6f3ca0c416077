"""Projection heads: shapes, where the margin acts, margin updates, closed-form logits.

The behaviour tests run over every head of ``HEADS``, so a head added there gets them; a head
they do not apply to is named in one of the sets below, each checked to name heads of it."""
import math

import pytest
import torch
import torch.nn.functional as F

from wespeaker_py.config.heads import HEADS
from wespeaker_py.models.projections import get_projection

EMBED_DIM, NUM_CLASS, SCALE = 16, 10, 32.0
ALL_TYPES = list(HEADS)
# Heads without a margin to schedule (margin_schedulable false); every other head's
# scheduled margin acts on the target class only.
WITHOUT_SCHEDULED_MARGIN = {"sphere", "softmax"}
# projection_args the target-margin tests give a head beyond scale: the sub-center head
# penalises its hardest non-targets too unless large-margin fine-tuning (do_lm) turns that off.
TARGET_MARGIN_ARGS = {"arc_margin_intertopk_subcenter": {"do_lm": True},
                      "ham_margin": {"curvature": 2.0}}
TARGET_MARGIN_TYPES = [(name, TARGET_MARGIN_ARGS.get(name, {})) for name in HEADS
                       if name not in WITHOUT_SCHEDULED_MARGIN]


def test_the_heads_set_apart_are_heads_of_the_table():
    assert WITHOUT_SCHEDULED_MARGIN <= set(HEADS)
    assert set(TARGET_MARGIN_ARGS) <= set(HEADS) - WITHOUT_SCHEDULED_MARGIN


def _head(project_type, **extra):
    torch.manual_seed(0)
    return get_projection({"project_type": project_type, "scale": SCALE, **extra},
                          EMBED_DIM, NUM_CLASS)


def _batch(batch=6):
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(batch, EMBED_DIM, generator=generator),
            torch.randint(0, NUM_CLASS, (batch,), generator=generator))


@pytest.mark.parametrize("project_type", ALL_TYPES)
def test_logits_shape_and_loss(project_type):
    head = _head(project_type)
    head.update(0.2)
    embeddings, labels = _batch()
    embeddings.requires_grad_(True)
    logits, loss = head.logits_and_loss(embeddings, labels, F.cross_entropy)
    assert logits.shape == (6, NUM_CLASS)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("project_type,extra", TARGET_MARGIN_TYPES,
                         ids=[name for name, _ in TARGET_MARGIN_TYPES])
def test_margin_changes_only_the_target_logit(project_type, extra):
    head = _head(project_type, **extra)
    embeddings, labels = _batch()
    head.update(0.0)
    plain = head(embeddings, labels)
    head.update(0.3)
    with_margin = head(embeddings, labels)
    target = F.one_hot(labels, NUM_CLASS).bool()
    assert torch.equal(plain[~target], with_margin[~target])
    assert (with_margin[target] < plain[target]).all()


@pytest.mark.parametrize("project_type,extra", TARGET_MARGIN_TYPES,
                         ids=[name for name, _ in TARGET_MARGIN_TYPES])
def test_update_sets_the_margin_both_ways(project_type, extra):
    head = _head(project_type, **extra)
    embeddings, labels = _batch()
    head.update(0.0)
    before = head(embeddings, labels)
    head.update(0.4)
    assert head.margin == 0.4 and head.margin_schedulable
    assert not torch.equal(before, head(embeddings, labels))
    head.update(0.0)
    torch.testing.assert_close(head(embeddings, labels), before)


@pytest.mark.parametrize("project_type", sorted(WITHOUT_SCHEDULED_MARGIN))
def test_heads_without_scheduled_margin_ignore_update(project_type):
    head = _head(project_type).eval()
    embeddings, labels = _batch()
    before = head(embeddings, labels)
    head.update(0.4)
    assert not head.margin_schedulable
    torch.testing.assert_close(head(embeddings, labels), before)


def _unit_embedding_and_classes(target_angle, other_angle):
    """Embedding e1 and two class centres at the given angles from it (class 0 is the target)."""
    embedding = torch.tensor([[1.0, 0.0]])
    weight = torch.tensor([[math.cos(target_angle), math.sin(target_angle)],
                           [math.cos(other_angle), math.sin(other_angle)]])
    return embedding, weight, torch.tensor([0])


def test_arc_margin_closed_form():
    head = get_projection({"project_type": "arc_margin", "scale": SCALE}, 2, 2)
    embedding, weight, label = _unit_embedding_and_classes(math.pi / 3, math.pi / 2)
    head.weight.data.copy_(weight)
    head.update(0.5)
    logits = head(embedding, label)
    assert logits[0, 0].item() == pytest.approx(SCALE * math.cos(math.pi / 3 + 0.5), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(0.0, abs=1e-4)  # cos(90 deg), no margin


def test_add_margin_closed_form():
    head = get_projection({"project_type": "add_margin", "scale": SCALE}, 2, 2)
    embedding, weight, label = _unit_embedding_and_classes(math.pi / 4, 0.0)
    head.weight.data.copy_(weight)
    head.update(0.2)
    logits = head(embedding, label)
    assert logits[0, 0].item() == pytest.approx(SCALE * (math.cos(math.pi / 4) - 0.2), abs=1e-4)
    assert logits[0, 1].item() == pytest.approx(SCALE, abs=1e-4)


def _poincare_distance(x, y):
    """The Poincare distance of two points of the unit ball, in float64."""
    gap = sum((a - b) ** 2 for a, b in zip(x, y))
    shrink = (1 - sum(a * a for a in x)) * (1 - sum(b * b for b in y))
    return math.acosh(1 + 2 * gap / shrink)


def test_ham_margin_closed_form_and_ball():
    head = get_projection({"project_type": "ham_margin", "scale": SCALE}, 2, 2)
    assert set(head.state_dict()) == {"weight"}
    head.weight.data.copy_(torch.tensor([[0.5, 0.0], [0.0, -0.3]]))
    head.update(0.2)
    logits = head(torch.tensor([[0.1, 0.2]]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(
        -SCALE * (_poincare_distance((0.1, 0.2), (0.5, 0.0)) + 0.2), rel=1e-5)
    assert logits[0, 1].item() == pytest.approx(
        -SCALE * _poincare_distance((0.1, 0.2), (0.0, -0.3)), rel=1e-5)
    # a point outside the ball of curvature 4 (radius 1/2) is brought to its edge
    curved = get_projection({"project_type": "ham_margin", "scale": SCALE, "curvature": 4.0},
                            2, 1)
    inside = curved._into_ball(torch.tensor([[3.0, 4.0], [0.1, 0.0]]))
    assert torch.linalg.norm(inside[0]).item() == pytest.approx(0.5 * (1 - 1e-5))
    assert torch.equal(inside[1], torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError, match="curvature"):
        get_projection({"project_type": "ham_margin", "curvature": 0.0}, 2, 2)


@pytest.mark.parametrize("easy_margin", [False, True])
def test_easy_margin_only_acts_where_cosine_is_positive(easy_margin):
    head = get_projection({"project_type": "arc_margin", "scale": SCALE,
                           "easy_margin": easy_margin}, 2, 2)
    margin = 0.5
    head.update(margin)
    # Target at 120 degrees: cos < 0, and theta + m < pi, so cos(theta + m) still applies
    # without easy_margin.
    embedding, weight, label = _unit_embedding_and_classes(2 * math.pi / 3, 0.0)
    head.weight.data.copy_(weight)
    obtuse = head(embedding, label)[0, 0].item()
    expected = math.cos(2 * math.pi / 3) if easy_margin else math.cos(2 * math.pi / 3 + margin)
    assert obtuse == pytest.approx(SCALE * expected, abs=1e-4)
    # Target at 30 degrees: the margin applies in both modes.
    embedding, weight, label = _unit_embedding_and_classes(math.pi / 6, 0.0)
    head.weight.data.copy_(weight)
    acute = head(embedding, label)[0, 0].item()
    assert acute == pytest.approx(SCALE * math.cos(math.pi / 6 + margin), abs=1e-4)


def test_arc_margin_beyond_pi_minus_m_stays_monotonic():
    head = get_projection({"project_type": "arc_margin", "scale": 1.0}, 2, 2)
    margin = 0.5
    head.update(margin)
    # theta + m > pi: cos(theta + m) would rise again; the head continues linearly instead.
    theta = math.pi - 0.2
    embedding, weight, label = _unit_embedding_and_classes(theta, 0.0)
    head.weight.data.copy_(weight)
    logit = head(embedding, label)[0, 0].item()
    assert logit == pytest.approx(math.cos(theta) - (1 + math.cos(math.pi - margin)), abs=1e-5)
    assert logit < math.cos(math.pi)  # below every value reached before the threshold


def test_subcenter_takes_the_closest_subcentre_and_penalises_hard_negatives():
    head = get_projection({"project_type": "arc_margin_intertopk_subcenter", "scale": 1.0,
                           "K": 3, "k_top": 1, "mp": 0.06}, 2, 3)
    # Rows are class-major: class c owns rows 3c..3c+2.
    angles = [2.0, 0.0, 2.5,      # class 0: one sub-centre on the embedding
              0.3, 3.0, 3.0,      # class 1: the hardest negative (30 degrees-ish away)
              1.5, 1.5, 1.5]      # class 2: far
    head.weight.data.copy_(torch.tensor([[math.cos(a), math.sin(a)] for a in angles]))
    embedding, label = torch.tensor([[1.0, 0.0]]), torch.tensor([0])
    head.update(0.0)
    logits = head(embedding, label)[0]
    assert logits[0].item() == pytest.approx(1.0, abs=1e-5)
    assert logits[1].item() == pytest.approx(math.cos(0.3), abs=1e-5)
    head.update(0.2)  # the hard-negative penalty follows the margin: 0.06 * 0.2 / 0.2
    logits = head(embedding, label)[0]
    assert logits[0].item() == pytest.approx(math.cos(0.2), abs=1e-5)
    assert logits[1].item() == pytest.approx(math.cos(0.3 - 0.06), abs=1e-5)
    assert logits[2].item() == pytest.approx(math.cos(1.5), abs=1e-5)


def test_subcenter_large_margin_finetuning_drops_the_penalty():
    head = get_projection({"project_type": "arc_margin_intertopk_subcenter", "do_lm": True},
                          4, 5)
    assert head.k_top == 0 and head.mp == 0.0


def test_sphereface2_loss_closed_form():
    head = get_projection({"project_type": "sphereface2", "scale": SCALE, "t": 3,
                           "lanbuda": 0.7, "margin_type": "C"}, 2, 2)
    embedding, weight, label = _unit_embedding_and_classes(0.0, math.pi / 2)
    head.weight.data.copy_(weight)
    head.update(0.2)
    logits, loss = head.logits_and_loss(embedding, label, criterion=None)
    # g(1) = 1 for the target, g(0) = 2 * 0.5**3 - 1 = -0.75 for the other class.
    positive = SCALE * (1.0 - 0.2)
    negative = SCALE * (-0.75 + 0.2)
    expected = 0.7 * math.log1p(math.exp(-positive)) + 0.3 * math.log1p(math.exp(negative))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    torch.testing.assert_close(logits, torch.tensor([[SCALE * 0.8, 0.0]]), atol=1e-4, rtol=0)


def test_softmax_logits_ignore_labels():
    head = _head("softmax").eval()
    embeddings, labels = _batch()
    torch.testing.assert_close(head(embeddings, labels), head(embeddings, labels.flip(0)))


def test_state_dict_names_follow_wespeaker():
    assert set(_head("arc_margin").state_dict()) == {"weight"}
    assert set(_head("sphereface2").state_dict()) == {"weight", "bias"}
    assert _head("arc_margin_intertopk_subcenter", K=3).weight.shape == (3 * NUM_CLASS,
                                                                         EMBED_DIM)
    assert {k.split(".")[0] for k in _head("softmax").state_dict()} == {"trans"}


def test_bad_projection_args_are_named():
    with pytest.raises(ValueError, match="project_type"):
        get_projection({"project_type": "cosface"}, 4, 3)
    with pytest.raises(ValueError, match=r"unknown config key 'projection_args.scael'; did you "
                                         r"mean 'scale'\? \(project_type arc_margin takes "
                                         r"scale, margin, easy_margin\)$"):
        get_projection({"project_type": "arc_margin", "scael": 30.0}, 4, 3)
