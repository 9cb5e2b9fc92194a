"""Plain data passed between the pipeline stages (and converted to/from ROS messages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np


class LoopStatus(IntEnum):
    """Why a query did or did not produce a loop closure (mirrors LoopClosure.msg)."""

    ACCEPTED = 0
    LOW_SIMILARITY = 1
    FAILED_VERIFICATION = 2
    FAILED_CONSISTENCY = 3
    NO_CANDIDATES = 4


@dataclass
class Frame:
    """One camera image entering the pipeline."""

    stamp: float  # seconds
    image: np.ndarray  # HxWx3 uint8 RGB
    frame_id: str = ""
    camera_matrix: np.ndarray | None = None  # 3x3 intrinsics of `image`
    depth: np.ndarray | None = None  # HxW float32 metres, aligned with `image`
    pose: np.ndarray | None = None  # 4x4 odometry pose of the camera (world_T_camera)


@dataclass
class Keyframe:
    """A frame accepted into the map, with what verification needs later."""

    id: int
    stamp: float
    descriptor: np.ndarray  # [D] float32, L2-normalised
    image: np.ndarray | None = None  # downscaled RGB used for verification
    camera_matrix: np.ndarray | None = None  # intrinsics of `image` (scaled)
    depth: np.ndarray | None = None
    pose: np.ndarray | None = None
    frame_id: str = ""
    camera: str = ""
    local_features: dict = field(default_factory=dict)  # model local features, if any


@dataclass
class Candidate:
    id: int
    stamp: float
    similarity: float
    frame_id: str = ""  # the map keyframe's camera frame (LoopClosure.match_frame_id)


@dataclass
class RelativePose:
    """Pose of the query camera in the match camera frame (match_T_query)."""

    rotation: np.ndarray  # 3x3
    translation: np.ndarray  # 3, metres if metric else unit direction
    metric: bool
    covariance: np.ndarray  # 6x6 over (x, y, z, rx, ry, rz)


@dataclass
class Verification:
    """A re-ranker's verdict on one (query, candidate) pair."""

    candidate: Candidate
    score: float  # higher is better; inliers for geometric re-rankers
    inliers: int  # -1 when the re-ranker has no notion of inliers
    passed: bool
    reason: str
    relative_pose: RelativePose | None = None


@dataclass
class LoopDecision:
    """The final outcome for one query keyframe."""

    query_id: int
    query_stamp: float
    status: LoopStatus
    reason: str
    best: Verification | None = None
    # Earlier queries whose pending hypotheses this decision confirmed (accepted late).
    confirmed: list[LoopDecision] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.status == LoopStatus.ACCEPTED
