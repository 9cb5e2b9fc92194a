"""Durable file writes for map directories: write + fsync, directory fsync, checksums, npy I/O.

A rename only survives a crash once the directory holding it is fsynced, so every writer
in this package fsyncs the file, then its directory, before anything names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
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


def write_npy(path: Path, array: np.ndarray, fsync: bool = True) -> str:
    """Write an array as ``.npy`` (no pickles); returns the sha256 of the file."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getbuffer(), fsync)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Never unpickles: a map file cannot run code."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


# -- reading and deleting without following symlinks -----------------------------------------------
def is_real_dir(path: Path) -> bool:
    """A directory that is not a symlink (``Path.is_dir`` follows links)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_tree(path: Path) -> None:
    """Delete a folder we wrote, or a file; a symlink loses only the link, never its target."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path, ignore_errors=True)  # rmtree never follows links inside the tree
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _no_constants(name: str):
    raise ValueError(f"non-finite number {name}")


def parse_json(text: str | bytes):
    """json.loads without NaN/Infinity (Python accepts them; they are not JSON)."""
    return json.loads(text, parse_constant=_no_constants)


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file, refusing symlinks, devices, directories and huge files."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise OSError(f"{path} is {st.st_size} bytes (at most {limit} expected)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)
