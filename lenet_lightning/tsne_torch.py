"""Exact t-SNE in torch: the 2-D layout on the device the model trains on.

:func:`lenet_lightning.tsne.embed_2d` runs openTSNE on the CPU. On a GPU, the exact gradient (every
pair of points, no Barnes-Hut or FFT approximation) is a handful of ``(N, N)`` tensor operations per
iteration, which a GPU does in milliseconds for the probe sizes the callback uses (2,000 by default,
10,000 for the notebook's whole test set: 400 MB per ``(N, N)`` float32 matrix). It follows openTSNE's
recipe, so the two give maps of the same quality: affinities from the ``3 * perplexity`` nearest
neighbours with each point's bandwidth found by bisection, symmetrised; gradient descent with
momentum and per-coordinate gains; learning rate ``N / exaggeration``; a first run from PCA with
early exaggeration, a warm start from the previous layout without it.

It runs on a CPU too (the tests do), but there openTSNE is far cheaper: the work grows with ``N**2``.
No Lightning here.
"""

from __future__ import annotations

import math

import numpy as np
import torch

MAX_STEP = 5.0  # no point moves further in one iteration (openTSNE's max_step_norm): early steps can be huge


def joint_probabilities(features: torch.Tensor, perplexity: float) -> torch.Tensor:
    """The symmetric ``(N, N)`` t-SNE affinities of ``features`` ``(N, D)``, summing to 1.

    Each point's conditional distribution covers its ``min(N - 1, 3 * perplexity)`` nearest
    neighbours (squared Euclidean distances), with the Gaussian bandwidth whose entropy is
    ``log(perplexity)``, found by 64 bisection steps for all points at once.

    Example:
        >>> p = joint_probabilities(torch.randn(50, 5), perplexity=5.0)
        >>> tuple(p.shape), bool(torch.allclose(p, p.T)), round(float(p.sum()), 5)
        ((50, 50), True, 1.0)
    """
    n = features.shape[0]
    k = max(1, min(n - 1, int(3 * perplexity)))
    distances = torch.cdist(features, features).square_()  # (N, N)
    distances.fill_diagonal_(math.inf)
    neighbours_d, neighbours = distances.topk(k, dim=1, largest=False)  # (N, k), nearest first
    del distances
    shifted = neighbours_d - neighbours_d[:, :1]  # (N, k) >= 0: exp() cannot overflow
    target = math.log(perplexity)
    low = torch.zeros(n, 1, dtype=features.dtype, device=features.device)
    high = torch.full_like(low, math.inf)
    beta = torch.ones_like(low)  # (N, 1) precision of each point's Gaussian
    for _ in range(64):
        weights = torch.exp(-shifted * beta)  # (N, k)
        total = weights.sum(dim=1, keepdim=True)
        entropy = torch.log(total) + beta * (shifted * weights).sum(dim=1, keepdim=True) / total
        too_flat = entropy > target  # too many effective neighbours: narrow the Gaussian
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
        beta = torch.where(torch.isinf(high), beta * 2, (low + high) / 2)
    conditional = torch.exp(-shifted * beta)
    conditional /= conditional.sum(dim=1, keepdim=True)  # (N, k), rows sum to 1
    joint = torch.zeros(n, n, dtype=features.dtype, device=features.device)
    joint.scatter_(1, neighbours, conditional)
    joint += joint.T.clone()
    return joint / joint.sum()


def optimize(joint: torch.Tensor, start: torch.Tensor, iterations: int, *, exaggeration: float = 1.0,
             momentum: float = 0.8) -> torch.Tensor:
    """``iterations`` steps of exact t-SNE gradient descent from ``start`` ``(N, 2)``; returns the layout.

    Example:
        >>> joint = joint_probabilities(torch.randn(30, 4), perplexity=5.0)
        >>> optimize(joint, 1e-4 * torch.randn(30, 2), 20).shape
        torch.Size([30, 2])
    """
    n = joint.shape[0]
    learning_rate = max(n / exaggeration, 50.0)
    layout, update, gains = start.clone(), torch.zeros_like(start), torch.ones_like(start)
    for _ in range(iterations):
        kernel = torch.cdist(layout, layout).square_().add_(1.0).reciprocal_()  # (N, N) Student-t
        kernel.fill_diagonal_(0.0)
        attraction = joint * exaggeration - kernel / kernel.sum()  # p_ij - q_ij
        attraction *= kernel
        gradient = attraction.sum(dim=1, keepdim=True) * layout - attraction @ layout  # (N, 2)
        del kernel, attraction
        same_sign = (gradient > 0) == (update > 0)
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_(min=0.01)
        update = momentum * update - learning_rate * gains * gradient
        update *= (MAX_STEP / update.norm(dim=1, keepdim=True).clamp_(min=1e-12)).clamp_(max=1.0)
        layout = layout + update
    return layout


def embed_2d_exact(features: np.ndarray, start: np.ndarray, *, perplexity: float,
                   phases: list[tuple[int, float | None]], device: torch.device | str) -> np.ndarray:
    """Exact t-SNE of ``features`` ``(N, D)`` on ``device``, for :func:`lenet_lightning.tsne.embed_2d`.

    Args:
        features: ``(N, D)`` finite float32 features.
        start: ``(N, 2)`` layout to start from: ``embed_2d``'s, the same as openTSNE's (PCA, or the
            previous capture's layout, centred and shrunk).
        perplexity: A perplexity below ``N``.
        phases: ``(iterations, exaggeration or None)`` in order; momentum 0.5 with exaggeration, else 0.8.
        device: Where to compute.

    Returns:
        ``(N, 2)`` float32 layout, on the CPU.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
        >>> start = 1e-4 * np.random.default_rng(1).normal(size=(40, 2))
        >>> embed_2d_exact(x, start, perplexity=5.0, phases=[(10, 12.0), (10, None)], device="cpu").shape
        (40, 2)
    """
    data = torch.as_tensor(features, dtype=torch.float32).to(device)
    layout = torch.as_tensor(start, dtype=torch.float32).to(device)
    joint = joint_probabilities(data, perplexity)
    for iterations, exaggeration in phases:
        layout = optimize(joint, layout, iterations, exaggeration=exaggeration or 1.0,
                          momentum=0.5 if exaggeration else 0.8)
    result = layout.cpu().numpy().astype(np.float32)
    if not np.isfinite(result).all():
        raise RuntimeError(f"exact t-SNE of {len(result)} points diverged to non-finite coordinates")
    return result
