"""RegVPR (rebuilt from the paper; random weights, since no official checkpoint exists)."""

from __future__ import annotations

import pytest
import torch

from vpr_ros.models.regvpr import build_regvpr
from vpr_ros.models.salad import build_salad
from vpr_ros.models.vit import dinov2_hub
from vpr_ros.weights import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model, spec = load_model("regvpr", random_init=True)
    assert spec.descriptor_dim == 8448
    return model


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, 322, 322, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def backbone_out(model, image):
    with torch.inference_mode():
        return model.backbone(image)


@pytest.fixture(scope="module")
def descriptor(model, backbone_out):
    with torch.inference_mode():
        return model.aggregator(*backbone_out)


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("batch, size", [(2, (322, 322)), (1, (224, 308))])
def test_descriptor_is_8448_d_and_unit_norm(model, batch, size):
    images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        desc = model(images)
    assert desc.shape == (batch, 8448)
    assert torch.isfinite(desc).all()
    torch.testing.assert_close(desc.norm(dim=-1), torch.ones(batch), atol=1e-5, rtol=0)
    assert not torch.equal(desc[0], desc[-1]) or batch == 1


def test_sizes_off_the_patch_grid_are_refused(model):
    with torch.inference_mode(), pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.zeros(1, 3, 320, 322))


def test_two_runs_are_bitwise_identical(model, image, descriptor):
    with torch.inference_mode():
        again = model(image)
    assert torch.equal(again, descriptor)


def test_inference_builds_no_autograd_graph(model, image, backbone_out):
    # load_model turns gradients off, so even a plain call records nothing.
    assert not any(p.requires_grad for p in model.parameters())
    desc = model.aggregator(*backbone_out)
    assert desc.grad_fn is None and not desc.requires_grad
    with torch.inference_mode():
        desc = model.aggregator(*backbone_out)
    assert desc.is_inference() and desc.grad_fn is None


def test_registers_change_the_descriptor(model, backbone_out, descriptor):
    aggregator = model.aggregator
    saved = aggregator.registers.detach().clone()
    try:
        with torch.no_grad():
            aggregator.registers.copy_(torch.randn(saved.shape, generator=torch.Generator().manual_seed(3)))
        with torch.inference_mode():
            after = aggregator(*backbone_out)
    finally:
        with torch.no_grad():
            aggregator.registers.copy_(saved)
    # Rounding alone gives bitwise-equal results (previous test); this is far above that.
    assert _relative_change(after, descriptor) > 1e-3


def test_adapter_is_live_once_trained(model, image, descriptor):
    """A fresh adapter is zero (pretrained DINOv2 unchanged); a non-zero one changes the output."""
    block = model.backbone.model.blocks[6]
    assert not block.adapter.up.weight.any()
    try:
        with torch.no_grad():
            block.adapter.up.weight.normal_(std=0.02, generator=torch.Generator().manual_seed(4))
        with torch.inference_mode():
            after = model(image)
    finally:
        with torch.no_grad():
            block.adapter.up.weight.zero_()
    assert _relative_change(after, descriptor) > 1e-3


def test_pretrained_dinov2_and_salad_heads_fit_the_layout():
    """Documented choices 1 and 4: DINOv2 and SALAD checkpoints can initialise RegVPR."""
    with torch.device("meta"):
        regvpr = build_regvpr().state_dict()
        dinov2 = dinov2_hub("vit_base", registers=False).state_dict()
        salad = build_salad().state_dict()
    backbone = {k.removeprefix("backbone.model."): v.shape for k, v in regvpr.items() if ".adapter." not in k}
    assert {k: v.shape for k, v in dinov2.items()}.items() <= backbone.items()
    heads = {
        k: v.shape for k, v in salad.items() if k.startswith("aggregator.") and k != "aggregator.dust_bin"
    }
    assert heads.items() <= {k: v.shape for k, v in regvpr.items()}.items()
    assert "aggregator.dust_bin" not in regvpr
