"""The colcon build of vpr_ros: generated messages, installed executables and data files.

These tests read the install made by ``colcon build`` (``make build``). They run in the
same pytest session as the rest of the suite, so they also pin down that the suite
imports the installed ``vpr_ros`` (which has ``.msg``) rather than the source tree.
"""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import vpr_ros

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_INSTALL = REPO_ROOT / "install" / "vpr_ros"

# scripts/<name> -> module whose main() it calls (the `ros2 run vpr_ros <name>` names).
EXECUTABLES = {
    "descriptor_node": "vpr_ros.ros.descriptor_node",
    "reranker_node": "vpr_ros.ros.reranker_node",
    "loop_closure_node": "vpr_ros.ros.loop_closure_node",
    "pose_graph_node": "vpr_ros.ros.pose_graph_node",
    "backend_adapter_node": "vpr_ros.ros.backend_adapter_node",
    "vpr_graph": "vpr_ros.ros.graph",
    "demo": "vpr_ros.apps.demo",
    "evaluate": "vpr_ros.apps.evaluate",
    "make_bag": "vpr_ros.apps.make_bag",
    "fetch_weights": "vpr_ros.apps.fetch_weights",
    "benchmark": "vpr_ros.apps.benchmark",
}


def _install_prefix_of_imported_package() -> Path | None:
    """Prefix of the colcon install `vpr_ros` was imported from, or None."""
    # <prefix>/lib/pythonX.Y/site-packages/vpr_ros/__init__.py; not resolved, so a
    # --symlink-install still counts as the install.
    init = Path(vpr_ros.__file__).absolute()
    if len(init.parents) < 5:
        return None
    prefix = init.parents[4]
    return prefix if (prefix / "share" / "vpr_ros" / "package.xml").is_file() else None


@pytest.fixture(scope="module")
def prefix() -> Path:
    found = _install_prefix_of_imported_package()
    if found is not None:
        return found
    if (LOCAL_INSTALL / "share" / "vpr_ros" / "package.xml").is_file():
        pytest.fail(
            f"vpr_ros was imported from {vpr_ros.__file__}, not from the colcon install in "
            f"{LOCAL_INSTALL}: the source tree shadows it (e.g. `python -m pytest` puts the "
            "working directory first). Run `make test`, or `source tools/env.sh && pytest`."
        )
    pytest.skip(
        f"not running from a colcon install (vpr_ros imported from {vpr_ros.__file__}); "
        "build it with `make build` and run `make test`"
    )


@pytest.fixture(scope="module")
def msgs(prefix):
    from vpr_ros import msg

    return msg


def _field_types(msg_class) -> dict[str, str]:
    return msg_class.get_fields_and_field_types()


def test_msg_module_comes_from_the_same_install_as_the_python_code(prefix, msgs):
    import vpr_ros.models  # noqa: F401  (the hand-written code next to the generated one)

    assert Path(msgs.__file__).absolute().is_relative_to(prefix)
    assert Path(sys.modules["vpr_ros.models"].__file__).absolute().is_relative_to(prefix)


def test_loop_closure_status_constants_are_distinct_and_stable(msgs):
    lc = msgs.LoopClosure
    expected = {
        "ACCEPTED": 0,
        "LOW_SIMILARITY": 1,
        "FAILED_VERIFICATION": 2,
        "FAILED_CONSISTENCY": 3,
        "NO_CANDIDATES": 4,
    }
    assert {name: getattr(lc, name) for name in expected} == expected


def test_loop_closure_carries_what_a_slam_back_end_needs(msgs):
    types = _field_types(msgs.LoopClosure)
    expected = {
        "header": "std_msgs/Header",
        "status": "uint8",
        "reason": "string",
        "query_id": "uint64",
        "match_id": "uint64",
        "query_stamp": "builtin_interfaces/Time",
        "match_stamp": "builtin_interfaces/Time",
        "similarity": "float",
        "reranker_score": "float",
        "inliers": "int32",
        "pose_kind": "uint8",
        "relative_pose": "geometry_msgs/Pose",
        "translation_direction": "geometry_msgs/Vector3",
        "covariance": "double[36]",
        "base_frame_id": "string",
        "base_pose_kind": "uint8",
        "base_relative_pose": "geometry_msgs/Pose",
        "base_covariance": "double[36]",
        "model": "string",
        "reranker": "string",
    }
    assert {name: types.get(name) for name in expected} == expected


def test_loop_closure_covariance_is_a_6x6_float64_array(msgs):
    closure = msgs.LoopClosure()
    assert len(closure.covariance) == 36
    assert closure.covariance.dtype.name == "float64"
    assert not closure.covariance.any()


def test_keyframe_candidates_and_array_messages_have_their_fields(msgs):
    assert (
        _field_types(msgs.Keyframe).items()
        >= {
            "header": "std_msgs/Header",
            "id": "uint64",
            "camera": "string",
            "model": "string",
            "descriptor": "sequence<float>",
            "image": "sensor_msgs/Image",
            "camera_info": "sensor_msgs/CameraInfo",
            "depth": "sensor_msgs/Image",
            "has_pose": "boolean",
            "pose": "geometry_msgs/Pose",
        }.items()
    )
    assert (
        _field_types(msgs.LoopCandidates).items()
        >= {
            "header": "std_msgs/Header",
            "query": "vpr_ros/Keyframe",
            "candidate_ids": "sequence<uint64>",
            "candidate_stamps": "sequence<builtin_interfaces/Time>",
            "candidate_frame_ids": "sequence<string>",
            "similarities": "sequence<float>",
        }.items()
    )
    assert (
        _field_types(msgs.LoopClosureArray).items()
        >= {
            "header": "std_msgs/Header",
            "query_id": "uint64",
            "closures": "sequence<vpr_ros/LoopClosure>",
        }.items()
    )


def test_loop_closure_array_survives_cdr_serialization(msgs):
    # Loads the generated C type support, which a broken build fails to do.
    from rclpy.serialization import deserialize_message, serialize_message

    closure = msgs.LoopClosure(
        status=msgs.LoopClosure.FAILED_CONSISTENCY,
        reason="1 of 3 neighbours agree",
        query_id=2**40 + 7,
        match_id=12,
        similarity=0.75,
        reranker_score=math.nan,
        inliers=-1,
        pose_kind=msgs.LoopClosure.POSE_METRIC,
        model="mobilenetv2",
        reranker="none",
    )
    closure.relative_pose.orientation.w = 1.0
    closure.covariance[0] = 0.25
    closure.covariance[35] = 4.0
    array = msgs.LoopClosureArray(query_id=2**40 + 7, closures=[closure, msgs.LoopClosure()])

    back = deserialize_message(serialize_message(array), msgs.LoopClosureArray)

    assert back.query_id == 2**40 + 7
    assert len(back.closures) == 2
    first = back.closures[0]
    assert (first.status, first.reason, first.query_id, first.inliers) == (
        msgs.LoopClosure.FAILED_CONSISTENCY,
        "1 of 3 neighbours agree",
        2**40 + 7,
        -1,
    )
    assert math.isnan(first.reranker_score)
    assert first.covariance[0] == 0.25 and first.covariance[35] == 4.0
    assert first.relative_pose.orientation.w == 1.0


def test_every_script_is_listed_here():
    # A new scripts/ entry needs a line in CMakeLists.txt install(PROGRAMS) and here.
    on_disk = {p.name for p in (REPO_ROOT / "scripts").iterdir() if p.is_file()}
    assert on_disk == set(EXECUTABLES)


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_executable_is_installed_for_ros2_run(prefix, name):
    installed = prefix / "lib" / "vpr_ros" / name
    assert installed.is_file(), f"{installed} missing: is it in install(PROGRAMS) in CMakeLists.txt?"
    assert os.access(installed, os.X_OK), f"{installed} is not executable"
    text = installed.read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    assert re.search(rf"^from {re.escape(EXECUTABLES[name])} import main$", text, re.MULTILINE)


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_executable_target_module_exists(prefix, name):
    import importlib.util

    module = EXECUTABLES[name]
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        spec = None
    assert spec is not None, f"scripts/{name} calls {module}.main, but there is no module {module}"


@pytest.mark.parametrize("folder", ["launch", "config"])
def test_data_folder_is_installed_under_share(prefix, folder):
    source = REPO_ROOT / folder
    files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file()) if source.is_dir() else []
    if not files:
        pytest.skip(f"{folder}/ holds no files yet, so nothing is installed from it")
    share = prefix / "share" / "vpr_ros" / folder
    missing = [str(rel) for rel in files if not (share / rel).is_file()]
    assert not missing, f"not installed under {share} (run `make build`): {missing}"


def test_every_python_file_is_installed(prefix):
    source = REPO_ROOT / "vpr_ros"
    installed = Path(vpr_ros.__file__).absolute().parent
    if installed == source:
        pytest.skip("vpr_ros imported from the source tree")
    missing = [
        str(p.relative_to(source))
        for p in source.rglob("*.py")
        if "__pycache__" not in p.parts and not (installed / p.relative_to(source)).is_file()
    ]
    assert not missing, f"new files not installed yet (run `make build`): {missing}"


def test_symlink_install_points_into_this_source_tree(prefix):
    init = Path(vpr_ros.__file__).absolute()
    if not init.is_symlink():
        pytest.skip("built without --symlink-install")
    assert init.resolve() == (REPO_ROOT / "vpr_ros" / "__init__.py").resolve()


def test_package_xml_version_matches_python_package():
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    assert root.findtext("name") == "vpr_ros"
    assert root.findtext("version") == vpr_ros.__version__
    assert root.find("export/build_type").text == "ament_cmake"
