"""Measure the re-rankers on an image sequence with a same-place matrix (default: the RTAB-Map
corridor samples): accuracy against ``none`` in the same run, and re-rank time per query.

    python -m vpr_ros.apps.compare_rerankers [--data ../shared/data/rtabmap_samples] [--json out.json]

Retrieval is the pipeline's own DescriptorStage with the MobileNetV2 baseline (the one real
pretrained network available offline), every frame a keyframe, the newest
``--exclude-recent`` keyframes never candidates. Each re-ranker then sees the same top-k
candidates through VerificationStage, keyframe by keyframe, as the re-ranker node does.

Accuracy: each query's decision is its best *passed* verification (the re-ranker's own
order); a query with none passed reports nothing. The precision-recall curve is swept over
the decision score (similarity for ``none``, inliers for geometric and key-patch, the pair
score for Pair-VPR) with ``vpr_ros.evaluation.metrics`` (recall over the queries that have a
same-place frame outside the exclusion window).

Re-rankers measured:

* ``none`` and ``geometric``: as configured by PipelineConfig.
* ``keypatch`` on MobileNetV2 tokens (``--keypatch-mobilenet``): the stride-16 bottleneck
  feature map (``features[:14]``, 96 channels, signed, no ReLU) at the image's own size
  stands in for patch tokens, all patches key patches. MobileNetV2 exposes no patch tokens
  through the registry; this adapter exists only here, to run key-patch RANSAC on real
  weights. It is not TransVPR's method with TransVPR's features.
* ``pairvpr`` and ``keypatch`` with TransVPR: no real weights exist on this machine, so only
  their speed is measured, with random weights, on features of the real images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import PipelineConfig
from ..evaluation.ground_truth import read_same_place_matrix
from ..evaluation.metrics import average_precision, pr_curve, queries_with_loop, recall_at_100_precision
from ..evaluation.sources import ImageFolderSource
from ..pipeline import DescriptorStage, VerificationStage, shareable_model
from ..rerank import keyframe_local_features, needed_local_features
from ..types import Candidate, Frame, Keyframe

DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rtabmap_samples"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_sequence(folder: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """RGB images of ``folder/images`` in natural order and ``folder/ground_truth.bmp``."""
    images = [frame.image for frame in ImageFolderSource(folder / "images")]
    same_place = read_same_place_matrix(folder / "ground_truth.bmp")
    if same_place.shape != (len(images), len(images)):
        raise ValueError(f"{folder}/ground_truth.bmp must be {len(images)}x{len(images)}")
    return images, same_place


def retrieve(images, config: PipelineConfig) -> tuple[list[Keyframe], list[list[Candidate]], float]:
    """Keyframes (id = frame index) and their top-k candidates, through the DescriptorStage."""
    stage = DescriptorStage(config)
    keyframes, candidates, encode_ms = [], [], []
    for i, image in enumerate(images):
        result, reason = stage.process(Frame(float(i), image))
        if result is None or result.keyframe.id != i:
            raise RuntimeError(f"frame {i} did not become keyframe {i} ({reason})")
        keyframes.append(result.keyframe)
        candidates.append(result.candidates)
        encode_ms.append(result.encode_ms)
    return keyframes, candidates, statistics.median(encode_ms)


def run_reranker(config: PipelineConfig, keyframes, candidates, k: int, local=None) -> dict:
    """Every keyframe through a fresh VerificationStage, in order; per-query decision and times.

    ``local``: per-keyframe local features to attach (adapters); otherwise the keyframes' own.
    """
    stage = VerificationStage(config)
    reranker = stage.reranker
    decisions, add_ms, verify_ms = [], [], []
    for kf, cands in zip(keyframes, candidates, strict=True):
        if local is not None:
            kf = replace(kf, local_features=local[kf.id])
        cands = cands[:k]
        t0 = time.perf_counter()
        reranker.add_keyframe(kf)
        t1 = time.perf_counter()
        results = reranker.verify(kf, cands)
        t2 = time.perf_counter()
        add_ms.append((t1 - t0) * 1e3)
        if len(cands) == k:  # time only full top-k lists
            verify_ms.append((t2 - t1) * 1e3)
        best = next((v for v in results if v.passed), None)
        if best is not None:
            decisions.append((kf.id, best.candidate.id, float(best.score)))
    return {
        "decisions": decisions,
        "add_keyframe_ms": statistics.median(add_ms),
        "verify_ms": statistics.median(verify_ms) if verify_ms else None,
        "timed_queries": len(verify_ms),
    }


def accuracy(decisions, same_place: np.ndarray, positives: set[int]) -> dict:
    scores = [s for _, _, s in decisions]
    correct = [bool(same_place[q, m]) for q, m, _ in decisions]
    recallable = [q in positives for q, _, _ in decisions]
    curve = pr_curve(scores, correct, len(positives), recallable)
    return {
        "recall_at_100p": recall_at_100_precision(curve),
        "average_precision": average_precision(curve),
        "queries_reported": len(decisions),
        "correct_reported": int(sum(correct)),
    }


def mobilenet_patch_tokens(images, weights: str | None = None) -> tuple[dict[int, dict], float]:
    """Adapter: MobileNetV2 stride-16 bottleneck features as patch tokens (see module doc)."""
    import torch

    from ..encoder import preprocess
    from ..weights import load_model

    model, spec = load_model("mobilenetv2", weights, device="cpu")
    trunk = model.features[:14]
    out, times = {}, []
    for i, image in enumerate(images):
        h, w = (s // 16 * 16 for s in image.shape[:2])
        x = torch.from_numpy(preprocess(image, spec.input, (h, w)))[None]
        t0 = time.perf_counter()
        with torch.inference_mode():
            fmap = trunk(x)[0]  # [96, h/16, w/16]
        times.append((time.perf_counter() - t0) * 1e3)
        tokens = fmap.flatten(1).T.contiguous().numpy()
        out[i] = keyframe_local_features(
            ["patch_tokens"], {"patch_tokens": tokens[None], "grid": np.array(fmap.shape[1:])}, (h, w)
        )
    return out, statistics.median(times)


def random_weight_speed(model: str, reranker: str, images, ks, queries: int, config: PipelineConfig) -> dict:
    """Re-rank time per query with a random-weight model on features of real images."""
    from ..encoder import Encoder

    encoder = Encoder(model, device="cpu", random_init=True)
    names = needed_local_features(reranker, encoder.spec.local_features)
    n = max(ks) + queries
    keyframes, extract_ms = [], []
    for i, image in enumerate(images[:n]):
        t0 = time.perf_counter()
        outputs = encoder.extract([image])
        extract_ms.append((time.perf_counter() - t0) * 1e3)
        local = keyframe_local_features(names, outputs, encoder.input_size)
        keyframes.append(Keyframe(i, float(i), outputs["global"][0], local_features=local))
    cfg = replace(config, model=model, reranker=reranker)
    stage = VerificationStage(cfg, model=shareable_model(cfg, encoder))
    for kf in keyframes:
        stage.reranker.add_keyframe(kf)
    times = {}
    for k in ks:
        runs = []
        for q in range(max(ks), max(ks) + queries):
            cands = [Candidate(j, float(j), 0.0) for j in range(k)]
            t0 = time.perf_counter()
            stage.reranker.verify(keyframes[q], cands)
            runs.append((time.perf_counter() - t0) * 1e3)
        times[k] = {"median_ms": statistics.median(runs), "runs": len(runs)}
        _log(f"  {reranker} ({model}, random weights) k={k}: {times[k]['median_ms']:.0f} ms/query")
    per_kf = sum(np.asarray(v).nbytes for v in keyframes[0].local_features.values())
    return {
        "model": model,
        "weights": "random (no real checkpoint on this machine): speed only",
        "local_features": {k: list(np.shape(v)) for k, v in keyframes[0].local_features.items()},
        "local_feature_bytes_per_keyframe_fp32": int(per_kf),
        "extract_ms_per_image": statistics.median(extract_ms),
        "verify_ms": {str(k): v for k, v in times.items()},
    }


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with images/ and ground_truth.bmp"
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 25], help="top-k sizes to re-rank")
    parser.add_argument("--exclude-recent", type=int, default=20, help="newest keyframes never candidates")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--random-queries", type=int, default=3, help="queries per k, random-weight speed")
    parser.add_argument("--pairvpr-queries", type=int, default=1, help="the same for Pair-VPR (~3 s a pair)")
    parser.add_argument("--skip-random", action="store_true", help="skip the random-weight speed runs")
    parser.add_argument(
        "--skip-pairvpr", action="store_true", help="skip the Pair-VPR speed run (slow on CPU)"
    )
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    ks = sorted(set(args.ks))
    images, same_place = load_sequence(args.data)
    config = PipelineConfig(
        model="mobilenetv2",
        device="cpu",
        keyframe_min_period=0.0,
        top_k=max(ks),
        exclude_recent_keyframes=args.exclude_recent,
        exclude_recent_seconds=0.0,
        verification_image_width=max(im.shape[1] for im in images),  # verify at full size
    )
    _log(f"{len(images)} images from {args.data}; MobileNetV2 retrieval, top-{max(ks)}")
    keyframes, candidates, encode_ms = retrieve(images, config)
    # Loops a detector can find: a same-place frame older than the exclusion window.
    positives = queries_with_loop(same_place, range(len(images)), args.exclude_recent + 1)
    report = {
        "data": str(args.data),
        "frames": len(images),
        "queries_with_loop": len(positives),
        "exclude_recent_keyframes": args.exclude_recent,
        "retrieval": {"model": "mobilenetv2", "encode_ms_per_image": encode_ms},
        "torch_threads": args.threads,
        "rerankers": {},
    }
    tokens, token_ms = mobilenet_patch_tokens(images)
    setups = [
        ("none", replace(config, reranker="none"), None),
        ("geometric", replace(config, reranker="geometric"), None),
        # The same verifier with its pass gates at RANSAC's minimum, so that the curve is swept
        # over the whole inlier score instead of starting at geometric_min_inliers.
        (
            "geometric, gates 8/8",
            config.with_values(reranker="geometric", geometric_min_matches=8, geometric_min_inliers=8),
            None,
        ),
        ("keypatch (MobileNetV2 tokens)", replace(config, reranker="keypatch"), tokens),
    ]
    for label, cfg, local in setups:
        entry = {"by_k": {}}
        if local is not None:
            entry["token_extract_ms_per_image"] = token_ms
            entry["token_shape"] = list(local[0]["patch_tokens"].shape)
        for k in ks:
            run = run_reranker(cfg, keyframes, candidates, k, local)
            acc = accuracy(run.pop("decisions"), same_place, positives)
            entry["by_k"][str(k)] = {**acc, **run}
            _log(
                f"  {label:30s} k={k:2d}: R@100P {acc['recall_at_100p']:.3f}"
                f" AP {acc['average_precision']:.3f}"
                f"  verify {_fmt(run['verify_ms'], 1)} ms/query  add {run['add_keyframe_ms']:.1f} ms"
            )
        report["rerankers"][label] = entry

    if not args.skip_random:
        report["random_weight_speed"] = {}
        runs = [("keypatch", "transvpr", args.random_queries)]
        if not args.skip_pairvpr:
            runs.append(("pairvpr", "pairvpr", args.pairvpr_queries))
        for reranker, model, queries in runs:
            _log(f"{reranker} speed with random {model} weights ...")
            report["random_weight_speed"][reranker] = random_weight_speed(
                model, reranker, images, ks, queries, config
            )

    print(_markdown(report, ks))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _markdown(report: dict, ks) -> str:
    lines = [
        f"{report['frames']} frames, {report['queries_with_loop']} queries with a loop to find; "
        f"MobileNetV2 retrieval {report['retrieval']['encode_ms_per_image']:.1f} ms/image; "
        f"torch threads {report['torch_threads']}",
        "",
        "| re-ranker | k | recall@100%P | AP | reported (correct) | re-rank ms/query (median) |",
        "|---|---|---|---|---|---|",
    ]
    for label, entry in report["rerankers"].items():
        for k in ks:
            e = entry["by_k"][str(k)]
            lines.append(
                f"| {label} | {k} | {e['recall_at_100p']:.3f} | {e['average_precision']:.3f} | "
                f"{e['queries_reported']} ({e['correct_reported']}) | {_fmt(e['verify_ms'], 1)} "
                f"(+{e['add_keyframe_ms']:.1f} per keyframe) |"
            )
    speed = report.get("random_weight_speed")
    if speed:
        lines += ["", "| re-ranker (random weights) | " + " | ".join(f"k={k} ms/query" for k in ks) + " |"]
        lines.append("|---|" + "---|" * len(ks))
        for name, entry in speed.items():
            cells = " | ".join(f"{entry['verify_ms'][str(k)]['median_ms']:.0f}" for k in ks)
            lines.append(f"| {name} ({entry['model']}) | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
