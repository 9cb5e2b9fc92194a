"""Turns RGB images into descriptors with a registry model: preprocessing, device, batching."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .models.base import InputPolicy


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present (desktop GPU or Jetson), else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available (use 'cpu' or 'auto')")
    return dev


_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def preprocess(image: np.ndarray, policy: InputPolicy, size: tuple[int, int] | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB -> 3xHxW float32 normalised network input at ``size`` (default native)."""
    h, w = policy.validate_size(size or policy.size)
    if policy.resize == "center_crop":
        ih, iw = image.shape[:2]
        scale = min(ih / h, iw / w)
        ch, cw = round(h * scale), round(w * scale)
        y0, x0 = (ih - ch) // 2, (iw - cw) // 2
        image = image[y0 : y0 + ch, x0 : x0 + cw]
    shrinking = image.shape[0] > h or image.shape[1] > w
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    x = resized.astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(policy.mean, np.float32)) / np.asarray(policy.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class Encoder:
    """A loaded model plus everything needed to run it on camera images.

    ``precision`` other than fp32 is only used on CUDA (autocast); CPU always runs fp32.
    """

    def __init__(
        self,
        model_name: str,
        weights: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        random_init: bool = False,
    ):
        from .weights import load_model  # heavy imports stay out of module import time

        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got '{precision}'")
        self.device = resolve_device(device)
        self.model, self.spec = load_model(
            model_name, weights, device=str(self.device), random_init=random_init
        )
        self.input_size = self.spec.input.validate_size(input_size or self.spec.input.size)
        self.dtype = _PRECISIONS[precision] if self.device.type == "cuda" else torch.float32
        self.name = model_name
        if self.device.type == "cpu":
            # Pretrained CNNs produce subnormal activations that make x86 CPUs many times
            # slower (measured 2-10x on MobileNetV2); flushing them changes nothing visible.
            torch.set_flush_denormal(True)

    @property
    def descriptor_dim(self) -> int:
        return self.spec.descriptor_dim

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        arrays = [preprocess(img, self.spec.input, self.input_size) for img in images]
        return torch.from_numpy(np.stack(arrays)).to(self.device)

    def _run(self, fn, images: Sequence[np.ndarray]):
        batch = self._batch(images)
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32),
        ):
            return fn(batch)

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """[B] RGB images -> [B, D] float32 L2-normalised descriptors."""
        out = self._run(self.model, images)
        return out.float().cpu().numpy()

    def extract(self, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Global descriptors plus the model's local features (numpy, batch first)."""
        out = self._run(self.model.extract, images)
        return {k: (v.float().cpu().numpy() if torch.is_tensor(v) else v) for k, v in out.items()}
