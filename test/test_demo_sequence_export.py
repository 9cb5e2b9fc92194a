"""The demo sequence exported for `evaluate`: images, ground truth, poses and intrinsics agree."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_ros.apps.demo_sequence import main as demo_sequence_main
from vpr_ros.apps.demo_sequence import make_demo_sequence
from vpr_ros.evaluation.ground_truth import read_same_place_matrix, read_tum, same_place_from_poses
from vpr_ros.evaluation.sources import ImageFolderSource, read_camera_info_yaml


def test_export_writes_what_evaluate_reads(tmp_path, capsys):
    args = ["--places", "4", "--laps", "1.5", "--size", "96", "64", "--format", "png", "--radius", "3"]
    assert demo_sequence_main(["--export", str(tmp_path / "seq"), *args]) == 0
    assert "--gt-matrix" in capsys.readouterr().out
    seq = make_demo_sequence(num_places=4, laps=1.5, image_size=(96, 64), same_place_radius_m=3.0)
    frames = list(ImageFolderSource(tmp_path / "seq" / "images"))
    assert len(frames) == len(seq) == 12
    for frame, image in zip(frames, seq.images, strict=True):
        np.testing.assert_array_equal(frame.image, image)  # png: lossless
    matrix = read_same_place_matrix(tmp_path / "seq" / "same_place.npy")
    np.testing.assert_array_equal(matrix, seq.same_place)
    track = read_tum(tmp_path / "seq" / "poses.tum")
    np.testing.assert_allclose(track.stamps, seq.stamps)
    same, _ = same_place_from_poses(list(track.poses), 3.0)
    np.testing.assert_array_equal(same, seq.same_place)  # the poses reproduce the matrix
    k, size = read_camera_info_yaml(tmp_path / "seq" / "camera_info.yaml")
    np.testing.assert_allclose(k, seq.camera_matrix)
    assert size == (96, 64)
    with pytest.raises(FileExistsError):
        demo_sequence_main(["--export", str(tmp_path / "seq"), *args])
