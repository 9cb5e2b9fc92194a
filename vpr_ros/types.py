"""Plain data passed between the pipeline stages (and converted to/from ROS messages).

Stamps: ``stamp`` is float seconds for time arithmetic (windows, periods); ``stamp_ns`` is the
exact integer nanoseconds of the image header, the one every output message is stamped with
(float seconds lose up to ~100 ns at today's epoch, and back ends look their nodes up by
exact stamp). Built from seconds alone, ``stamp_ns`` is the rounded value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from .lens import RECTIFIED, Lens


def sec_to_ns(stamp: float) -> int:
    return int(round(float(stamp) * 1e9))


def ns_to_sec(stamp_ns: int) -> float:
    return int(stamp_ns) * 1e-9


class _Stamped:
    """Fills ``stamp_ns`` from ``stamp`` when only seconds were given."""

    def __post_init__(self):
        if self.stamp_ns is None:
            self.stamp_ns = sec_to_ns(self.stamp)
        else:
            self.stamp_ns = int(self.stamp_ns)


class LoopStatus(IntEnum):
    """Why a query did or did not produce a loop closure (mirrors LoopClosure.msg)."""

    ACCEPTED = 0
    LOW_SIMILARITY = 1
    FAILED_VERIFICATION = 2
    FAILED_CONSISTENCY = 3
    NO_CANDIDATES = 4


@dataclass
class Frame(_Stamped):
    """One camera image entering the pipeline."""

    stamp: float  # seconds
    image: np.ndarray  # HxWx3 uint8 RGB
    frame_id: str = ""
    camera_matrix: np.ndarray | None = None  # 3x3 intrinsics of `image`
    depth: np.ndarray | None = None  # HxW float32 metres, aligned with `image`
    pose: np.ndarray | None = None  # 4x4 odometry pose of the camera (odom_T_camera)
    stamp_ns: int | None = None  # exact header stamp
    lens: Lens = RECTIFIED  # distortion of `image` (CameraInfo distortion_model + D)
    base_T_camera: np.ndarray | None = None  # camera extrinsics in the body frame, when known
    base_frame: str = ""  # the body frame (REP-105 base_link) base_T_camera refers to


@dataclass
class Keyframe(_Stamped):
    """A frame accepted into the map, with what verification needs later."""

    id: int
    stamp: float
    descriptor: np.ndarray  # [D] float32, L2-normalised
    image: np.ndarray | None = None  # downscaled RGB used for verification
    camera_matrix: np.ndarray | None = None  # intrinsics of `image` (scaled)
    depth: np.ndarray | None = None
    pose: np.ndarray | None = None  # odom_T_camera
    frame_id: str = ""
    camera: str = ""
    local_features: dict = field(default_factory=dict)  # model local features, if any
    stamp_ns: int | None = None
    lens: Lens = RECTIFIED
    base_T_camera: np.ndarray | None = None
    base_frame: str = ""


@dataclass
class Candidate(_Stamped):
    id: int
    stamp: float
    similarity: float
    frame_id: str = ""  # the map keyframe's camera frame (LoopClosure.match_frame_id)
    stamp_ns: int | None = None


class PoseKind(IntEnum):
    """What a relative pose constrains (mirrors LoopClosure.POSE_*)."""

    NONE = 0
    ROTATION_ONLY = 1  # rotation, and a translation direction of unknown length
    METRIC = 2


@dataclass
class RelativePose:
    """Pose of the query frame in the match frame (match_T_query): the two cameras' optical
    frames, or (``Verification.base_pose``) the two bodies' frames."""

    rotation: np.ndarray  # 3x3
    translation: np.ndarray  # 3, metres if metric else unit direction (camera) / zeros (body)
    metric: bool
    covariance: np.ndarray  # 6x6 over (x, y, z, rx, ry, rz), perturbation on the right

    @property
    def kind(self) -> PoseKind:
        return PoseKind.METRIC if self.metric else PoseKind.ROTATION_ONLY

    @property
    def kind_name(self) -> str:
        """ "metric" or "rotation_only" (the pose graph's and the reports' names)."""
        return "metric" if self.metric else "rotation_only"

    def matrix(self) -> np.ndarray:
        """4x4 match_T_query; a rotation-only pose gets a zero translation (its length is unknown)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        if self.metric:
            m[:3, 3] = self.translation
        return m


@dataclass
class Verification:
    """A re-ranker's verdict on one (query, candidate) pair."""

    candidate: Candidate
    score: float  # higher is better; inliers for geometric re-rankers
    inliers: int  # -1 when the re-ranker has no notion of inliers
    passed: bool
    reason: str
    relative_pose: RelativePose | None = None  # between the camera optical frames
    base_pose: RelativePose | None = None  # between the body frames (needs the extrinsics)
    base_frame: str = ""


@dataclass
class LoopDecision:
    """The final outcome for one query keyframe."""

    query_id: int
    query_stamp_ns: int
    status: LoopStatus
    reason: str
    best: Verification | None = None
    # Earlier queries whose pending hypotheses this decision confirmed (accepted late).
    confirmed: list[LoopDecision] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status == LoopStatus.ACCEPTED
