"""make_bag writes rosbag2 (mcap, sqlite3) that BagSource reads back exactly; broken bags fail clearly."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest

from vpr_ros.apps.make_bag import main as make_bag_main
from vpr_ros.apps.make_bag import make_bag
from vpr_ros.evaluation.ground_truth import read_tum, write_tum
from vpr_ros.evaluation.sources import BagSource, ImageFolderSource, SourceError, natural_sort_key
from vpr_ros.geometry import quaternion_to_matrix

N_IMAGES = 10
K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """frame_1.png .. frame_10.png (natural order differs from string order), poses, camera info."""
    root = tmp_path_factory.mktemp("seq")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    rgbs = []
    for i in range(N_IMAGES):
        rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(images / f"frame_{i + 1}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rgbs.append(rgb)
    poses = []
    for i in range(N_IMAGES):
        m = np.eye(4)
        m[:3, :3] = quaternion_to_matrix(0, 0, math.sin(0.1 * i), math.cos(0.1 * i))
        m[:3, 3] = (i * 0.5, -i * 0.25, 0.1)
        poses.append(m)
    # Poses at twice the image rate, as odometry would come: image i at t = 0.5 i.
    stamps = np.arange(2 * N_IMAGES) * 0.25
    dense = [poses[i // 2] for i in range(2 * N_IMAGES)]
    write_tum(root / "poses.tum", stamps, dense)
    from vpr_ros.evaluation.sources import write_camera_info_yaml

    write_camera_info_yaml(root / "camera_info.yaml", K, 64, 48)
    return {"root": root, "images": images, "rgbs": rgbs, "poses": poses}


def test_images_are_listed_in_natural_order(folder):
    names = [p.name for p in ImageFolderSource(folder["images"]).files]
    assert names == [f"frame_{i}.png" for i in range(1, N_IMAGES + 1)]
    assert sorted(["a10", "a2", "a1"], key=natural_sort_key) == ["a1", "a2", "a10"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_bag_round_trip(folder, tmp_path, storage, compressed):
    bag = tmp_path / "bag"
    summary = make_bag(
        folder["images"],
        bag,
        storage=storage,
        compressed=compressed,
        frame_period=0.5,
        start_time=100.0,
        camera_info=folder["root"] / "camera_info.yaml",
    )
    assert summary.images == N_IMAGES and summary.camera_infos == N_IMAGES
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert len(list(bag.glob(f"*{suffix}"))) == 1 and (bag / "metadata.yaml").is_file()

    source = BagSource(bag, "/camera/image_raw", camera_info_topic="/camera/camera_info")
    frames = list(source)
    assert len(source) == len(frames) == N_IMAGES
    for i, frame in enumerate(frames):
        assert frame.index == i
        assert frame.stamp == pytest.approx(100.0 + 0.5 * i)
        np.testing.assert_array_equal(frame.image, folder["rgbs"][i])  # raw and PNG are lossless
        np.testing.assert_allclose(frame.camera_matrix, K)
        assert frame.pose is None
    # A single storage file opens as well as the bag directory.
    assert len(BagSource(next(bag.glob(f"*{suffix}")), "/camera/image_raw")) == N_IMAGES


@pytest.mark.parametrize("encoding", ["bgr8", "mono8"])
def test_raw_encodings_decode_to_the_same_rgb(folder, tmp_path, encoding):
    make_bag(folder["images"], tmp_path / "bag", encoding=encoding, max_frames=2)
    frames = list(BagSource(tmp_path / "bag", "/camera/image_raw"))
    assert len(frames) == 2
    expected = folder["rgbs"][1]
    if encoding == "mono8":
        grey = cv2.cvtColor(cv2.cvtColor(expected, cv2.COLOR_RGB2BGR), cv2.COLOR_BGR2GRAY)
        expected = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(frames[1].image, expected)


@pytest.mark.parametrize("pose_type", ["odometry", "pose", "pose_cov"])
def test_pose_topics_give_each_frame_its_pose(folder, tmp_path, pose_type):
    bag = tmp_path / "bag"
    summary = make_bag(
        folder["images"], bag, frame_period=0.5, poses=folder["root"] / "poses.tum", pose_type=pose_type
    )
    assert summary.poses == 2 * N_IMAGES
    source = BagSource(bag, "/camera/image_raw", pose_topic="/odom")
    assert source.poses is not None and len(source.poses) == 2 * N_IMAGES
    for i, frame in enumerate(source):
        np.testing.assert_allclose(frame.pose, folder["poses"][i], atol=1e-9)


def test_tum_poses_follow_frames_of_an_image_folder(folder):
    track = read_tum(folder["root"] / "poses.tum")
    frames = list(ImageFolderSource(folder["images"], frame_period=0.5, poses=track))
    for i, frame in enumerate(frames):
        np.testing.assert_allclose(frame.pose, folder["poses"][i], atol=1e-9)
    # A frame period that does not match the poses leaves frames without pose.
    far = list(ImageFolderSource(folder["images"], frame_period=7.0, poses=track, max_pose_dt=0.1))
    assert far[0].pose is not None and all(f.pose is None for f in far[1:])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_a_clear_error(folder, tmp_path, storage):
    bag = tmp_path / "bag"
    make_bag(folder["images"], bag, storage=storage)
    data_file = next(p for p in bag.iterdir() if p.name != "metadata.yaml")
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(SourceError, match="truncated"):
        list(BagSource(bag, "/camera/image_raw"))


def test_bag_without_the_image_topic_names_the_topics_it_has(folder, tmp_path):
    bag = tmp_path / "bag"
    make_bag(folder["images"], bag, image_topic="/front/image_raw", poses=folder["root"] / "poses.tum")
    with pytest.raises(SourceError, match=r"no topic /camera/image_raw.*/front/image_raw"):
        BagSource(bag, "/camera/image_raw")
    with pytest.raises(SourceError, match="expected sensor_msgs/msg/Image"):
        BagSource(bag, "/odom")
    with pytest.raises(SourceError, match="expected nav_msgs/msg/Odometry"):
        BagSource(bag, "/front/image_raw", pose_topic="/front/image_raw")
    with pytest.raises(SourceError, match="not found"):
        BagSource(tmp_path / "nothing", "/camera/image_raw")


def test_undecodable_images_are_skipped_and_counted(folder, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(folder["images"], images)
    (images / "frame_3.png").write_bytes(b"\x89PNG not really")
    make_bag(images, tmp_path / "bag", compressed=True)
    source = BagSource(tmp_path / "bag", "/camera/image_raw")
    frames = list(source)
    assert [f.index for f in frames] == [i for i in range(N_IMAGES) if i != 2]  # indices stay aligned
    assert source.bad_images == 1 and source.bad_image_reasons == {"corrupt_compressed": 1}


def test_cli_writes_a_bag_and_refuses_to_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "cli_bag"
    args = ["--images", str(folder["images"]), "--output", str(out), "--storage", "sqlite3"]
    args += ["--poses", str(folder["root"] / "poses.tum"), "--pose-type", "pose", "--max-frames", "3"]
    assert make_bag_main(args) == 0
    assert "3 images" in capsys.readouterr().out
    assert len(BagSource(out, "/camera/image_raw", pose_topic="/odom")) == 3
    assert make_bag_main(args) == 2
    assert "exists already" in capsys.readouterr().err
