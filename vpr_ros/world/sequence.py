"""A rendered camera sequence through the corridor ring, with exact ground truth.

``make_world_sequence`` walks the body ``laps`` times around the ring, renders each frame
(colour and depth) from the camera on the body, and integrates drifting odometry. It has the
fields of the 2-D ``DemoSequence`` too (images, stamps, poses, same_place, camera_matrix,
positions), so consumers of that one can take it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .camera import CameraSpec, make_camera
from .render import camera_rays, render
from .scene import Scene, make_building
from .trajectory import OdometryDrift, Ring, base_T_camera, integrate_odometry, ring_trajectory

# Non-round, so that code which rounds stamps to microseconds or floats shows up in tests.
START_NS = 1_700_000_000_123_456_789


@dataclass
class WorldSequence:
    images: list[np.ndarray]  # RGB uint8 [H, W, 3]
    depths: list[np.ndarray]  # float32 [H, W] metres (z in the optical frame), 0 = no surface
    stamps_ns: np.ndarray  # [N] int64 nanoseconds (exact)
    stamps: np.ndarray  # [N] float64 seconds (stamps_ns / 1e9, correctly rounded)
    gt_body_poses: np.ndarray  # [N, 4, 4] world_T_base
    gt_camera_poses: np.ndarray  # [N, 4, 4] world_T_camera (optical frame) = world_T_base @ base_T_camera
    odom_body_poses: np.ndarray  # [N, 4, 4] odom_T_base, drifting
    base_T_camera: np.ndarray  # [4, 4]
    camera: CameraSpec
    same_place: np.ndarray  # [N, N] bool
    lap: np.ndarray  # [N] int: the lap each frame is on (0 = first)
    distance_m: np.ndarray  # [N] distance walked along the ring's centreline
    scene: Scene = field(repr=False)
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    # The DemoSequence names.
    @property
    def poses(self) -> np.ndarray:
        return self.gt_camera_poses

    @property
    def camera_matrix(self) -> np.ndarray:
        return self.camera.K

    @property
    def positions(self) -> np.ndarray:
        return self.gt_camera_poses[:, :2, 3]


def same_place_matrix(camera_poses: np.ndarray, radius_m: float, max_angle_deg: float) -> np.ndarray:
    """[N, N] bool: camera centres within ``radius_m`` and optical axes within ``max_angle_deg``
    (so that the two views overlap)."""
    centres = camera_poses[:, :3, 3]
    axes = camera_poses[:, :3, 2]
    near = np.linalg.norm(centres[:, None] - centres[None], axis=-1) <= radius_m
    aligned = axes @ axes.T >= math.cos(math.radians(max_angle_deg)) - 1e-12
    return near & aligned


def make_world_sequence(
    laps: float = 2.0,
    frame_period_s: float = 0.5,
    speed_mps: float = 1.4,
    image_size: tuple[int, int] = (640, 480),
    lens: str = "",
    lookalikes: int = 0,
    odom_drift: OdometryDrift | None = None,
    seed: int = 7,
    alcoves: int = 2,
    texels_per_m: float = 200.0,
    camera: CameraSpec | None = None,
    camera_translation: tuple[float, float, float] = (0.2, 0.0, 1.2),
    pitch_deg: float = 0.0,
    same_place_radius_m: float = 3.0,
    same_place_max_angle_deg: float = 45.0,
    same_place_min_overlap: float = 0.3,
    same_place_overlap_max_m: float = 10.0,
    start_ns: int = START_NS,
    image_noise: float = 0.0,
    max_frames: int | None = None,
) -> WorldSequence:
    """Render the sequence: one frame every ``speed_mps * frame_period_s`` metres (0.7 m and
    ~185 frames for two laps at the defaults).

    ``camera`` overrides ``lens`` and ``image_size``. ``odom_drift`` defaults to
    ``OdometryDrift(seed=seed)``; ``OdometryDrift.none()`` makes odometry equal ground truth.
    ``image_noise`` adds seeded Gaussian noise (grey levels) to the colour images.
    Two frames are the same place when their cameras are within ``same_place_radius_m`` and
    ``same_place_max_angle_deg``, or when they are within ``same_place_overlap_max_m`` and one
    sees at least ``same_place_min_overlap`` of the other's surfaces (``covisibility``: down a
    straight corridor, views 5-10 m apart share walls, verification rightly matches them and
    the relative pose is right). 0 leaves the radius rule alone.
    """
    if frame_period_s <= 0 or speed_mps <= 0:
        raise ValueError("frame_period_s and speed_mps must be > 0")
    camera = camera or make_camera(lens, *image_size)
    drift = OdometryDrift(seed=seed) if odom_drift is None else odom_drift
    scene = make_building(seed=seed, alcoves=alcoves, lookalikes=lookalikes, texels_per_m=texels_per_m)
    width = scene.params["corridor_width"]
    outer = scene.params["outer_size"]
    ring = Ring(outer[0] / 2 - width / 2, outer[1] / 2 - width / 2)
    body, distance = ring_trajectory(ring, laps, speed_mps * frame_period_s, seed)
    if max_frames is not None:
        body, distance = body[:max_frames], distance[:max_frames]
    mount = base_T_camera(camera_translation, pitch_deg)
    cams = body @ mount
    rng = np.random.default_rng([seed, 99])
    images, depths = [], []
    for pose in cams:
        rgb, depth = render(scene, camera, pose)
        if image_noise > 0:
            rgb = np.clip(rgb + rng.normal(0.0, image_noise, rgb.shape), 0, 255).astype(np.uint8)
        images.append(rgb)
        depths.append(depth)
    period_ns = int(round(frame_period_s * 1e9))
    stamps_ns = np.int64(start_ns) + np.arange(len(cams), dtype=np.int64) * np.int64(period_ns)
    # int / int is correctly rounded in Python; an int64 array / 1e9 is not.
    stamps = np.array([int(ns) / 10**9 for ns in stamps_ns])
    params = dict(
        laps=laps,
        frame_period_s=frame_period_s,
        speed_mps=speed_mps,
        image_size=[camera.width, camera.height],
        lens=camera.lens.model,
        lookalikes=lookalikes,
        lookalike_places=[list(p) for p in scene.lookalike_pairs],
        odom_drift=dict(
            yaw_bias_deg_per_m=drift.yaw_bias_deg_per_m,
            scale_error=drift.scale_error,
            translation_noise=drift.translation_noise,
            yaw_noise_deg=drift.yaw_noise_deg,
            seed=drift.seed,
        ),
        seed=seed,
        alcoves=alcoves,
        texels_per_m=texels_per_m,
        camera_translation=list(camera_translation),
        pitch_deg=pitch_deg,
        same_place_radius_m=same_place_radius_m,
        same_place_max_angle_deg=same_place_max_angle_deg,
        same_place_min_overlap=same_place_min_overlap,
        same_place_overlap_max_m=same_place_overlap_max_m,
        start_ns=int(start_ns),
        image_noise=image_noise,
        building=scene.params,
    )
    seq = WorldSequence(
        images=images,
        depths=depths,
        stamps_ns=stamps_ns,
        stamps=stamps,
        gt_body_poses=body,
        gt_camera_poses=cams,
        odom_body_poses=integrate_odometry(body, drift),
        base_T_camera=mount,
        camera=camera,
        same_place=same_place_matrix(cams, same_place_radius_m, same_place_max_angle_deg),
        lap=np.floor(distance / ring.length + 1e-9).astype(int),
        distance_m=distance,
        scene=scene,
        params=params,
    )
    if same_place_min_overlap > 0:
        overlap = covisibility(seq)
        centres = cams[:, :3, 3]
        near = np.linalg.norm(centres[:, None] - centres[None], axis=-1) <= same_place_overlap_max_m
        shared = np.maximum(overlap, overlap.T) >= same_place_min_overlap
        seq.same_place = seq.same_place | (near & shared)
    return seq


def revisit_pairs(seq: WorldSequence, count: int = 20) -> list[tuple[int, int]]:
    """(query, match) pairs: ``count`` frames of lap 2 spread along it, each with the lap-1 frame
    whose camera is nearest among those marked same-place."""
    later = np.flatnonzero(seq.lap == 1)
    first = np.flatnonzero(seq.lap == 0)
    if len(later) == 0:
        return []
    centres = seq.gt_camera_poses[:, :3, 3]
    pairs = []
    for q in later[np.linspace(0, len(later) - 1, min(count, len(later))).astype(int)]:
        ok = first[seq.same_place[q, first]]
        if len(ok):
            pairs.append((int(q), int(ok[np.argmin(np.linalg.norm(centres[ok] - centres[q], axis=1))])))
    return pairs


def covisibility(seq: WorldSequence, stride: int = 16, tolerance: float = 0.02) -> np.ndarray:
    """[N, N] float: the fraction of frame i's surface points (its depth on a pixel grid every
    ``stride`` pixels) that frame j sees, inside its image and unoccluded (its own depth there
    within ``tolerance``, relative). Exact view overlap, for ground truth beyond ``same_place``:
    in a straight corridor, views 5-10 m apart along it still share the far walls."""
    cam, n = seq.camera, len(seq)
    rays = camera_rays(cam)
    rows, cols = np.mgrid[stride // 2 : cam.height : stride, stride // 2 : cam.width : stride]
    out = np.zeros((n, n))
    for i in range(n):
        z = seq.depths[i][rows, cols].astype(np.float64)
        local = np.stack([rays.x[rows, cols] * z, rays.y[rows, cols] * z, z], axis=-1)[z > 0]
        world = local @ seq.gt_camera_poses[i, :3, :3].T + seq.gt_camera_poses[i, :3, 3]
        for j in range(n):
            pose = seq.gt_camera_poses[j]
            if pose[:3, 2] @ seq.gt_camera_poses[i, :3, 2] < 0:  # facing apart: nothing shared
                continue
            pts = (world - pose[:3, 3]) @ pose[:3, :3]  # into camera j
            pts = pts[pts[:, 2] > 0.05]
            if len(pts) == 0:
                continue
            px = np.rint(cam.lens.project(pts, cam.K)).astype(int)
            inside = (px[:, 0] >= 0) & (px[:, 0] < cam.width) & (px[:, 1] >= 0) & (px[:, 1] < cam.height)
            seen = seq.depths[j][px[inside, 1], px[inside, 0]]
            visible = np.abs(seen - pts[inside, 2]) <= tolerance * pts[inside, 2]
            out[i, j] = visible.sum() / max(len(local), 1)
    return out


def relative_camera_pose(seq: WorldSequence, query: int, match: int) -> np.ndarray:
    """Ground-truth match_T_query between the two optical frames (what verifiers estimate)."""
    return np.linalg.inv(seq.gt_camera_poses[match]) @ seq.gt_camera_poses[query]


def pose_errors(rotation, translation, truth: np.ndarray) -> tuple[float, float, float]:
    """(rotation error deg, translation error m, translation direction error deg) of an
    estimated match_T_query against ``truth``."""
    r = np.asarray(rotation, np.float64) @ truth[:3, :3].T
    rot = math.degrees(math.acos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)))
    t, gt = np.asarray(translation, np.float64).ravel(), truth[:3, 3]
    cos = float(t @ gt / max(np.linalg.norm(t) * np.linalg.norm(gt), 1e-12))
    return rot, float(np.linalg.norm(t - gt)), math.degrees(math.acos(np.clip(cos, -1.0, 1.0)))
