"""TransVPR key-patch matching: the deterministic part of the official re-ranker (before RANSAC).

Follows ``match_batch_tensor`` in the official ``test_msls.py`` (docs/models.md §5.5 step 4).
"""

from __future__ import annotations

import numpy as np

KEY_PATCH_THRESHOLD = 0.02


def mutual_nn_matches(
    local_q, local_db, attn_q, attn_db, threshold: float = KEY_PATCH_THRESHOLD
) -> np.ndarray:
    """Mutual nearest-neighbour patch pairs between a query and one database image.

    ``local_*`` are [N, D] patch tokens (raw dot-product similarity, no normalisation) and
    ``attn_*`` the fused key-patch saliency [N]. Patches with saliency <= ``threshold`` get their
    similarities set to 0 rather than dropped, as the official code does: a zero can still win
    an arg-max against negative similarities, so removing them would change the matches.

    Returns int64 [M, 2] rows of [query patch, database patch], ascending query index.
    """
    local_q, local_db = np.asarray(local_q, np.float32), np.asarray(local_db, np.float32)
    sim = local_db @ local_q.T  # [N_db, N_q]
    sim[:, np.asarray(attn_q) <= threshold] = 0
    sim[np.asarray(attn_db) <= threshold, :] = 0
    best_db = sim.argmax(axis=0)  # for each query patch (first index on ties, like torch)
    best_q = sim.argmax(axis=1)  # for each database patch
    query_idx = np.flatnonzero(best_q[best_db] == np.arange(sim.shape[1]))
    return np.stack([query_idx, best_db[query_idx]], axis=1).astype(np.int64)
