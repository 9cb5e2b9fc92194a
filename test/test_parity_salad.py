"""DINOv2-SALAD reproduces the official hub model (shared/parity/salad), loaded through load_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import assert_case_outputs, load_fixture, save_official_checkpoint
from vpr_ros.weights import load_model


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "salad"


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    return load_fixture(fixture_dir)


@pytest.fixture(scope="module")
def model(fixture, tmp_path_factory):
    path = save_official_checkpoint(fixture, tmp_path_factory.mktemp("salad"))
    model, spec = load_model("salad", weights=path)
    assert not model.training and spec.descriptor_dim == 8448
    return model


def test_fixture_cases_are_all_covered(fixture):
    assert {c["name"] for c in fixture["cases"]} == {"x322"}


def test_descriptor_and_backbone_cls_match_official(model, fixture, fixture_dir):
    case = fixture["cases"][0]
    x = torch.from_numpy(np.load(fixture_dir / case["inputs"]["x"]))
    with torch.inference_mode():
        actual = {"desc": model(x).numpy(), "backbone_cls": model.backbone(x)[1].numpy()}
    assert_case_outputs(fixture_dir, case, actual)


def test_too_few_patches_for_the_dustbin_is_refused(model):
    # 112x112 px is an 8x8 grid: 64 patches for 64 clusters leaves the dustbin no mass.
    with torch.inference_mode(), pytest.raises(ValueError, match="more patches"):
        model(torch.zeros(1, 3, 112, 112))
