"""Shared pytest fixtures: where the shared data lives, thread caps for 2-core machines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout (and beside CI's fresh clone).
SHARED_DIR = Path(os.environ.get("VPR_ROS_SHARED", REPO_ROOT.parent / "shared"))
PARITY_DIR = SHARED_DIR / "parity"
RTABMAP_SAMPLES = SHARED_DIR / "data" / "rtabmap_samples"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # the ROS-only tests do not need torch
        pass


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not PARITY_DIR.is_dir():
        pytest.fail(f"parity fixtures not found at {PARITY_DIR}; set VPR_ROS_SHARED")
    return PARITY_DIR


@pytest.fixture(scope="session")
def rtabmap_samples() -> Path:
    if not RTABMAP_SAMPLES.is_dir():
        pytest.fail(f"rtabmap samples not found at {RTABMAP_SAMPLES}; set VPR_ROS_SHARED")
    return RTABMAP_SAMPLES
