"""Losses of METHOD.md: the hard-sample-aware contrastive loss (HSCL) on distance maps, plus BCE
and Dice on the change logit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossConfig:
    margin_unchanged: float = 0.3  # m_u: unchanged pixels should be closer than this
    margin_changed: float = 1.2  # m_c: changed pixels should be farther than this
    gamma: float = 2.0  # focusing exponent; 0 gives the plain double-margin contrastive loss
    hscl_weight: float = 1.0  # λ; 0 trains the network as a plain segmenter (BCE + Dice)


def labels_at(labels: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Labels brought down to a distance map's size by max-pooling, so a changed pixel is never
    lost. ``labels``: (N, 1, H, W) in {0, 1}; H and W multiples of the map's size."""
    if labels.shape[-2:] == size:
        return labels
    kernel = (labels.shape[-2] // size[0], labels.shape[-1] // size[1])
    return F.max_pool2d(labels, kernel_size=kernel, stride=kernel)


def hard_sample_contrastive_loss(distance: torch.Tensor, labels: torch.Tensor,
                                 config: LossConfig = LossConfig(),
                                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """HSCL = mean over unchanged + mean over changed of w · hinge², with w = hardness^γ detached.

    ``distance`` and ``labels`` (and the optional ``valid`` mask) share one shape; a class with no
    pixel contributes zero.
    """
    m_u, m_c = config.margin_unchanged, config.margin_changed
    changed = labels > 0.5
    hinge = torch.where(changed, F.relu(m_c - distance), F.relu(distance - m_u))
    hardness = torch.where(changed, 1 - distance / m_c, distance / m_c).clamp(0, 1)
    weight = hardness.detach() ** config.gamma if config.gamma else torch.ones_like(distance)
    per_pixel = weight * hinge ** 2
    keep = torch.ones_like(changed) if valid is None else valid > 0.5
    total = distance.sum() * 0.0  # stays in the graph, so backward() works when no pixel counts
    for members in (~changed & keep, changed & keep):
        count = members.sum()
        if count > 0:
            total = total + per_pixel[members].sum() / count
    return total


def dice_loss(logit: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None,
              smooth: float = 1.0) -> torch.Tensor:
    """1 − soft Dice of the change class over the whole batch."""
    prob = torch.sigmoid(logit)
    if valid is not None:
        prob, labels = prob * valid, labels * valid
    intersection = (prob * labels).sum()
    return 1 - (2 * intersection + smooth) / (prob.sum() + labels.sum() + smooth)


def bce_loss(logit: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    per_pixel = F.binary_cross_entropy_with_logits(logit, labels, reduction="none")
    if valid is None:
        return per_pixel.mean()
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


def deepcl_loss(logit: torch.Tensor, distances: Dict[int, torch.Tensor], labels: torch.Tensor,
                config: LossConfig = LossConfig(), valid: torch.Tensor | None = None) -> Dict[str, torch.Tensor]:
    """L = BCE + Dice + λ · Σ_s HSCL(D_s). Returns each term and ``total``."""
    terms = {"bce": bce_loss(logit, labels, valid), "dice": dice_loss(logit, labels, valid)}
    hscl = logit.new_zeros(())
    if config.hscl_weight:
        for distance in distances.values():
            size = distance.shape[-2:]
            small_valid = None if valid is None else -labels_at(-valid, size)  # min-pool: any invalid → invalid
            hscl = hscl + hard_sample_contrastive_loss(distance, labels_at(labels, size), config, small_valid)
    terms["hscl"] = hscl
    terms["total"] = terms["bce"] + terms["dice"] + config.hscl_weight * hscl
    return terms
