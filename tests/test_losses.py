"""The losses of METHOD.md "Losses", pinned by behaviour: hard samples weigh more, easy ones
nearly nothing, the two classes are balanced, an absent class is zero, γ = 0 is the plain
double-margin contrastive loss, and λ = 0 leaves BCE + Dice."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcl_core.losses import (LossConfig, bce_loss, deepcl_loss, dice_loss, hard_sample_contrastive_loss,
                                labels_at)

CONFIG = LossConfig()  # m_u = 0.3, m_c = 1.2, γ = 2
M_U, M_C = CONFIG.margin_unchanged, CONFIG.margin_changed


def gradients(distances, labels, config=CONFIG):
    d = torch.tensor(distances, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels, dtype=torch.float64)
    loss = hard_sample_contrastive_loss(d, y, config)
    loss.backward()
    return loss.detach(), d.grad


def plain_double_margin(distances, labels):
    """The γ = 0 loss by hand: mean over unchanged of max(0, d − m_u)² plus mean over changed of
    max(0, m_c − d)²."""
    d, y = np.asarray(distances, float), np.asarray(labels, float)
    total = 0.0
    if (y == 0).any():
        total += np.mean(np.maximum(0, d[y == 0] - M_U) ** 2)
    if (y == 1).any():
        total += np.mean(np.maximum(0, M_C - d[y == 1]) ** 2)
    return total


def test_hard_unchanged_pixel_gets_a_larger_gradient_than_an_easy_one():
    # Both unchanged: 1.0 is far beyond m_u (hard), 0.4 only just beyond it (easy).
    _, grad = gradients([1.0, 0.4], [0, 0])
    _, plain = gradients([1.0, 0.4], [0, 0], LossConfig(gamma=0))
    assert grad[0] > grad[1] > 0  # both pull the pair closer (loss falls as d falls)
    # Focusing weights hard samples up relative to easy ones, beyond what the hinge alone does.
    assert grad[0] / grad[1] > 2 * (plain[0] / plain[1])


def test_hard_changed_pixel_gets_a_larger_gradient_than_an_easy_one():
    # Both changed: 0.1 is far inside m_c (hard), 1.0 nearly at it (easy).
    _, grad = gradients([0.1, 1.0], [1, 1])
    _, plain = gradients([0.1, 1.0], [1, 1], LossConfig(gamma=0))
    assert grad[0] < grad[1] < 0  # both push the pair apart
    assert abs(grad[0] / grad[1]) > 2 * abs(plain[0] / plain[1])


def test_easy_samples_get_near_zero_or_zero_gradient():
    # Satisfied margins: exactly zero. Barely violated margins: near zero.
    loss, grad = gradients([0.1, 0.29, 1.3, 1.9], [0, 0, 1, 1])
    assert loss.item() == 0.0
    assert torch.all(grad == 0)
    _, grad = gradients([0.31, 1.19, 1.5, 0.1], [0, 1, 0, 1])
    assert abs(grad[0]) < 1e-3 and abs(grad[1]) < 1e-3
    assert abs(grad[2]) > 50 * abs(grad[0]) and abs(grad[3]) > 50 * abs(grad[1])


def test_weights_are_detached_from_the_graph():
    # With w detached, dL/dd = 2 w (d − m_u) / n exactly, with no term from dw/dd.
    d = 0.9
    _, grad = gradients([d], [0])
    w = (d / M_C) ** 2
    assert grad[0].item() == pytest.approx(2 * w * (d - M_U))


def test_class_means_are_balanced():
    distances, labels = [0.5, 0.8, 0.2, 0.6], [0, 0, 0, 1]
    base, _ = gradients(distances, labels)
    # Ten times as many unchanged pixels with the same distances: same loss.
    many, _ = gradients(distances[:3] * 10 + [0.6], labels[:3] * 10 + [1])
    assert many.item() == pytest.approx(base.item())
    # The single changed pixel counts as much as all unchanged ones together.
    unchanged_only, _ = gradients(distances[:3] * 10, labels[:3] * 10)
    changed_only, _ = gradients([0.6], [1])
    assert base.item() == pytest.approx(unchanged_only.item() + changed_only.item())
    assert changed_only.item() > 0.1 * base.item()


def test_an_absent_class_contributes_zero():
    unchanged = [0.5, 0.9, 0.1]
    loss, _ = gradients(unchanged, [0, 0, 0])
    assert loss.item() == pytest.approx(plain_double_margin_weighted(unchanged, [0, 0, 0]))
    loss, grad = gradients([0.2, 0.7], [1, 1])
    assert loss.item() == pytest.approx(plain_double_margin_weighted([0.2, 0.7], [1, 1]))
    # No valid pixel at all: exactly zero, never NaN from 0/0.
    d = torch.tensor([0.5, 0.9], requires_grad=True)
    loss = hard_sample_contrastive_loss(d, torch.tensor([0.0, 1.0]), CONFIG, valid=torch.zeros(2))
    assert loss.item() == 0.0


def plain_double_margin_weighted(distances, labels):
    """The γ = 2 loss by hand, for cross-checking the implementation on small inputs."""
    d, y = np.asarray(distances, float), np.asarray(labels, float)
    total = 0.0
    if (y == 0).any():
        du = d[y == 0]
        total += np.mean(np.clip(du / M_C, 0, 1) ** 2 * np.maximum(0, du - M_U) ** 2)
    if (y == 1).any():
        dc = d[y == 1]
        total += np.mean(np.clip(1 - dc / M_C, 0, 1) ** 2 * np.maximum(0, M_C - dc) ** 2)
    return total


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 2.0), st.integers(0, 1)), min_size=1, max_size=30))
def test_gamma_zero_is_the_plain_double_margin_loss(pixels):
    distances, labels = zip(*pixels)
    loss, _ = gradients(list(distances), list(labels), LossConfig(gamma=0))
    assert loss.item() == pytest.approx(plain_double_margin(distances, labels), abs=1e-9)
    loss, _ = gradients(list(distances), list(labels))
    assert loss.item() == pytest.approx(plain_double_margin_weighted(distances, labels), abs=1e-9)


def test_invalid_pixels_are_ignored():
    d = torch.tensor([0.5, 1.9, 0.1])
    y = torch.tensor([0.0, 0.0, 1.0])
    with_mask = hard_sample_contrastive_loss(d, y, CONFIG, valid=torch.tensor([1.0, 0.0, 1.0]))
    without = hard_sample_contrastive_loss(d[[0, 2]], y[[0, 2]], CONFIG)
    assert with_mask.item() == pytest.approx(without.item())


def test_labels_at_keeps_a_single_changed_pixel_when_downsampling():
    labels = torch.zeros(1, 1, 32, 32)
    labels[0, 0, 17, 5] = 1
    small = labels_at(labels, torch.Size([4, 4]))
    assert small.shape == (1, 1, 4, 4)
    assert small.sum().item() == 1 and small[0, 0, 2, 0].item() == 1


def test_deepcl_loss_without_hscl_is_bce_plus_dice():
    torch.manual_seed(1)
    logit = torch.randn(2, 1, 32, 32)
    labels = (torch.rand(2, 1, 32, 32) > 0.8).float()
    distances = {8: torch.rand(2, 1, 4, 4) * 2, 16: torch.rand(2, 1, 2, 2) * 2}
    terms = deepcl_loss(logit, distances, labels, LossConfig(hscl_weight=0))
    bce = F.binary_cross_entropy_with_logits(logit, labels)
    p = torch.sigmoid(logit)
    dice = 1 - (2 * (p * labels).sum() + 1) / (p.sum() + labels.sum() + 1)
    assert terms["total"].item() == pytest.approx((bce + dice).item(), rel=1e-6)
    assert terms["bce"].item() == pytest.approx(bce.item(), rel=1e-6)
    assert terms["dice"].item() == pytest.approx(dice.item(), rel=1e-6)


def test_deepcl_loss_adds_hscl_over_every_scale():
    torch.manual_seed(2)
    logit = torch.randn(1, 1, 32, 32)
    labels = torch.zeros(1, 1, 32, 32)
    labels[..., 8:16, 8:16] = 1
    distances = {8: torch.rand(1, 1, 4, 4) * 2, 16: torch.rand(1, 1, 2, 2) * 2}
    config = LossConfig(hscl_weight=0.5)
    terms = deepcl_loss(logit, distances, labels, config)
    expected = sum(hard_sample_contrastive_loss(d, labels_at(labels, d.shape[-2:]), config) for d in distances.values())
    assert terms["hscl"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["total"].item() == pytest.approx((terms["bce"] + terms["dice"] + 0.5 * expected).item(), rel=1e-6)


def test_bce_and_dice_respect_the_valid_mask():
    logit = torch.tensor([[[[4.0, -4.0, 9.0]]]])
    labels = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    valid = torch.tensor([[[[1.0, 1.0, 0.0]]]])  # the badly wrong third pixel is nodata
    assert bce_loss(logit, labels, valid).item() == pytest.approx(
        bce_loss(logit[..., :2], labels[..., :2]).item())
    assert dice_loss(logit, labels, valid).item() == pytest.approx(
        dice_loss(logit[..., :2], labels[..., :2]).item())
    assert dice_loss(torch.full((1, 1, 4, 4), 20.0), torch.ones(1, 1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
