"""A synthetic camera sequence with real revisits and exact ground truth, made offline.

The world is a closed corridor of textured facades ("places"). The camera walks around it
``laps`` times; every view is a perspective-jittered, re-lit, noisy crop of the corridor, so
a revisit shows the same surfaces from a slightly different viewpoint, as on a robot.
``distractors`` adds look-alike places (same palette and layout style, different details) to
test perceptual aliasing. Positions are known, so the same-place ground truth is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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


def _facade(rng: np.random.Generator, palette: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """One place: a gradient wall with shapes, signs and fine texture (for local features)."""
    if base is not None:
        tile = base.copy()
        n_shapes = 10  # a look-alike repaints part of an existing facade
    else:
        top, bottom = palette[rng.integers(len(palette), size=2)]
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
    tiles = [_facade(rng, palette) for _ in range(num_places)]
    for k in range(min(distractors, num_places // 2)):
        # Overwrite a place far from its original with a look-alike of it.
        src = (k * 7) % num_places
        dst = (src + num_places // 2) % num_places
        tiles[dst] = _facade(rng, palette, base=tiles[src])
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
    same_place_radius_m: float = 3.0,
    frame_period_s: float = 1.0,
    image_size: tuple[int, int] = (512, 384),
    seed: int = 7,
) -> DemoSequence:
    """Build the sequence; ``lighting_change`` dims or brightens each later lap by that fraction."""
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
