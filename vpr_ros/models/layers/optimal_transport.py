"""Log-domain Sinkhorn for soft feature-to-cluster assignment (SALAD and RegVPR)."""

from __future__ import annotations

import math

import torch


def log_sinkhorn(
    scores: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, num_iters: int
) -> torch.Tensor:
    """Entropic OT with regularisation 1: returns log P for ``scores`` [B, m, n].

    ``log_a`` [m] and ``log_b`` [n] are the log row and column marginals. Each iteration first
    fits the rows, then the columns, so after the last one the columns match ``log_b`` exactly.
    """
    u = torch.zeros(scores.shape[:2], dtype=scores.dtype, device=scores.device)
    v = torch.zeros((scores.shape[0], scores.shape[2]), dtype=scores.dtype, device=scores.device)
    for _ in range(num_iters):
        u = log_a - torch.logsumexp(scores + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(scores + u.unsqueeze(2), dim=1)
    return scores + u.unsqueeze(2) + v.unsqueeze(1)


def assign_with_dustbin(scores: torch.Tensor, dustbin: torch.Tensor, num_iters: int = 3) -> torch.Tensor:
    """SALAD's assignment: [B, m, n] scores -> [B, m, n] weights, dustbin row removed.

    A dustbin row with constant score takes the mass no cluster wants. Marginals are 1/(n+m) per
    cluster and per patch, (n-m)/(n+m) for the dustbin; the result is rescaled by n+m so that a
    patch spreads a total weight of 1 over clusters and dustbin. Needs n > m.
    """
    b, m, n = scores.shape
    if n <= m:
        raise ValueError(f"the dustbin assignment needs more patches ({n}) than clusters ({m})")
    augmented = torch.cat((scores, dustbin.to(scores.dtype).expand(b, 1, n)), dim=1)
    norm = -math.log(n + m)
    log_a = torch.full((m + 1,), norm, dtype=scores.dtype, device=scores.device)
    log_a[-1] = norm + math.log(n - m)
    log_b = torch.full((n,), norm, dtype=scores.dtype, device=scores.device)
    log_p = log_sinkhorn(augmented, log_a, log_b, num_iters) - norm
    return log_p.exp()[:, :m]


def assign_balanced(scores: torch.Tensor, num_iters: int = 3) -> torch.Tensor:
    """Assignment without dustbin: [B, m, n] scores -> [B, m, n] weights.

    Every patch spreads a total weight of 1 over the clusters and every cluster receives the same
    share n/m, so nothing can be thrown away.
    """
    _, m, n = scores.shape
    log_a = torch.full((m,), math.log(n / m), dtype=scores.dtype, device=scores.device)
    log_b = torch.zeros((n,), dtype=scores.dtype, device=scores.device)
    return log_sinkhorn(scores, log_a, log_b, num_iters).exp()
