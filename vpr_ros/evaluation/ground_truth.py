"""Same-place ground truth: from poses (TUM/KITTI files, pose topics) or a given matrix.

Conventions (the defaults of ``evaluate``):

* Two frames show the same place when their camera positions are at most ``radius`` metres
  apart and, when ``max_angle_deg`` is set, their orientations differ by at most that many
  degrees. Frames without a pose have no ground truth and are left out of the scores.
* A same-place matrix file is used as given: an 8-bit image (255 = same place, anything
  else = not) or a .npy array (boolean, or numbers where non-zero = same place). Entry
  (i, j) is about frame i and frame j in input order; only the part below the diagonal
  (i later than j) is ever read.
* Which same-place pairs count as loops to find (the minimum gap) is decided in
  ``LoopWindow``: a pair must be far enough apart in time and in frames, and outside the
  detector's own exclusion window, or nobody could expect the detector to report it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geometry import matrix_to_quaternion, pose_matrix


class GroundTruthError(ValueError):
    """Ground truth that cannot be read or does not fit the input sequence."""


@dataclass
class PoseTrack:
    """A sequence of 4x4 poses (world_T_camera), looked up by time or by frame index.

    ``stamps`` is None for files without time (KITTI): pose i then belongs to frame i.
    """

    poses: np.ndarray  # [M, 4, 4]
    stamps: np.ndarray | None = None  # [M] seconds, increasing
    source: str = ""

    def __len__(self) -> int:
        return len(self.poses)

    def lookup(self, stamp: float, index: int, max_dt: float) -> np.ndarray | None:
        """The pose of a frame: nearest in time within ``max_dt`` seconds, or by index."""
        if self.stamps is None:
            return self.poses[index] if 0 <= index < len(self.poses) else None
        if len(self.stamps) == 0:
            return None
        i = int(np.searchsorted(self.stamps, stamp))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(self.stamps) and (
                best is None or abs(self.stamps[j] - stamp) < abs(self.stamps[best] - stamp)
            ):
                best = j
        return self.poses[best] if abs(self.stamps[best] - stamp) <= max_dt else None


def _pose_matrix(tx, ty, tz, qx, qy, qz, qw) -> np.ndarray:
    try:
        return pose_matrix((tx, ty, tz), (qx, qy, qz, qw))
    except ValueError as err:
        raise GroundTruthError(str(err)) from None


def _numeric_rows(path: Path) -> list[list[float]]:
    if not path.is_file():
        raise GroundTruthError(f"pose file not found: {path}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.replace(",", " ").split()])
        except ValueError:
            raise GroundTruthError(f"{path}:{lineno}: not a row of numbers: {line[:60]!r}") from None
    if not rows:
        raise GroundTruthError(f"{path}: no poses")
    return rows


def read_tum(path: str | Path) -> PoseTrack:
    """TUM trajectory: ``timestamp tx ty tz qx qy qz qw`` per line ('#' comments)."""
    path = Path(path)
    rows = _numeric_rows(path)
    bad = [i for i, r in enumerate(rows) if len(r) != 8]
    if bad:
        raise GroundTruthError(f"{path}: TUM lines need 8 numbers, line {bad[0] + 1} has {len(rows[bad[0]])}")
    order = np.argsort([r[0] for r in rows], kind="stable")
    stamps = np.array([rows[i][0] for i in order])
    poses = np.stack([_pose_matrix(*rows[i][1:]) for i in order])
    return PoseTrack(poses, stamps, f"TUM file {path.name}")


def read_kitti(path: str | Path) -> PoseTrack:
    """KITTI odometry poses: 12 numbers per line (3x4 row-major), one line per frame."""
    path = Path(path)
    rows = _numeric_rows(path)
    bad = [i for i, r in enumerate(rows) if len(r) != 12]
    if bad:
        raise GroundTruthError(
            f"{path}: KITTI lines need 12 numbers, line {bad[0] + 1} has {len(rows[bad[0]])}"
        )
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = np.asarray(rows).reshape(-1, 3, 4)
    return PoseTrack(poses, None, f"KITTI file {path.name}")


def read_pose_file(path: str | Path, fmt: str = "auto") -> PoseTrack:
    """A TUM or KITTI pose file; ``auto`` tells them apart by the number of columns."""
    if fmt == "tum":
        return read_tum(path)
    if fmt == "kitti":
        return read_kitti(path)
    if fmt != "auto":
        raise GroundTruthError(f"unknown pose file format '{fmt}' (tum, kitti or auto)")
    columns = len(_numeric_rows(Path(path))[0])
    if columns == 8:
        return read_tum(path)
    if columns == 12:
        return read_kitti(path)
    raise GroundTruthError(f"{path}: {columns} numbers per line is neither TUM (8) nor KITTI (12)")


def write_tum(path: str | Path, stamps, poses) -> None:
    """Write poses as a TUM trajectory (the inverse of ``read_tum``)."""
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for stamp, pose in zip(stamps, poses, strict=True):
        pose = np.asarray(pose)
        q = matrix_to_quaternion(pose[:3, :3])
        values = [*pose[:3, 3], *q]
        lines.append(f"{float(stamp):.9f} " + " ".join(f"{v:.9g}" for v in values))
    Path(path).write_text("\n".join(lines) + "\n")


def read_same_place_matrix(path: str | Path) -> np.ndarray:
    """An NxN same-place matrix: 8-bit image (255 = same place) or .npy (non-zero = same)."""
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"ground-truth matrix not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            matrix = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise GroundTruthError(f"{path}: not a numeric .npy array ({err})") from None
        if matrix.dtype.kind not in "biuf":
            raise GroundTruthError(f"{path}: dtype {matrix.dtype} is not boolean or numeric")
        matrix = matrix != 0
    else:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise GroundTruthError(f"{path}: cannot read as an image")
        if image.ndim == 3:
            image = image[..., 0]
        if image.dtype != np.uint8:
            raise GroundTruthError(f"{path}: expected an 8-bit image, got {image.dtype}")
        matrix = image == 255
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise GroundTruthError(f"{path}: same-place matrix must be square, got shape {matrix.shape}")
    return matrix


def same_place_from_poses(
    poses: list[np.ndarray | None], radius: float, max_angle_deg: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(same_place [N, N] bool, valid [N] bool) from per-frame poses (None = unknown)."""
    if radius <= 0:
        raise GroundTruthError(f"ground-truth radius must be > 0, got {radius}")
    n = len(poses)
    valid = np.array([p is not None for p in poses], dtype=bool)
    stack = np.tile(np.eye(4), (n, 1, 1))
    for i, p in enumerate(poses):
        if p is not None:
            stack[i] = p
    positions = stack[:, :3, 3]
    dist = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    same = dist <= radius
    if max_angle_deg is not None:
        rot = stack[:, :3, :3]
        # trace(Ri^T Rj) = sum over elementwise product; angle = acos((trace - 1) / 2).
        trace = np.einsum("iab,jab->ij", rot, rot)
        angle = np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
        same &= angle <= max_angle_deg
    same &= valid[:, None] & valid[None, :]
    return same, valid


@dataclass
class GroundTruth:
    """Frame-level ground truth for one input sequence."""

    same_place: np.ndarray  # [N, N] bool, frame indices in input order
    valid: np.ndarray  # [N] bool: frames that have ground truth at all
    source: str
    poses: list[np.ndarray | None] | None = None  # per-frame poses when GT came from poses

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, num_frames: int, source: str) -> GroundTruth:
        matrix = np.asarray(matrix, dtype=bool)
        if matrix.shape[0] < num_frames:
            raise GroundTruthError(
                f"{source}: the matrix covers {matrix.shape[0]} frames but the input has {num_frames}"
            )
        return cls(matrix[:num_frames, :num_frames], np.ones(num_frames, bool), source)

    @classmethod
    def from_poses(
        cls, poses: list[np.ndarray | None], radius: float, max_angle_deg: float | None, source: str
    ) -> GroundTruth:
        if not any(p is not None for p in poses):
            raise GroundTruthError(f"{source}: no frame has a pose (check the time stamps / --gt-max-dt)")
        same, valid = same_place_from_poses(poses, radius, max_angle_deg)
        return cls(same, valid, source, list(poses))


@dataclass
class LoopWindow:
    """Which (query, earlier frame) pairs may count as loop closures.

    A pair counts when the query is at least ``min_gap_s`` seconds and ``min_gap_frames``
    input frames after the match, and at least ``min_gap_keyframes`` keyframes after it
    (the detector's ``exclude_recent_keyframes`` + 1: nearer keyframes are never offered).
    """

    min_gap_s: float
    min_gap_frames: int
    min_gap_keyframes: int

    def allowed(self, frames: np.ndarray, stamps: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """[K, K] bool over keyframes: row query, column match (only earlier matches)."""
        frames, stamps, ranks = (np.asarray(a) for a in (frames, stamps, ranks))
        ok = ranks[:, None] - ranks[None, :] >= max(1, self.min_gap_keyframes)
        ok &= frames[:, None] - frames[None, :] >= max(1, self.min_gap_frames)
        if self.min_gap_s > 0:
            ok &= stamps[:, None] - stamps[None, :] >= self.min_gap_s - 1e-9
        return ok
