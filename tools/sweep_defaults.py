"""Sweep the verification and decision parameters over every data set we have, to set defaults
by evidence (issue 12): 0 false loop closures on all of them, then the most recall.

    python tools/sweep_defaults.py [--features sift,xfeat] [--json out.json]

Per data set and local feature the pipeline runs once (MobileNetV2 descriptors, the geometric
verifier with its inlier gate at 0, every other default in place) and keeps each query's
verifications; each (min_inliers, consistency mode/length) combination then replays the
loop-closure decider over them, which is what the nodes would have decided with that setting.
Data sets: the RTAB-Map corridor (../shared), the 2-D facade demo sequence, the rendered 3-D
world (plumb_bob lens, look-alikes; with and without depth), an aliasing world (many look-alike
pairs), a stationary camera and a slow straight drive (no revisit: every closure is false).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vpr_ros.config import PipelineConfig, default_params_file, load_config, read_params_file  # noqa: E402
from vpr_ros.encoder import Encoder  # noqa: E402
from vpr_ros.evaluation.compare import CachingEncoder  # noqa: E402
from vpr_ros.evaluation.metrics import score_loop_closures  # noqa: E402
from vpr_ros.pipeline import LoopClosurePipeline, build_decider  # noqa: E402
from vpr_ros.types import Frame  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "rtabmap_samples"


@dataclasses.dataclass
class DataSet:
    name: str
    frames: list  # Frame
    same_place: np.ndarray
    period_s: float


def rtabmap() -> DataSet:
    from vpr_ros.evaluation.ground_truth import read_same_place_matrix
    from vpr_ros.evaluation.sources import ImageFolderSource

    frames = [Frame(f.stamp, f.image) for f in ImageFolderSource(SHARED / "images")]
    return DataSet("rtabmap_corridor", frames, read_same_place_matrix(SHARED / "ground_truth.bmp"), 1.0)


def demo_2d() -> DataSet:
    from vpr_ros.apps.demo_sequence import make_demo_sequence

    seq = make_demo_sequence()
    frames = [
        Frame(float(s), im, "cam", seq.camera_matrix) for s, im in zip(seq.stamps, seq.images, strict=True)
    ]
    return DataSet("demo_2d_facades", frames, seq.same_place, float(seq.stamps[1] - seq.stamps[0]))


def world_frames(seq, depth: bool) -> list:
    return [
        Frame(
            float(seq.stamps[i]),
            seq.images[i],
            "cam",
            seq.camera.K,
            seq.depths[i] if depth else None,
            seq.odom_body_poses[i] @ seq.base_T_camera,
            stamp_ns=int(seq.stamps_ns[i]),
            lens=seq.camera.lens,
            base_T_camera=seq.base_T_camera,
            base_frame="base_link",
        )
        for i in range(len(seq))
    ]


def worlds() -> list[DataSet]:
    from vpr_ros.world import make_world_sequence

    out = []
    seq = make_world_sequence(lens="plumb_bob", lookalikes=2)
    out.append(DataSet("world_plumb_bob_depth", world_frames(seq, True), seq.same_place, 0.5))
    out.append(DataSet("world_plumb_bob_no_depth", world_frames(seq, False), seq.same_place, 0.5))
    alias = make_world_sequence(lookalikes=8, seed=11)
    out.append(DataSet("world_aliasing_8_pairs", world_frames(alias, True), alias.same_place, 0.5))
    return out


def no_revisit() -> list[DataSet]:
    """A stationary camera (one pose, image noise) and a slow straight drive (5 cm a frame)."""
    from vpr_ros.world import Ring, base_T_camera, make_building, make_camera, render

    scene, camera = make_building(seed=7), make_camera("")
    rng = np.random.default_rng(3)
    x, y, heading, _ = Ring().at(2.0)  # the south corridor, heading along it
    body = np.eye(4)
    body[:2, 3] = x, y
    body[:2, :2] = [[np.cos(heading), -np.sin(heading)], [np.sin(heading), np.cos(heading)]]
    cam = body @ base_T_camera()
    image, depth = render(scene, camera, cam)
    still = []
    for i in range(80):
        noisy = np.clip(image + rng.normal(0, 2.0, image.shape), 0, 255).astype(np.uint8)
        still.append(Frame(i * 0.5, noisy, "cam", camera.K, depth, cam, stamp_ns=i * 500_000_000))

    def drive(step_m: float, count: int) -> list:
        frames = []
        for i in range(count):
            step = np.eye(4)
            step[0, 3] = step_m * i
            c = body @ step @ base_T_camera()
            im, z = render(scene, camera, c)
            frames.append(Frame(i * 0.5, im, "cam", camera.K, z, c, stamp_ns=i * 500_000_000))
        return frames

    def blind(frames: list) -> list:  # the same images without odometry (and without depth)
        return [dataclasses.replace(f, pose=None, depth=None) for f in frames]

    slow, straight = drive(0.05, 120), drive(0.15, 120)  # 6 m and 18 m along the corridor
    return [
        DataSet("stationary_camera", still, np.eye(80, dtype=bool), 0.5),
        DataSet("stationary_no_odometry", blind(still), np.eye(80, dtype=bool), 0.5),
        DataSet("slow_straight_drive", slow, np.eye(120, dtype=bool), 0.5),
        DataSet("slow_drive_no_odometry", blind(slow), np.eye(120, dtype=bool), 0.5),
        DataSet("straight_drive_no_odometry", blind(straight), np.eye(120, dtype=bool), 0.5),
    ]


def collect(data: DataSet, config: PipelineConfig, encoder) -> list:
    """[(keyframe id, stamp ns, verifications)] with the inlier gate off, and frame per keyframe."""
    pipeline = LoopClosurePipeline(config.with_values(geometric_min_inliers=0), encoder)
    steps, frame_of = [], {}
    for i, frame in enumerate(data.frames):
        step = pipeline.process(frame)
        if step.retrieval is None:
            continue
        kf = step.retrieval.keyframe
        frame_of[kf.id] = i
        steps.append((kf.id, kf.stamp_ns, step.verifications))
    return steps, frame_of


def decide(steps, frame_of, config, min_inliers: int, mode: str, length: int) -> list:
    # The nodes' own decider (build_decider), with this row's consistency setting.
    decider = build_decider(
        config.with_values(consistency_mode=mode, consistency=length, sequence_length=length)
    )
    closures = []
    for kf_id, stamp_ns, verifications in steps:
        gated = [dataclasses.replace(v, passed=v.passed and v.inliers >= min_inliers) for v in verifications]
        decision = decider.decide(kf_id, stamp_ns, gated)
        for d in [decision, *decision.confirmed]:
            if d.accepted and d.best is not None:
                closures.append((frame_of[d.query_id], frame_of[d.best.candidate.id]))
    return closures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="sift", help="comma list of geometric_feature values")
    p.add_argument("--min-inliers", default="12,16,20,25,30,40,60")
    p.add_argument("--neighbours", default="1,2,3", help="consistency values (neighbours mode)")
    p.add_argument("--sequence", default="2,3,4", help="sequence_length values (sequence mode)")
    p.add_argument("--estimator", default="usac", help="geometric_estimator: usac or poselib")
    p.add_argument("--json", help="write every row here")
    args = p.parse_args(argv)
    base = load_config(**read_params_file(default_params_file("mobilenetv2")))
    encoder = CachingEncoder(Encoder("mobilenetv2", device="cpu"))
    datasets = [rtabmap(), demo_2d(), *worlds(), *no_revisit()]
    settings = [
        (mode, int(length))
        for mode, lengths in (("neighbours", args.neighbours), ("sequence", args.sequence))
        for length in lengths.split(",")
    ]
    rows = []
    for feature in args.features.split(","):
        config = base.with_values(geometric_feature=feature, geometric_estimator=args.estimator)
        for data in datasets:
            t0 = time.monotonic()
            steps, frame_of = collect(data, config, encoder)
            ms = (time.monotonic() - t0) * 1e3 / max(len(steps), 1)
            min_gap = max(
                config.exclude_recent_keyframes + 1, int(config.exclude_recent_seconds / data.period_s) + 1
            )
            for t, (mode, length) in itertools.product(map(int, args.min_inliers.split(",")), settings):
                closures = decide(steps, frame_of, config, t, mode, length)
                s = score_loop_closures(closures, data.same_place, min_gap=min_gap)
                rows.append(
                    dict(
                        feature=feature,
                        data=data.name,
                        min_inliers=t,
                        mode=mode,
                        length=length,
                        closures=s["num_closures"],
                        false=s["false_positives"],
                        recall=s["recall"],
                        ms_per_keyframe=ms,
                    )
                )
            print(f"{feature} {data.name}: {len(steps)} keyframes, {ms:.0f} ms per keyframe", file=sys.stderr)
    _print(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _print(rows) -> None:
    """Per setting: false closures summed over the data sets and recall on each."""
    fields = ("feature", "min_inliers", "mode", "length")
    keys = sorted({tuple(r[f] for f in fields) for r in rows})
    names = list(dict.fromkeys(r["data"] for r in rows))
    print("feature min_inl mode       len  false  " + "  ".join(n[:14].rjust(14) for n in names))
    for key in keys:
        sel = {r["data"]: r for r in rows if tuple(r[f] for f in fields) == key}
        false = sum(r["false"] for r in sel.values())
        cells = []
        for n in names:
            r = sel[n]
            rec = "  -  " if r["recall"] is None else f"{r['recall']:.3f}"
            cells.append(f"{rec}/{r['false']}".rjust(14))
        print(f"{key[0]:7s} {key[1]:7d} {key[2]:10s} {key[3]:3d} {false:6d}  " + "  ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
