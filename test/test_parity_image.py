"""ImAge reproduces the official hub model (shared/parity/image), loaded through load_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import assert_case_outputs, load_fixture, save_official_checkpoint
from vpr_ros.weights import load_model


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "image"


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    return load_fixture(fixture_dir)


@pytest.fixture(scope="module")
def model(fixture, tmp_path_factory):
    # {'model_state_dict': {'module.…': …}} as released; load_model unwraps and strips the prefix.
    path = save_official_checkpoint(fixture, tmp_path_factory.mktemp("image"))
    model, spec = load_model("image", weights=path)
    assert not model.training and spec.descriptor_dim == 6144
    return model


def _input(fixture_dir, case) -> torch.Tensor:
    return torch.from_numpy(np.load(fixture_dir / case["inputs"]["x"]))


def test_fixture_cases_are_all_covered(fixture):
    assert {c["name"] for c in fixture["cases"]} == {"x322", "x224x308", "x322_b2"}


@pytest.mark.parametrize("case_name", ["x322", "x224x308", "x322_b2"])
def test_descriptor_matches_official(model, fixture, fixture_dir, case_name):
    case = next(c for c in fixture["cases"] if c["name"] == case_name)
    with torch.inference_mode():
        desc = model(_input(fixture_dir, case))
    assert_case_outputs(fixture_dir, case, {"desc": desc.numpy()})


def test_extract_gives_descriptor_and_final_norm_patch_tokens(model, fixture, fixture_dir):
    case = next(c for c in fixture["cases"] if c["name"] == "x224x308")
    x = _input(fixture_dir, case)
    with torch.inference_mode():
        out = model.extract(x)
        desc = model(x)
    assert_case_outputs(fixture_dir, case, {"desc": out["global"].numpy()})
    torch.testing.assert_close(out["global"], desc, rtol=0, atol=0)
    patches = out["patch_tokens"]
    assert patches.shape == (1, 16 * 22, 768)
    # Final LayerNorm output: each token is centred before the affine part.
    norm = model.backbone.norm
    centred = (patches - norm.bias) / norm.weight
    torch.testing.assert_close(centred.mean(-1), torch.zeros(1, 16 * 22), atol=1e-4, rtol=0)
