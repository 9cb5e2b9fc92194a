"""The DINOv2 ViT-B/14-reg4 backbone reproduces the official hub model (shared/parity/dinov2_vitb14_reg4).

The bare backbone is not a place-recognition model, so it has no registry row. It is loaded
through the same file reader and strict loader that ``load_model`` uses, with a WeightsSpec
built from the fixture's checkpoint layout.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import assert_case_outputs, load_fixture, save_official_checkpoint
from vpr_ros.models.base import WeightsSpec
from vpr_ros.models.vit import DinoVisionTransformer, dinov2_hub
from vpr_ros.weights import load_state_dict_strict, read_state_dict


@pytest.fixture(scope="module")
def fixture_dir(parity_dir):
    return parity_dir / "dinov2_vitb14_reg4"


@pytest.fixture(scope="module")
def fixture(fixture_dir):
    return load_fixture(fixture_dir)


@pytest.fixture(scope="module")
def state_dict(fixture, tmp_path_factory):
    path = save_official_checkpoint(fixture, tmp_path_factory.mktemp("dinov2"))
    layout = fixture["checkpoint"]
    spec = WeightsSpec(
        file_name=path.name, container_key=layout["container_key"], key_prefix=layout["key_prefix"]
    )
    return read_state_dict(path, spec)


def _load(state_dict, model: DinoVisionTransformer) -> DinoVisionTransformer:
    load_state_dict_strict(model, state_dict, source="dinov2_vitb14_reg4 fixture")
    return model.eval()


@pytest.fixture(scope="module")
def model(state_dict):
    return _load(state_dict, dinov2_hub("vit_base", registers=True))


def _outputs(model, x: torch.Tensor, rows: int, cols: int) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        f = model.forward_features(x)
    grid = f["patch"].reshape(x.shape[0], rows, cols, -1)
    return {
        "cls": f["cls"].numpy(),
        "reg": f["registers"].numpy(),
        "patch": f["patch"].numpy(),
        # First and last rows of the patch grid: pins the row-major order on a non-square input.
        "patch_rows_first_last": grid[:, [0, rows - 1]].numpy(),
    }


def _input(fixture_dir, case) -> torch.Tensor:
    return torch.from_numpy(np.load(fixture_dir / case["inputs"]["x"]))


def test_state_dict_keys_are_official_in_order(model, fixture):
    assert list(model.state_dict()) == [t["key"] for t in fixture["weights"]["tensors"]]


@pytest.mark.parametrize("case_name", ["x322", "x224x308"])
def test_forward_features_match_official(model, fixture, fixture_dir, case_name):
    case = next(c for c in fixture["cases"] if c["name"] == case_name)
    x = _input(fixture_dir, case)
    actual = _outputs(model, x, *model.grid_size(*x.shape[-2:]))
    assert_case_outputs(fixture_dir, case, {k: v for k, v in actual.items() if k in case["outputs"]})


def test_fixture_cases_are_all_covered(fixture):
    assert {c["name"] for c in fixture["cases"]} == {"x322", "x224x308"}


def test_other_interpolation_convention_is_detected(state_dict, fixture, fixture_dir):
    """The offset/antialias switch is wired: the non-register convention misses the fixture."""
    offset, antialias = fixture["checks"]["pos_embed_interpolation"]["alternative_offset_antialias"]
    wrong = _load(
        state_dict,
        DinoVisionTransformer(
            768, 12, 12, num_register_tokens=4, interpolate_offset=offset, interpolate_antialias=antialias
        ),
    )
    case = next(c for c in fixture["cases"] if c["name"] == "x224x308")
    actual = _outputs(wrong, _input(fixture_dir, case), 16, 22)
    with pytest.raises(AssertionError):
        assert_case_outputs(fixture_dir, case, {k: actual[k] for k in case["outputs"]})
