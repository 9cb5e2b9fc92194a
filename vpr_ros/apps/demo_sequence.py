"""A synthetic camera sequence with real revisits and exact ground truth, made offline.

The world is a closed corridor of textured facades ("places"). The camera walks around it
``laps`` times; every view is a perspective-jittered, re-lit, noisy crop of the corridor, so
a revisit shows the same surfaces from a slightly different viewpoint, as on a robot.
``distractors`` adds look-alike places (same palette and layout style, different details) to
test perceptual aliasing. Positions are known, so the same-place ground truth is exact.

``python -m vpr_ros.apps.demo_sequence --export DIR`` writes a sequence (images, ground-truth
matrix, TUM poses, camera info) for ``evaluate`` and ``make_bag``; see ``export_sequence``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

TILE_H, TILE_W = 480, 640
PLACE_LENGTH_M = 4.0  # metres of corridor per facade tile


@dataclass
class DemoSequence:
    images: list[np.ndarray]  # RGB uint8
    stamps: np.ndarray  # [N] seconds
    positions: np.ndarray  # [N, 2] metres on the corridor loop
    poses: np.ndarray  # [N, 4, 4] world_T_camera
    same_place: np.ndarray  # [N, N] bool ground truth
    camera_matrix: np.ndarray  # 3x3 of the images

    def __len__(self) -> int:
        return len(self.images)


def _facade(rng: np.random.Generator, palette: np.ndarray, wall: np.ndarray | None = None) -> np.ndarray:
    """One place: a gradient wall with shapes, signs and fine texture (for local features).

    Passing another place's ``wall`` colours makes a look-alike: same overall appearance
    (what global descriptors see first), different details (what verification checks).
    """
    if wall is None:
        wall = palette[rng.integers(len(palette), size=2)]
    top, bottom = wall
    ramp = np.linspace(0.0, 1.0, TILE_H)[:, None, None]
    tile = ((1 - ramp) * top + ramp * bottom).astype(np.float32) * np.ones((1, TILE_W, 1), np.float32)
    tile = tile.astype(np.uint8)
    n_shapes = 28
    for _ in range(n_shapes):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(4)
        x, y = int(rng.integers(0, TILE_W)), int(rng.integers(0, TILE_H))
        size = int(rng.integers(15, 90))
        if kind == 0:
            cv2.rectangle(tile, (x, y), (x + size, y + int(size * rng.uniform(0.5, 2))), color, -1)
        elif kind == 1:
            cv2.circle(tile, (x, y), size // 2, color, -1)
        elif kind == 2:
            pts = rng.integers(-size, size, (5, 2)) + [x, y]
            cv2.polylines(tile, [pts.astype(np.int32)], True, color, int(rng.integers(2, 6)))
        else:
            text = f"{chr(65 + int(rng.integers(26)))}{int(rng.integers(100, 999))}"
            cv2.putText(tile, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, rng.uniform(0.8, 2.0), color, 3)
    grain = rng.normal(0, 10, (TILE_H // 4, TILE_W // 4, 3))
    grain = cv2.resize(grain, (TILE_W, TILE_H), interpolation=cv2.INTER_NEAREST)
    return np.clip(tile.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def _corridor(num_places: int, distractors: int, rng: np.random.Generator) -> np.ndarray:
    palette = rng.integers(30, 226, (6, 3)).astype(np.float32)
    walls = [palette[rng.integers(len(palette), size=2)] for _ in range(num_places)]
    for k in range(min(distractors, num_places // 2)):
        # A place half the loop away from place `src` gets the same wall colours.
        src = (k * 7) % num_places
        walls[(src + num_places // 2) % num_places] = walls[src]
    tiles = [_facade(rng, palette, wall) for wall in walls]
    strip = np.concatenate(tiles, axis=1)
    return np.concatenate([strip, strip[:, :TILE_W]], axis=1)  # wrap-around for the loop


def _view(strip, x_px: float, rng, out_size, lighting: float, jitter_px: float) -> np.ndarray:
    w, h = out_size
    src = np.float32([[x_px, 0], [x_px + TILE_W, 0], [x_px + TILE_W, TILE_H], [x_px, TILE_H]])
    src += rng.uniform(-jitter_px, jitter_px, src.shape).astype(np.float32)
    dst = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    view = cv2.warpPerspective(
        strip, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT
    )
    view = view.astype(np.float32) * lighting + rng.normal(0, 4, view.shape)
    return np.clip(view, 0, 255).astype(np.uint8)


def make_demo_sequence(
    num_places: int = 24,
    frames_per_place: int = 2,
    laps: float = 2.0,
    distractors: int = 2,
    lighting_change: float = 0.25,
    same_place_radius_m: float = PLACE_LENGTH_M,
    frame_period_s: float = 1.0,
    image_size: tuple[int, int] = (512, 384),
    seed: int = 7,
) -> DemoSequence:
    """Build the sequence; ``lighting_change`` dims or brightens each later lap by that fraction.

    Two frames show the same place when they are at most ``same_place_radius_m`` apart; the
    default (one facade, 4 m) means "the two views overlap", since each view spans one facade.
    """
    rng = np.random.default_rng(seed)
    strip = _corridor(num_places, distractors, rng)
    lap_px = num_places * TILE_W
    n = int(round(num_places * frames_per_place * laps))
    step_px = TILE_W / frames_per_place
    circumference = num_places * PLACE_LENGTH_M
    radius = circumference / (2 * math.pi)
    images, positions, poses = [], [], []
    for i in range(n):
        travelled = i * step_px + rng.uniform(-0.08, 0.08) * TILE_W  # revisits are not pixel-aligned
        lap = int(travelled // lap_px)
        x_px = travelled % lap_px
        lighting = 1.0 + lighting_change * (1 if lap % 2 else -0.5) * min(lap, 1)
        images.append(cv2.cvtColor(_view(strip, x_px, rng, image_size, lighting, 25.0), cv2.COLOR_BGR2RGB))
        angle = 2 * math.pi * x_px / lap_px
        positions.append((radius * math.cos(angle), radius * math.sin(angle)))
        pose = np.eye(4)
        pose[:2, 3] = positions[-1]
        heading = angle + math.pi / 2  # walking along the circle
        pose[:3, :3] = [
            [math.cos(heading), -math.sin(heading), 0],
            [math.sin(heading), math.cos(heading), 0],
            [0, 0, 1],
        ]
        poses.append(pose)
    positions = np.asarray(positions)
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    same_place = dist <= same_place_radius_m
    w, h = image_size
    focal = w * 0.8
    camera_matrix = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]])
    stamps = np.arange(n, dtype=np.float64) * frame_period_s
    return DemoSequence(images, stamps, positions, np.asarray(poses), same_place, camera_matrix)


def export_sequence(seq: DemoSequence, folder: str | Path, image_format: str = "jpg", params=None) -> dict:
    """Write the sequence so ``evaluate`` and ``make_bag`` can use it; returns the file paths.

    folder/images/000000.jpg ...   frames in order (natural filename order)
    folder/same_place.npy          [N, N] bool ground truth (frame indices)
    folder/poses.tum               camera poses, TUM format, stamps = frame stamps
    folder/camera_info.yaml        intrinsics (ROS camera calibration YAML)
    folder/sequence.yaml           generator parameters and the frame period
    """
    from ..evaluation.ground_truth import write_tum
    from ..evaluation.sources import write_camera_info_yaml

    if image_format not in ("jpg", "png"):
        raise ValueError(f"image format must be jpg or png, got '{image_format}'")
    folder = Path(folder)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    if any(images_dir.iterdir()):
        raise FileExistsError(f"{images_dir} is not empty; export into a new folder")
    options = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
    for i, rgb in enumerate(seq.images):
        cv2.imwrite(
            str(images_dir / f"{i:06d}.{image_format}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), options
        )
    paths = {
        "images": images_dir,
        "same_place": folder / "same_place.npy",
        "poses": folder / "poses.tum",
        "camera_info": folder / "camera_info.yaml",
        "sequence": folder / "sequence.yaml",
    }
    np.save(paths["same_place"], seq.same_place)
    write_tum(paths["poses"], seq.stamps, seq.poses)
    h, w = seq.images[0].shape[:2]
    write_camera_info_yaml(paths["camera_info"], seq.camera_matrix, w, h)
    period = float(seq.stamps[1] - seq.stamps[0]) if len(seq) > 1 else 1.0
    info = {"frames": len(seq), "frame_period_s": period, "generator": dict(params or {})}
    paths["sequence"].write_text(yaml.safe_dump(info, sort_keys=False))
    return paths


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="python -m vpr_ros.apps.demo_sequence",
        description="Generate the synthetic corridor sequence and export it for `evaluate` / `make_bag`.",
    )
    p.add_argument("--export", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--places", type=int, default=24, help="facades around the loop (length; default 24)")
    p.add_argument("--frames-per-place", type=int, default=2, help="frames per facade (default 2)")
    p.add_argument("--laps", type=float, default=2.0, help="times around the loop (revisits; default 2)")
    p.add_argument("--distractors", type=int, default=2, help="look-alike places (default 2)")
    p.add_argument("--lighting", type=float, default=0.25, help="lighting change between laps (default 0.25)")
    p.add_argument(
        "--radius",
        type=float,
        default=PLACE_LENGTH_M,
        help=f"same-place radius in metres (default {PLACE_LENGTH_M:g}: one facade)",
    )
    p.add_argument("--frame-period", type=float, default=1.0, help="seconds between frames (default 1)")
    p.add_argument("--size", type=int, nargs=2, default=(512, 384), metavar=("W", "H"))
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image files (default jpg)")
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    params = {
        "num_places": args.places,
        "frames_per_place": args.frames_per_place,
        "laps": args.laps,
        "distractors": args.distractors,
        "lighting_change": args.lighting,
        "same_place_radius_m": args.radius,
        "frame_period_s": args.frame_period,
        "image_size": tuple(args.size),
        "seed": args.seed,
    }
    seq = make_demo_sequence(**params)
    params["image_size"] = list(args.size)
    paths = export_sequence(seq, args.export, args.format, params)
    folder = Path(args.export)
    print(
        f"exported {len(seq)} frames to {folder}\n"
        f"evaluate with:\n  python -m vpr_ros.apps.evaluate --images {paths['images']} "
        f"--frame-period {args.frame_period:g} --camera-info {paths['camera_info']} "
        f"--gt-matrix {paths['same_place']} --model mobilenetv2 --output {folder / 'eval'}\n"
        f"  (or --gt-poses {paths['poses']} --gt-radius {args.radius:g} for pose ground truth)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
