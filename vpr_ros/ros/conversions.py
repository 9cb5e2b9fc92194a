"""ROS messages <-> core types. The only place that knows both sides."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..geometry import matrix_to_quaternion, pose_matrix
from ..image_conversion import (
    DEFAULT_MAX_IMAGE_PIXELS,
    decode_compressed,
    decode_depth,
    decode_raw,
    encode_rgb8,
)
from ..lens import RECTIFIED, Lens, LensError
from ..map.session import SessionInfo
from ..msg import Keyframe as KeyframeMsg
from ..msg import LocalFeatures, LoopCandidates, LoopClosure, MapInfo
from ..types import Candidate, Keyframe, LoopDecision, LoopStatus, PoseKind, RelativePose, Verification


def stamp_to_sec(stamp: Time) -> float:
    """For time arithmetic only; outputs are stamped from ``stamp_to_ns`` (exact)."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def sec_to_stamp(t: float) -> Time:
    """Seconds (a player's or a tool's clock) -> Time, to the nearest nanosecond."""
    return ns_to_stamp(int(round(t * 1e9)))


def image_msg_to_rgb(msg, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> RGB uint8 (raises BadImageError, "too_large"
    over ``max_pixels`` before decoding)."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data, max_pixels)
    return decode_raw(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian), max_pixels
    )


def depth_msg_to_array(msg: Image, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    return decode_depth(
        msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian), max_pixels
    )


def rgb_to_image_msg(image: np.ndarray, header=None) -> Image:
    h, w, step, data = encode_rgb8(image)
    msg = Image(height=h, width=w, encoding="rgb8", is_bigendian=0, step=step, data=data)
    if header is not None:
        msg.header = header
    return msg


def depth_to_image_msg(depth: np.ndarray) -> Image:
    depth = np.ascontiguousarray(depth, dtype="<f4")
    h, w = depth.shape
    return Image(height=h, width=w, encoding="32FC1", is_bigendian=0, step=w * 4, data=depth.tobytes())


def camera_matrix_from_info(info: CameraInfo) -> np.ndarray | None:
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    return k if k[0, 0] > 0 and k[1, 1] > 0 and np.all(np.isfinite(k)) else None


def lens_from_info(info: CameraInfo) -> Lens:
    """The CameraInfo's distortion (raises LensError for a model or D it cannot apply)."""
    return Lens.from_camera_info(info.distortion_model, list(info.d))


def matrix_to_vector3(v) -> Vector3:
    x, y, z = (float(c) for c in np.ravel(v)[:3])
    return Vector3(x=x, y=y, z=z)


def pose_to_matrix(pose: Pose) -> np.ndarray | None:
    """4x4 pose, or None for a non-finite position or a zero/non-finite quaternion (broken
    odometry: inventing an identity rotation would pass it off as a real pose). A finite,
    non-unit quaternion is normalised, as ROS does."""
    o, p = pose.orientation, pose.position
    if not all(math.isfinite(v) for v in (p.x, p.y, p.z)):
        return None
    try:
        return pose_matrix((p.x, p.y, p.z), (o.x, o.y, o.z, o.w))
    except ValueError:
        return None


def matrix_to_pose(rotation: np.ndarray, translation: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in np.ravel(translation)[:3])
    q = matrix_to_quaternion(rotation)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = q
    return pose


def keyframe_to_msg(kf: Keyframe, model: str, with_image: bool = True) -> KeyframeMsg:
    msg = KeyframeMsg()
    msg.header.stamp = ns_to_stamp(kf.stamp_ns)
    msg.header.frame_id = kf.frame_id
    msg.id = int(kf.id)
    msg.camera = kf.camera
    msg.model = model
    msg.descriptor = np.asarray(kf.descriptor, dtype=np.float32)
    if with_image and kf.image is not None:
        msg.image = rgb_to_image_msg(kf.image, msg.header)
        if kf.camera_matrix is not None:
            msg.camera_info.header = msg.header
            msg.camera_info.height, msg.camera_info.width = kf.image.shape[:2]
            msg.camera_info.k = [float(v) for v in np.ravel(kf.camera_matrix)]
            msg.camera_info.distortion_model, msg.camera_info.d = kf.lens.to_camera_info()
        if kf.depth is not None:
            msg.depth = depth_to_image_msg(kf.depth)
    if with_image:
        msg.local_features = [
            LocalFeatures(name=name, shape=list(np.shape(value)), data=np.asarray(value, np.float32).ravel())
            for name, value in kf.local_features.items()
        ]
    if kf.pose is not None:
        msg.has_pose = True
        msg.pose = matrix_to_pose(kf.pose[:3, :3], kf.pose[:3, 3])
    msg.base_frame_id = kf.base_frame
    if kf.base_T_camera is not None:
        msg.has_extrinsics = True
        msg.camera_in_base = matrix_to_pose(kf.base_T_camera[:3, :3], kf.base_T_camera[:3, 3])
    return msg


def keyframe_from_msg(msg: KeyframeMsg, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Keyframe:
    image = depth = camera_matrix = None
    lens = RECTIFIED
    if msg.image.width and msg.image.height:
        image = image_msg_to_rgb(msg.image, max_pixels)
        camera_matrix = camera_matrix_from_info(msg.camera_info)
        try:
            lens = lens_from_info(msg.camera_info)
        except LensError:  # our descriptor node never sends one: no intrinsics, no pose
            camera_matrix = None
    if msg.depth.width and msg.depth.height:
        depth = depth_msg_to_array(msg.depth, max_pixels)
    return Keyframe(
        id=int(msg.id),
        stamp=stamp_to_sec(msg.header.stamp),
        stamp_ns=stamp_to_ns(msg.header.stamp),
        lens=lens,
        base_T_camera=pose_to_matrix(msg.camera_in_base) if msg.has_extrinsics else None,
        base_frame=msg.base_frame_id,
        descriptor=np.asarray(msg.descriptor, dtype=np.float32),
        image=image,
        camera_matrix=camera_matrix,
        depth=depth,
        pose=pose_to_matrix(msg.pose) if msg.has_pose else None,
        frame_id=msg.header.frame_id,
        camera=msg.camera,
        local_features={
            f.name: np.asarray(f.data, dtype=np.float32).reshape(tuple(f.shape)) for f in msg.local_features
        },
    )


def candidates_from_msg(msg) -> list[Candidate]:
    frames = list(msg.candidate_frame_ids) or [""] * len(msg.candidate_ids)
    return [
        Candidate(int(i), stamp_to_sec(s), float(sim), frame, stamp_to_ns(s))
        for i, s, sim, frame in zip(
            msg.candidate_ids, msg.candidate_stamps, msg.similarities, frames, strict=True
        )
    ]


def candidates_to_msg(header, query: Keyframe, candidates: list[Candidate], model: str) -> LoopCandidates:
    out = LoopCandidates()
    out.header = header
    out.query = keyframe_to_msg(query, model, with_image=True)
    out.candidate_ids = [c.id for c in candidates]
    out.candidate_stamps = [ns_to_stamp(c.stamp_ns) for c in candidates]
    out.candidate_frame_ids = [c.frame_id for c in candidates]
    out.similarities = [c.similarity for c in candidates]
    return out


def verification_to_msg(query: Keyframe, v: Verification, model: str, reranker: str) -> LoopClosure:
    """A verified candidate as a LoopClosure (status ACCEPTED = passed verification)."""
    msg = LoopClosure()
    msg.header.stamp = ns_to_stamp(query.stamp_ns)
    msg.header.frame_id = query.frame_id
    msg.status = LoopClosure.ACCEPTED if v.passed else LoopClosure.FAILED_VERIFICATION
    msg.reason = v.reason
    msg.query_id, msg.match_id = int(query.id), int(v.candidate.id)
    msg.query_stamp, msg.match_stamp = msg.header.stamp, ns_to_stamp(v.candidate.stamp_ns)
    msg.query_frame_id, msg.match_frame_id = query.frame_id, v.candidate.frame_id
    msg.similarity = float(v.candidate.similarity)
    msg.reranker_score = float(v.score)
    msg.inliers = int(v.inliers)
    msg.model, msg.reranker = model, reranker
    if v.relative_pose is not None:
        msg.pose_kind, msg.relative_pose, msg.covariance = _pose_fields(v.relative_pose)
        direction = np.asarray(v.relative_pose.translation, np.float64)
        norm = float(np.linalg.norm(direction))
        if norm > 0 and np.isfinite(norm):
            msg.translation_direction = matrix_to_vector3(direction / norm)
    if v.base_pose is not None:
        msg.base_frame_id = v.base_frame
        msg.base_pose_kind, msg.base_relative_pose, msg.base_covariance = _pose_fields(v.base_pose)
    return msg


def _pose_fields(pose: RelativePose) -> tuple[int, Pose, list[float]]:
    """(pose_kind, Pose, covariance): a rotation-only pose gets position (0, 0, 0)."""
    translation = pose.translation if pose.metric else np.zeros(3)
    covariance = [float(c) for c in np.ravel(pose.covariance)]
    return int(pose.kind), matrix_to_pose(pose.rotation, translation), covariance


def pose_from_fields(kind: int, pose: Pose, covariance, direction=None) -> RelativePose | None:
    if kind not in (PoseKind.METRIC, PoseKind.ROTATION_ONLY):
        return None
    m = pose_to_matrix(pose)
    if m is None:  # an invalid relative pose is dropped, the verification kept
        return None
    metric = kind == PoseKind.METRIC
    translation = m[:3, 3]
    if not metric:
        translation = np.zeros(3) if direction is None else np.array([direction.x, direction.y, direction.z])
    return RelativePose(m[:3, :3], translation, metric, np.asarray(covariance, np.float64).reshape(6, 6))


def verification_from_msg(msg: LoopClosure) -> Verification:
    cand = Candidate(
        int(msg.match_id),
        stamp_to_sec(msg.match_stamp),
        float(msg.similarity),
        msg.match_frame_id,
        stamp_to_ns(msg.match_stamp),
    )
    base_pose = pose_from_fields(msg.base_pose_kind, msg.base_relative_pose, msg.base_covariance)
    return Verification(
        cand,
        float(msg.reranker_score),
        int(msg.inliers),
        msg.status == LoopClosure.ACCEPTED,
        msg.reason,
        pose_from_fields(msg.pose_kind, msg.relative_pose, msg.covariance, msg.translation_direction),
        base_pose,
        msg.base_frame_id if base_pose is not None else "",
    )


def decision_to_msg(decision: LoopDecision, template: LoopClosure | None, frame_id: str = "") -> LoopClosure:
    """The final decision; ``template`` is the verified candidate message it is about."""
    msg = LoopClosure()
    if template is not None:
        msg = template
    else:
        msg.header.stamp = ns_to_stamp(decision.query_stamp_ns)
        msg.header.frame_id = frame_id
        msg.query_id = int(decision.query_id)
        msg.query_stamp = msg.header.stamp
        msg.reranker_score = float("nan")
        msg.inliers = -1
    msg.status = int(decision.status)
    msg.reason = decision.reason
    return msg


def map_info_to_msg(info: SessionInfo) -> MapInfo:
    """The map session's announcement; the caller stamps the header."""
    return MapInfo(**dataclasses.asdict(info))  # the same field names on both sides


__all__ = [
    "LoopStatus",
    "camera_matrix_from_info",
    "candidates_from_msg",
    "candidates_to_msg",
    "decision_to_msg",
    "depth_msg_to_array",
    "image_msg_to_rgb",
    "keyframe_from_msg",
    "keyframe_to_msg",
    "lens_from_info",
    "map_info_to_msg",
    "matrix_to_pose",
    "pose_to_matrix",
    "ns_to_stamp",
    "sec_to_stamp",
    "stamp_to_ns",
    "stamp_to_sec",
    "verification_from_msg",
    "verification_to_msg",
]
