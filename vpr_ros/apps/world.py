"""Render the 3-D corridor world (vpr_ros.world) and export it for ``evaluate`` and ``make_bag``.

    python -m vpr_ros.apps.world --export DIR [--laps 2 --lens plumb_bob --lookalikes 2 --seed 7]

The folder holds colour and depth images, exact stamps, ground-truth camera and body poses,
drifting odometry, camera info with distortion, the camera extrinsics and the same-place
matrix (see vpr_ros/world/export.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..world.camera import LENSES
from ..world.export import export_world_sequence, stamp_text
from ..world.sequence import make_world_sequence
from ..world.trajectory import OdometryDrift


def _parse(argv):
    d = OdometryDrift()
    p = argparse.ArgumentParser(
        prog="python -m vpr_ros.apps.world",
        description="Render the 3-D corridor ring sequence and export it for `evaluate` / `make_bag`.",
    )
    p.add_argument("--export", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--laps", type=float, default=2.0, help="times around the ring (default 2)")
    p.add_argument("--lens", choices=LENSES, default="", help="distortion model (default: rectified)")
    p.add_argument("--lookalikes", type=int, default=0, help="pairs of near-identical places (default 0)")
    p.add_argument("--alcoves", type=int, default=2, help="recesses in the outer wall (default 2)")
    p.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"))
    p.add_argument("--frame-period", type=float, default=0.5, help="seconds between frames (default 0.5)")
    p.add_argument("--speed", type=float, default=1.4, help="walking speed m/s (default 1.4)")
    p.add_argument("--pitch", type=float, default=0.0, help="camera pitch in degrees, + down (default 0)")
    p.add_argument("--texels-per-m", type=float, default=200.0, help="wall texture resolution (max 200)")
    p.add_argument("--radius", type=float, default=3.0, help="same-place radius in metres (default 3)")
    p.add_argument("--max-angle", type=float, default=45.0, help="same-place view angle (default 45 deg)")
    p.add_argument("--noise", type=float, default=0.0, help="image noise std in grey levels (default 0)")
    p.add_argument(
        "--yaw-drift", type=float, default=d.yaw_bias_deg_per_m, help="odometry yaw bias, deg per metre"
    )
    p.add_argument("--scale-drift", type=float, default=d.scale_error, help="odometry scale error (fraction)")
    p.add_argument("--no-drift", action="store_true", help="odometry = ground truth")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    if args.no_drift:
        drift = OdometryDrift.none()
    else:
        drift = OdometryDrift(args.yaw_drift, args.scale_drift, seed=args.seed)
    t0 = time.perf_counter()
    seq = make_world_sequence(
        laps=args.laps,
        frame_period_s=args.frame_period,
        speed_mps=args.speed,
        image_size=tuple(args.size),
        lens=args.lens,
        lookalikes=args.lookalikes,
        odom_drift=drift,
        seed=args.seed,
        alcoves=args.alcoves,
        texels_per_m=args.texels_per_m,
        pitch_deg=args.pitch,
        same_place_radius_m=args.radius,
        same_place_max_angle_deg=args.max_angle,
        image_noise=args.noise,
        max_frames=args.max_frames,
    )
    paths = export_world_sequence(seq, args.export)
    folder = Path(args.export)
    print(
        f"exported {len(seq)} frames ({args.size[0]}x{args.size[1]}, lens {args.lens or 'rectified'}) "
        f"to {folder} in {time.perf_counter() - t0:.1f} s\n"
        f"evaluate place recognition with:\n  python -m vpr_ros.apps.evaluate --images {paths['images']} "
        f"--frame-period {args.frame_period:g} --camera-info {paths['camera_info']} "
        f"--gt-matrix {paths['same_place']} --model mobilenetv2 --output {folder / 'eval'}\n"
        f"make a bag with odometry:\n  python -m vpr_ros.apps.make_bag --images {paths['images']} "
        f"--output {folder / 'bag'} --frame-period {args.frame_period:g} "
        f"--start-time {stamp_text(seq.stamps_ns[0])} --camera-info {paths['camera_info']} "
        f"--poses {paths['odometry']} --pose-type odometry --world-frame odom\n"
        f"ground truth: {paths['poses'].name} (camera), {paths['gt_body'].name} (body), "
        f"depth/ (uint16 mm), {paths['extrinsics'].name} (base_link -> camera_optical_frame)",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
