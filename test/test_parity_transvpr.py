"""TransVPR reproduces the official Extractor_base + POOL and key-patch matching (shared/parity/transvpr)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import assert_case_outputs, load_fixture, save_official_checkpoint
from vpr_ros.models.transvpr import fuse_attention
from vpr_ros.rerank.keypatch_matching import mutual_nn_matches
from vpr_ros.weights import load_model

# The official score is 0 when too few matches exist to fit a homography.
MIN_MATCHES = 4


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "transvpr"


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    return load_fixture(fixture_dir)


@pytest.fixture(scope="module")
def model(fixture, tmp_path_factory):
    path = save_official_checkpoint(fixture, tmp_path_factory.mktemp("transvpr"))
    model, _ = load_model("transvpr", weights=path)
    assert not model.training
    return model


def _case(fixture, name):
    return next(c for c in fixture["cases"] if c["name"] == name)


def _image(fixture_dir, file_name):
    return torch.from_numpy(np.load(fixture_dir / file_name))


def test_fixture_cases_are_all_covered(fixture):
    assert {c["name"] for c in fixture["cases"]} == {"single_a", "pair_ab"}


def test_single_image_outputs_match_official(model, fixture, fixture_dir):
    case = _case(fixture, "single_a")
    img = _image(fixture_dir, case["inputs"]["img"])
    with torch.inference_mode():
        out = model.extract(img)
        global_only = model(img)
    assert_case_outputs(
        fixture_dir,
        case,
        {
            "global": out["global"].numpy(),
            "local_l4": out["patch_tokens"].numpy(),
            "attn_pool": out["attn_pool"].numpy(),
            "attn_fused": out["attention"].numpy(),
        },
    )
    torch.testing.assert_close(global_only, out["global"])
    assert tuple(out["grid"].tolist()) == (30, 40)
    torch.testing.assert_close(fuse_attention(out["attn_pool"]), out["attention"])


def test_pair_matches_match_official(model, fixture, fixture_dir):
    case = _case(fixture, "pair_ab")
    # Both images in one batch: the re-ranker extracts batches too.
    images = torch.cat([_image(fixture_dir, case["inputs"][k]) for k in ("img_a", "img_b")])
    with torch.inference_mode():
        out = model.extract(images)
    local, attn = out["patch_tokens"].numpy(), out["attention"].numpy()
    # Image A is the query, B the database image (fixture `run`).
    pairs = mutual_nn_matches(local[0], local[1], attn[0], attn[1], threshold=0.02)
    count = len(pairs) if len(pairs) >= MIN_MATCHES else 0
    assert_case_outputs(
        fixture_dir,
        case,
        {
            "global_b": out["global"][1:].numpy(),
            "attn_fused_b": attn[1:],
            "num_mutual_nn": np.array([count], dtype=np.int64),
            "mutual_nn_pairs": pairs,
        },
    )


def test_suppressed_patches_are_zeroed_not_removed():
    # Query patch 0 is negatively correlated with every salient database patch, so its best
    # match is the suppressed database patch 1, whose zeroed similarity (0) beats them all.
    local_q = np.array([[-1.0, -1.0], [0.0, 1.0]], np.float32)
    local_db = np.array([[1.0, 0.0], [5.0, 5.0], [0.0, 1.0]], np.float32)
    attn_q = np.array([1.0, 1.0])
    attn_db = np.array([1.0, 0.0, 1.0])
    pairs = mutual_nn_matches(local_q, local_db, attn_q, attn_db)
    # Database patch 1's row is all zeros, so its own best query is index 0: the pair is mutual.
    assert pairs.tolist() == [[0, 1], [1, 2]]
    # Removing the suppressed patch instead would match query 0 to nothing mutual.
    kept = mutual_nn_matches(local_q, local_db[[0, 2]], attn_q, attn_db[[0, 2]])
    assert kept.tolist() == [[1, 1]]
