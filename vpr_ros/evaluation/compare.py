"""Every verifier on the same input in one run (``evaluate --compare``): the model encodes each
frame once, then the whole offline pipeline runs once per re-ranker with those descriptors,
so users can pick a verifier on their own bag from one command."""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np

from ..config import PipelineConfig
from ..encoder import Encoder
from .run import RunRecord, run_offline
from .scoring import score_run


class CachingEncoder:
    """An Encoder whose outputs are remembered per image (a digest of its pixels), so a second
    pass over the same frames costs no model time. Everything else is the wrapped encoder's."""

    def __init__(self, encoder: Encoder):
        self._encoder = encoder
        self._encoded: dict[bytes, np.ndarray] = {}
        self._extracted: dict[bytes, dict] = {}

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    @staticmethod
    def _key(image: np.ndarray) -> bytes:
        image = np.ascontiguousarray(image)
        return hashlib.blake2b(image.data, digest_size=16, person=str(image.shape).encode()[:16]).digest()

    def encode(self, images) -> np.ndarray:
        keys = [self._key(im) for im in images]
        missing = [im for k, im in zip(keys, images, strict=True) if k not in self._encoded]
        if missing:
            for k, row in zip(
                [k for k in keys if k not in self._encoded], self._encoder.encode(missing), strict=True
            ):
                self._encoded[k] = row
        return np.stack([self._encoded[k] for k in keys])

    def extract(self, images) -> dict:
        outputs = [self._extracted.get(self._key(im)) for im in images]
        if any(o is None for o in outputs):
            fresh = self._encoder.extract(images)
            for i, im in enumerate(images):
                self._extracted[self._key(im)] = {name: value[i : i + 1] for name, value in fresh.items()}
            return fresh
        return {name: np.concatenate([o[name] for o in outputs]) for name in outputs[0]}


def compare_verifiers(source, config: PipelineConfig, rerankers: list[str], gt, window, progress=None):
    """(runs by name, report rows by name): the pipeline with each re-ranker in turn."""
    from ..pipeline import LoopClosurePipeline

    encoder = CachingEncoder(
        Encoder(config.model, config.weights or None, device=config.device, precision=config.precision)
    )
    runs: dict[str, RunRecord] = {}
    summary: dict[str, dict] = {}
    for name in rerankers:
        cfg = config.with_values(reranker=name)
        t0 = time.monotonic()
        run = run_offline(source, cfg, progress=progress, pipeline=LoopClosurePipeline(cfg, encoder))
        scores = score_run(run, gt, cfg, window)
        true = sum(t for _, _, t in scores.closures)
        verify = run.stage_ms.get("verify") or [0.0]
        summary[name] = {
            "closures": len(scores.closures),
            "true": true,
            "false": len(scores.closures) - true,
            "precision": scores.operating_point[0],
            "recall": scores.operating_point[1],
            "recall_at_100_precision": scores.report.get("recall_at_100_precision"),
            "average_precision": scores.report.get("average_precision"),
            "verify_ms_median": float(np.median(verify)),
            "wall_time_s": time.monotonic() - t0,
        }
        runs[name] = run
    return runs, summary


def decision_rows(runs: dict[str, RunRecord]) -> list[dict]:
    """One row per keyframe: each verifier's decision and best match (compare.csv)."""
    names = list(runs)
    first = runs[names[0]]
    rows = []
    for kf in sorted(first.keyframes, key=lambda k: k.id):
        row = {"frame": kf.frame, "keyframe": kf.id}
        for name in names:
            other = {k.frame: k for k in runs[name].keyframes}.get(kf.frame)
            frame_of = runs[name].frame_of_keyframe()
            row[f"{name}_status"] = other.status if other else ""
            best = None if other is None or other.best_match_id is None else frame_of.get(other.best_match_id)
            row[f"{name}_best_frame"] = "" if best is None else best
            row[f"{name}_score"] = (
                "" if other is None or other.best_score is None else round(other.best_score, 3)
            )
        rows.append(row)
    return rows


def write_compare_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["frame"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def print_compare(report: dict) -> None:
    if "compare" not in report:
        return
    print("verifier      closures  true  false  precision  recall  R@100%P  verify ms")
    for name, r in report["compare"].items():

        def f(v):
            return "  n/a" if v is None else f"{v:.3f}"

        print(
            f"{name:12s} {r['closures']:9d} {r['true']:5d} {r['false']:6d}  {f(r['precision']):>9s} "
            f"{f(r['recall']):>7s} {f(r['recall_at_100_precision']):>8s} {r['verify_ms_median']:9.1f}"
        )
