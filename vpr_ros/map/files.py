"""Durable file writes for map directories: write + fsync, directory fsync, checksums, npy I/O.

A rename only survives a crash once the directory holding it is fsynced, so every writer
in this package fsyncs the file, then its directory, before anything names it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data, fsync: bool = True) -> str:
    """Write, optionally fsync, and return the sha256 of what was written."""
    view = memoryview(data).cast("B")
    with open(path, "wb") as f:
        f.write(view)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return hashlib.sha256(view).hexdigest()


def write_npy(path: Path, array: np.ndarray, fsync: bool = True) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Never unpickles: a map file cannot run code."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
