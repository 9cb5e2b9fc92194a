"""evaluate --compare: every verifier on the same descriptors, one decision per keyframe each."""

import csv
import json

import numpy as np
import pytest

from vpr_ros.apps.evaluate import main as evaluate_main
from vpr_ros.evaluation.compare import CachingEncoder


class _CountingEncoder:
    def __init__(self):
        self.calls = 0
        self.descriptor_dim = 3

    def encode(self, images):
        self.calls += len(images)
        return np.stack([np.full(3, float(im.mean())) for im in images])


def test_caching_encoder_runs_the_model_once_per_image():
    inner = _CountingEncoder()
    cached = CachingEncoder(inner)
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 9, np.uint8)
    first = cached.encode([a, b])
    again = cached.encode([b, a])
    assert inner.calls == 2 and cached.descriptor_dim == 3
    np.testing.assert_array_equal(again, first[::-1])


def test_compare_writes_each_verifiers_decisions(rtabmap_samples, tmp_path):
    out = tmp_path / "eval"
    argv = [
        "--images", str(rtabmap_samples / "images"), "--gt-matrix", str(rtabmap_samples / "ground_truth.bmp"),
        "--model", "mobilenetv2", "--max-frames", "60", "--output", str(out), "--no-plots", "--no-progress",
        "--compare", "geometric,none",
    ]  # fmt: skip
    assert evaluate_main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["compare"]) == {"geometric", "none"}
    geometric = report["compare"]["geometric"]
    # The main run and the compare run of the same verifier agree (same descriptors, same code).
    assert geometric["closures"] == report["num_loop_closures"] > 0
    assert geometric["false"] == 0 < report["compare"]["none"]["false"]  # verification earns its cost
    assert report["compare"]["none"]["verify_ms_median"] < geometric["verify_ms_median"]
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert len(rows) == report["num_keyframes"] and {"geometric_status", "none_status"} <= set(rows[0])


def test_compare_refuses_unknown_verifiers_and_replay(tmp_path):
    with pytest.raises(SystemExit):
        evaluate_main(
            [
                "--images",
                str(tmp_path),
                "--gt-matrix",
                "x.npy",
                "--output",
                str(tmp_path),
                "--compare",
                "sift2",
            ]
        )
