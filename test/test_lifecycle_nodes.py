"""Descriptor and re-ranker nodes as lifecycle nodes: the model exists only while active."""

from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is needed for the lifecycle tests")

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from vpr_ros.map import load_map  # noqa: E402
from vpr_ros.ros.conversions import rgb_to_image_msg, sec_to_stamp  # noqa: E402
from vpr_ros.ros.descriptor_node import DescriptorNode  # noqa: E402
from vpr_ros.ros.managed import StartupError  # noqa: E402
from vpr_ros.ros.reranker_node import RerankerNode  # noqa: E402

SUCCESS = TransitionCallbackReturn.SUCCESS


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=60 + os.getpid() % 30)  # nothing here needs the network
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def _frame(stamp: float):
    rng = np.random.default_rng(int(stamp))
    msg = rgb_to_image_msg(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    msg.header.stamp = sec_to_stamp(stamp)
    return msg


def test_descriptor_node_loads_on_activate_and_frees_and_saves_on_deactivate(context, tmp_path):
    node = DescriptorNode(
        context=context,
        parameter_overrides=_params(autostart=False, model="mobilenetv2", map_path=str(tmp_path)),
    )
    try:
        assert node.stage is None and not node.active  # waits for a lifecycle manager
        assert node.trigger_configure() == SUCCESS
        assert node.stage is None  # configure reads parameters; the model comes with activate
        assert node.trigger_activate() == SUCCESS
        assert node.active and node.stage.encoder.descriptor_dim == 1280
        model = weakref.ref(node.stage.encoder.model)
        node._process(_frame(1.0))  # what the worker does with an image
        assert len(node.stage.map) == 1

        assert node.trigger_deactivate() == SUCCESS
        gc.collect()
        assert node.stage is None and model() is None, "the model outlived deactivate"
        kmap, _ = load_map(tmp_path, "mobilenetv2", 1280)  # deactivate saved the map
        assert sorted(kmap.records) == [0]

        assert node.trigger_activate() == SUCCESS  # the same map comes back, ids continue
        assert len(node.stage.map) == 1 and node.stage.map.next_id == 1
        assert node.trigger_deactivate() == SUCCESS
        assert node.trigger_cleanup() == SUCCESS
    finally:
        node.destroy_node()


def test_reranker_node_builds_its_reranker_on_activate_and_drops_it_on_deactivate(context):
    node = RerankerNode(context=context, parameter_overrides=_params(autostart=False))
    try:
        assert node.trigger_configure() == SUCCESS and node.stage is None
        assert node.trigger_activate() == SUCCESS
        reranker = weakref.ref(node.stage.reranker)
        assert node.trigger_deactivate() == SUCCESS
        gc.collect()
        assert node.stage is None and reranker() is None
    finally:
        node.destroy_node()


def test_autostart_brings_a_constructed_node_up(context):
    node = DescriptorNode(context=context, parameter_overrides=_params(model="mobilenetv2"))
    try:
        assert node.active and node.stage is not None and node.worker is not None
    finally:
        node.destroy_node()


def test_failed_activation_raises_with_the_reason(context, tmp_path):
    missing = tmp_path / "no_such_checkpoint.pth"
    with pytest.raises(StartupError, match="could not activate.*no_such_checkpoint"):
        DescriptorNode(
            context=context, parameter_overrides=_params(model="mobilenetv2", weights=str(missing))
        )
