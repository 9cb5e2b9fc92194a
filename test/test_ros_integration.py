"""The real graph: node executables as separate processes talking over DDS.

Publishes the 84 RTAB-Map corridor images in order and scores /vpr/loop_closures against
ground_truth.bmp (MobileNetV2 baseline, default parameters from config/mobilenetv2.yaml).
"""

from __future__ import annotations

import json
import threading

import cv2
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is needed for the ROS integration tests")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ros_processes import REPO_ROOT, NodeProcess, private_domain_id, wait_until  # noqa: E402
from vpr_ros.evaluation.metrics import score_loop_closures  # noqa: E402
from vpr_ros.ros.conversions import sec_to_stamp  # noqa: E402
from vpr_ros.ros.player import SequencePlayer  # noqa: E402

PARAMS = REPO_ROOT / "config" / "mobilenetv2.yaml"
FRAME_PERIOD = 1.0  # seconds between image stamps


class Graph:
    """Node processes plus a player node in this process, all on one private domain."""

    def __init__(self, domain_id: int, executables: list[str], extra_args: list[str], compressed=False):
        self.procs = [
            NodeProcess(name, ["--ros-args", "--params-file", str(PARAMS), *extra_args], domain_id)
            for name in executables
        ]
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        try:
            self.player = SequencePlayer("/itest/image_raw", compressed=compressed, context=self.context)
        except Exception:
            for p in self.procs:  # never leak node processes into later tests
                p.stop()
            raise
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.player)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def wait_for_descriptor_node(self, timeout=90.0):
        ok = wait_until(lambda: self.player.image_pub.get_subscription_count() > 0, timeout)
        assert ok, "descriptor node never subscribed:\n" + self.logs()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in self.procs)

    def close(self):
        codes = [p.stop() for p in self.procs]
        self.executor.shutdown()
        self.player.destroy_node()
        rclpy.try_shutdown(context=self.context)
        return codes


@pytest.fixture(scope="module")
def rtabmap(rtabmap_samples):
    images = []
    for i in range(1, 85):
        bgr = cv2.imread(str(rtabmap_samples / "images" / f"{i}.jpg"))
        assert bgr is not None, f"cannot read image {i}"
        images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    gt = cv2.imread(str(rtabmap_samples / "ground_truth.bmp"), cv2.IMREAD_GRAYSCALE) == 255
    return images, gt


@pytest.fixture(scope="module")
def graph():
    # DDS discovery between two node processes has, rarely, never completed here (the
    # descriptor's candidates never reached the re-ranker). wait_for_graph detects it from the
    # nodes' /diagnostics; the graph is then restarted once, and the test says so.
    for attempt in (1, 2):
        g = Graph(
            private_domain_id(),
            ["descriptor_node", "reranker_node", "loop_closure_node"],
            ["-p", "image_topic:=/itest/image_raw", "-p", "model:=mobilenetv2"],
        )
        try:
            g.wait_for_descriptor_node()
            g.player.wait_for_graph(timeout=60)
            break
        except (AssertionError, TimeoutError) as exc:
            g.close()
            if attempt == 2:
                raise
            print(f"\ngraph not connected, restarting it once: {exc}")
    yield g
    codes = g.close()
    assert codes == [0, 0, 0], f"nodes did not exit cleanly on SIGINT: {codes}\n{g.logs()}"


def test_rtabmap_corridor_loop_closures(graph, rtabmap):
    images, gt = rtabmap
    stamps = [i * FRAME_PERIOD for i in range(len(images))]
    missing = graph.player.play(images, stamps, frame_timeout=60)
    assert missing == 0, graph.logs()
    assert graph.player.wait_for_decisions(timeout=120), graph.logs()

    frame_of = {kf: int(round(ns * 1e-9 / FRAME_PERIOD)) for kf, ns in graph.player.keyframes.items()}
    closures = sorted((frame_of[m.query_id], frame_of[m.match_id]) for m in graph.player.closures)
    second_half = range(40, 84)  # frames 41-84 revisit 1-40 (and 1-5 / 39-46)
    scores = score_loop_closures(closures, gt, queries=second_half, min_gap=21)
    recalled = sorted({q + 1 for q, m in closures if gt[q, m] and q in second_half})
    report = {k: v for k, v in scores.items() if k != "false_pairs"}
    report["false_pairs_1based"] = [(q + 1, m + 1) for q, m in scores["false_pairs"]]
    report["frames_41_84_with_correct_closure"] = len(recalled)
    print("\nrtabmap integration:", json.dumps(report))

    assert scores["false_positives"] == 0, f"false loop closures: {report['false_pairs_1based']}"
    assert len(recalled) / len(second_half) >= 0.70, f"only {len(recalled)} of 44 frames 41-84 recalled"
    for msg in graph.player.closures:
        assert msg.model == "mobilenetv2" and msg.reranker == "geometric"
        assert msg.inliers >= 20 and msg.similarity > 0
        assert msg.match_id < msg.query_id


def _raw(encoding, h, w, step, data, stamp):
    msg = Image(height=h, width=w, encoding=encoding, step=step, data=data)
    msg.header.stamp = sec_to_stamp(stamp)
    return msg


def test_malformed_raw_images_are_skipped_and_node_keeps_going(graph, rtabmap):
    images, _ = rtabmap
    graph.wait_for_descriptor_node()
    t = 1000.0  # after the corridor run; the gate accepts it
    graph.player.publish_raw(_raw("rgb8", 384, 512, 1536, b"\x00" * 1000, t))  # wrong size
    graph.player.publish_raw(_raw("weird16", 4, 4, 8, b"\x00" * 32, t + 1))  # unknown encoding
    graph.player.publish_raw(_raw("rgb8", 0, 0, 0, b"", t + 2))  # empty
    graph.player.publish_frame(images[0], t + 3)
    assert graph.player.wait_keyframe_with_stamp(t + 3, timeout=60) is not None, graph.logs()
    log = graph.procs[0].output()
    for reason in ("size_mismatch", "unknown_encoding", "empty"):
        assert "skipping image" in log and reason in log, f"no logged '{reason}' skip:\n{log[-2000:]}"
    assert graph.procs[0].alive()


def test_corrupt_jpeg_is_skipped_on_a_compressed_stream(rtabmap):
    images, _ = rtabmap
    g = Graph(
        private_domain_id(1),
        ["descriptor_node"],
        ["-p", "image_topic:=/itest/image_raw", "-p", "compressed:=true", "-p", "model:=mobilenetv2"],
        compressed=True,
    )
    try:
        g.wait_for_descriptor_node()
        bad = CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0 definitely not a jpeg")
        bad.header.stamp = sec_to_stamp(0.0)
        g.player.publish_raw(bad)
        g.player.publish_frame(images[5], 1.0)
        assert g.player.wait_keyframe_with_stamp(1.0, timeout=60) is not None, g.logs()
        log = g.procs[0].output()
        assert "corrupt_compressed" in log, log[-2000:]
        assert g.procs[0].alive()
    finally:
        codes = g.close()
    assert codes == [0], g.logs()


def test_missing_checkpoint_fails_at_start_up_with_a_clear_message(tmp_path):
    missing = tmp_path / "ImAge_Merged.pth"
    proc = NodeProcess(
        "descriptor_node",
        ["--ros-args", "-p", "model:=image", "-p", f"weights:={missing}", "-p", "image_topic:=/itest/none"],
        private_domain_id(9),
    )
    assert wait_until(lambda: not proc.alive(), timeout=90), "node kept running without its checkpoint"
    out = proc.output()
    assert proc.proc.returncode != 0
    assert str(missing) in out and "https://github.com/Lu-Feng/ImAge/releases" in out, out[-2000:]
