"""Helpers for the official-parity fixtures in ../shared/parity (see its README)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def load_fixture(folder: Path) -> dict:
    return json.loads((folder / "fixture.json").read_text())


def regenerate_state_dict(fixture: dict) -> dict[str, np.ndarray]:
    """Rebuild the fixture's weights, in official state_dict order, keys with their prefix."""
    seed = fixture["weights"]["seed"]
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(fixture["weights"]["tensors"]):
        shape = tuple(t["shape"])
        if t["dtype"] == "int64":
            out[t["key"]] = np.full(shape, int(t["mean"]), dtype=np.int64)
        elif t["std"] == 0:
            out[t["key"]] = np.full(shape, np.float32(t["mean"]), dtype=np.float32)
        else:
            z = np.random.default_rng([seed, i]).standard_normal(size=shape, dtype=np.float32)
            value = z * np.float32(t["std"]) + np.float32(t["mean"])
            out[t["key"]] = np.asarray(value, dtype=np.float32).reshape(shape)
    return out


def official_checkpoint(fixture: dict) -> dict:
    """The object the official loader would read from the checkpoint file."""
    sd = {k: torch.from_numpy(v.copy()) for k, v in regenerate_state_dict(fixture).items()}
    key = fixture["checkpoint"]["container_key"]
    return {key: sd} if key else sd


def save_official_checkpoint(fixture: dict, directory: Path) -> Path:
    """Write the fixture weights to ``directory`` under the official file name and layout."""
    path = Path(directory) / fixture["checkpoint"]["file_name"]
    torch.save(official_checkpoint(fixture), path)
    return path


def assert_case_outputs(fixture_dir: Path, case: dict, actual: dict[str, np.ndarray]) -> None:
    """Compare every stored output of ``case`` with ``actual`` using the fixture tolerances."""
    missing = set(case["outputs"]) - set(actual)
    assert not missing, f"case {case['name']}: outputs not produced: {sorted(missing)}"
    for name, file_name in case["outputs"].items():
        expected = np.load(fixture_dir / file_name)
        got = np.asarray(actual[name])
        assert got.shape == expected.shape, f"{case['name']}/{name}: shape {got.shape} != {expected.shape}"
        if expected.dtype == np.int64:
            np.testing.assert_array_equal(got, expected, err_msg=f"{case['name']}/{name}")
        else:
            atol, rtol = case["atol"][name], case["rtol"][name]
            diff = float(np.max(np.abs(got - expected)))
            assert np.allclose(got, expected, atol=atol, rtol=rtol), (
                f"{case['name']}/{name}: max abs diff {diff:.3g} > atol {atol} (rtol {rtol})"
            )
