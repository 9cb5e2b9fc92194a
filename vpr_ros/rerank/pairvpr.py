"""Pair-VPR pair-classifier re-ranking (docs/models.md §4.5).

Each (query, candidate) pair is scored in both orders by the Pair-VPR decoder and the raw
logits are summed: score = s(query, candidate) + s(candidate, query), higher = more likely
the same place. Candidates are scored in chunks of ``batch_size`` so that memory stays
bounded (one pair needs ~6.5 MB of decoder activations in fp32; the official code scores
all 100 at once).

The re-ranker never runs the encoder: the dense patch features ("dense", 529x768 for ViT-B)
come with each keyframe from the descriptor stage, which must therefore run ``model:=pairvpr``,
and they are kept in the FeatureStore so a map keyframe is never re-encoded. A keyframe
without them is rejected with a reason. The decoder weights are loaded here with the same
checkpoint as the descriptor model (``load_model('pairvpr', weights)``); an in-process
pipeline may pass the descriptor model in instead of loading a second copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..feature_store import FeatureStore
from ..types import Candidate, Keyframe, Verification
from .base import RerankerContext, RerankerSpec, param, sort_verifications

if TYPE_CHECKING:  # torch is imported where it is used: PipelineConfig() reads PairVPRParams
    import torch

DENSE = "dense"
_NO_DENSE = "has no Pair-VPR 'dense' features (the descriptor node must run model:=pairvpr)"


@dataclass(frozen=True)
class PairVPRParams:
    """Parameters ``pairvpr_<field>``: the one home of their defaults."""

    weights: str = param(
        "", "Pair-VPR checkpoint for the pair classifier (empty: weights when model is pairvpr, else cache)"
    )
    batch_size: int = param(16, "candidate pairs per pair-classifier batch (bounds memory)", range=(1, None))
    min_score: float = param(0.0, "minimum pair score s(q,db)+s(db,q) (raw logits) for a pass")


_DEFAULTS = PairVPRParams()


class PairVPRReranker:
    name = "pairvpr"

    def __init__(
        self,
        weights: str | None = None,
        device: str = "auto",
        batch_size: int = _DEFAULTS.batch_size,
        min_score: float = _DEFAULTS.min_score,
        feature_store: FeatureStore | None = None,
        model: torch.nn.Module | None = None,
        random_init: bool = False,
        model_name: str = "pairvpr",
    ):
        """``model``: an already loaded Pair-VPR model (shared with the descriptor stage, or a
        test model); otherwise registry model ``model_name`` (pairvpr = ViT-B, pairvpr_vitl,
        pairvpr_vitg: the descriptor node's) is loaded with the checkpoint ``weights``, resolved
        like the descriptor model's (explicit path, cache folder, official URL). ``random_init``
        is for speed measurements only."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if model is None:
            from ..encoder import resolve_device
            from ..models.registry import get_model_spec
            from ..weights import load_model, resolve_weights

            dev = resolve_device(device)
            if not random_init:  # a missing checkpoint fails before 200M parameters are built
                weights = resolve_weights(get_model_spec(model_name), weights or None)
            model, _ = load_model(model_name, weights, device=str(dev), random_init=random_init)
        self.model = model.eval()
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        # The decoder's position table fixes the token count (23x23 at 322x322).
        self.num_tokens = int(model.dec_pos_embed.shape[0])
        self.feature_dim = int(model.decoder_embed.in_features)
        self.batch_size = int(batch_size)
        self.min_score = float(min_score)
        self.store = feature_store if feature_store is not None else FeatureStore()

    def _check(self, dense) -> str:
        """Why ``dense`` cannot be scored ('' when it can)."""
        if dense is None:
            return _NO_DENSE
        shape = tuple(np.shape(dense))
        if shape != (self.num_tokens, self.feature_dim):
            return (
                f"has 'dense' features of shape {shape}, the pair classifier needs "
                f"{(self.num_tokens, self.feature_dim)} (Pair-VPR at its fixed 322x322 input)"
            )
        return ""

    def add_keyframe(self, keyframe: Keyframe) -> None:
        dense = keyframe.local_features.get(DENSE)
        if not self._check(dense):
            self.store.put(keyframe.id, {DENSE: dense})

    def reset(self) -> None:
        self.store.clear()

    def _tensor(self, arrays: list[np.ndarray]) -> torch.Tensor:
        import torch

        batch = np.stack([np.asarray(a, dtype=np.float32) for a in arrays])
        return torch.from_numpy(batch).to(self.device, self.dtype)

    def pair_scores(self, dense_q: np.ndarray, dense_db: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(s(q, db), s(db, q)) for every database entry, in chunks of ``batch_size``."""
        import torch

        forward, backward = [], []
        with torch.inference_mode():
            query = self._tensor([dense_q])  # batch 1: the model shares it across the chunk
            for start in range(0, len(dense_db), self.batch_size):
                chunk = self._tensor(dense_db[start : start + self.batch_size])
                forward.append(self.model.pair_logits(query, chunk).float().cpu().numpy())
                backward.append(self.model.pair_logits(chunk, query).float().cpu().numpy())
        if not forward:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(forward), np.concatenate(backward)

    def verify(self, query: Keyframe, candidates: list[Candidate]) -> list[Verification]:
        if not candidates:
            return []
        dense_q = query.local_features.get(DENSE)
        if dense_q is None and query.id in self.store:
            dense_q = self.store.get(query.id)[DENSE]
        problem = self._check(dense_q)
        if problem:
            return [Verification(c, math.nan, -1, False, f"query keyframe {problem}") for c in candidates]
        results: list[Verification] = []
        scorable, dense_db = [], []
        for cand in candidates:
            feats = self.store.get(cand.id)
            if feats is None:
                results.append(Verification(cand, math.nan, -1, False, f"candidate keyframe {_NO_DENSE}"))
            else:
                scorable.append(cand)
                dense_db.append(feats[DENSE])
        forward, backward = self.pair_scores(dense_q, dense_db)
        for cand, s_qd, s_dq in zip(scorable, forward, backward, strict=True):
            score = float(s_qd) + float(s_dq)
            parts = f"pair score {score:.3f} = s(q,db) {float(s_qd):.3f} + s(db,q) {float(s_dq):.3f}"
            if not math.isfinite(score):
                results.append(
                    Verification(cand, math.nan, -1, False, "pair classifier gave a non-finite score")
                )
            elif score >= self.min_score:
                results.append(Verification(cand, score, -1, True, parts))
            else:
                results.append(Verification(cand, score, -1, False, f"{parts} < {self.min_score:g}"))
        return sort_verifications(results)


def pair_classifier_checkpoint(params: PairVPRParams, config) -> tuple[str, str | None]:
    """(registry model, checkpoint or None) of the pair classifier for a pipeline ``config``.

    The pair classifier is the descriptor model's own decoder (ViT-B, L or G) when the
    descriptor model is a Pair-VPR one, with its checkpoint unless ``weights`` names another.
    """
    same = config.model.startswith("pairvpr")
    weights = params.weights or (config.weights if same else "")
    return (config.model if same else "pairvpr"), (weights or None)


def _build(params: PairVPRParams, context: RerankerContext) -> PairVPRReranker:
    model_name, weights = pair_classifier_checkpoint(params, context.config)
    return PairVPRReranker(
        weights=weights,
        device=context.config.device,
        batch_size=params.batch_size,
        min_score=params.min_score,
        feature_store=context.feature_store,
        model=context.model,
        model_name=model_name,
    )


def _shares_model(params: PairVPRParams, model_spec) -> bool:
    # A descriptor model with dense features is a Pair-VPR one: its decoder is the classifier,
    # unless another checkpoint was asked for.
    return DENSE in model_spec.local_features and not params.weights


SPEC = RerankerSpec(
    name="pairvpr",
    params=PairVPRParams,
    build=_build,
    description="Pair-VPR pair classifier on the model's dense features (needs model pairvpr*)",
    local_features=lambda exposed: (DENSE,) if DENSE in exposed else (),
    shares_model=_shares_model,
)
