"""ROS messages <-> core types. The only place that knows both sides."""

from __future__ import annotations

import math

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..image_conversion import decode_compressed, decode_depth, decode_raw, encode_rgb8
from ..msg import Keyframe as KeyframeMsg
from ..msg import LocalFeatures, LoopClosure
from ..types import Candidate, Keyframe, LoopDecision, LoopStatus, RelativePose, Verification


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = math.floor(t)
    return Time(sec=int(sec), nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


def image_msg_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> RGB uint8 (raises BadImageError)."""
    if isinstance(msg, CompressedImage):
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


def depth_msg_to_array(msg: Image) -> np.ndarray:
    return decode_depth(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))


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
    return k if k[0, 0] > 0 and k[1, 1] > 0 else None


def pose_to_matrix(pose: Pose) -> np.ndarray:
    x, y, z, w = pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    m = np.eye(4)
    m[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    m[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return m


def matrix_to_pose(rotation: np.ndarray, translation: np.ndarray) -> Pose:
    r = np.asarray(rotation, dtype=np.float64)
    # Shepperd's method: pick the largest diagonal term for numerical stability.
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        w, x, y, z = 0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        w, x, y, z = (r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        w, x, y, z = (r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        w, x, y, z = (r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in np.ravel(translation)[:3])
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = x, y, z, w
    return pose


def keyframe_to_msg(kf: Keyframe, model: str, with_image: bool = True) -> KeyframeMsg:
    msg = KeyframeMsg()
    msg.header.stamp = sec_to_stamp(kf.stamp)
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
    return msg


def keyframe_from_msg(msg: KeyframeMsg) -> Keyframe:
    image = depth = camera_matrix = None
    if msg.image.width and msg.image.height:
        image = image_msg_to_rgb(msg.image)
        camera_matrix = camera_matrix_from_info(msg.camera_info)
    if msg.depth.width and msg.depth.height:
        depth = depth_msg_to_array(msg.depth)
    return Keyframe(
        id=int(msg.id),
        stamp=stamp_to_sec(msg.header.stamp),
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
    return [
        Candidate(int(i), stamp_to_sec(s), float(sim))
        for i, s, sim in zip(msg.candidate_ids, msg.candidate_stamps, msg.similarities, strict=True)
    ]


def verification_to_msg(query: Keyframe, v: Verification, model: str, reranker: str) -> LoopClosure:
    """A verified candidate as a LoopClosure (status ACCEPTED = passed verification)."""
    msg = LoopClosure()
    msg.header.stamp = sec_to_stamp(query.stamp)
    msg.header.frame_id = query.frame_id
    msg.status = LoopClosure.ACCEPTED if v.passed else LoopClosure.FAILED_VERIFICATION
    msg.reason = v.reason
    msg.query_id, msg.match_id = int(query.id), int(v.candidate.id)
    msg.query_stamp, msg.match_stamp = msg.header.stamp, sec_to_stamp(v.candidate.stamp)
    msg.query_frame_id = query.frame_id
    msg.similarity = float(v.candidate.similarity)
    msg.reranker_score = float(v.score)
    msg.inliers = int(v.inliers)
    msg.model, msg.reranker = model, reranker
    if v.relative_pose is not None:
        msg.has_relative_pose = True
        msg.pose_is_metric = bool(v.relative_pose.metric)
        msg.relative_pose = matrix_to_pose(v.relative_pose.rotation, v.relative_pose.translation)
        msg.covariance = [float(c) for c in np.ravel(v.relative_pose.covariance)]
    return msg


def verification_from_msg(msg: LoopClosure) -> Verification:
    pose = None
    if msg.has_relative_pose:
        m = pose_to_matrix(msg.relative_pose)
        pose = RelativePose(m[:3, :3], m[:3, 3], msg.pose_is_metric, np.asarray(msg.covariance).reshape(6, 6))
    cand = Candidate(int(msg.match_id), stamp_to_sec(msg.match_stamp), float(msg.similarity))
    return Verification(
        cand,
        float(msg.reranker_score),
        int(msg.inliers),
        msg.status == LoopClosure.ACCEPTED,
        msg.reason,
        pose,
    )


def decision_to_msg(decision: LoopDecision, template: LoopClosure | None, frame_id: str = "") -> LoopClosure:
    """The final decision; ``template`` is the verified candidate message it is about."""
    msg = LoopClosure()
    if template is not None:
        msg = template
    else:
        msg.header.stamp = sec_to_stamp(decision.query_stamp)
        msg.header.frame_id = frame_id
        msg.query_id = int(decision.query_id)
        msg.query_stamp = msg.header.stamp
        msg.reranker_score = float("nan")
        msg.inliers = -1
    msg.status = int(decision.status)
    msg.reason = decision.reason
    return msg


__all__ = [
    "LoopStatus",
    "camera_matrix_from_info",
    "candidates_from_msg",
    "decision_to_msg",
    "depth_msg_to_array",
    "image_msg_to_rgb",
    "keyframe_from_msg",
    "keyframe_to_msg",
    "matrix_to_pose",
    "pose_to_matrix",
    "sec_to_stamp",
    "stamp_to_sec",
    "verification_from_msg",
    "verification_to_msg",
]
