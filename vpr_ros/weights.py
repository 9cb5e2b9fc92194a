"""Finding, checking and loading model checkpoints (ROS-free).

This is the one place that knows how checkpoint files are found on disk and how their
layouts differ. Resolution order for a model's weights:

1. an explicit path given by the caller (must exist);
2. the cache directory (``$VPR_ROS_CACHE``, else ``~/.cache/vpr_ros``) / ``file_name``;
3. an installed Python package that ships the file (offline installs);
4. a download from the official URL into the cache, checked against size and sha256;
5. otherwise :class:`WeightsNotFoundError`, naming the URL and where to put the file.

Files are only ever read with ``torch.load(weights_only=True)``: no arbitrary unpickling.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import importlib.util
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from .models.base import ModelSpec, WeightsSpec
from .models.registry import get_model_spec

log = logging.getLogger(__name__)

CACHE_ENV = "VPR_ROS_CACHE"
# Wrappers that training scripts commonly put around the state dict, tried when the
# spec's own container key is absent.
COMMON_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
DEFAULT_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
# How many key names a mismatch error shows per category.
_SHOW_KEYS = 10

PathLike = str | os.PathLike


class WeightsError(RuntimeError):
    """Base class for everything that can go wrong with a checkpoint."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No checkpoint could be found or fetched for a model."""


class DownloadError(WeightsError):
    """A download failed, was cut short, or did not match its expected size/sha256."""


class ChecksumError(DownloadError):
    """A file's size or sha256 is not the published one."""


class CheckpointFormatError(WeightsError, ValueError):
    """The file is not a state dict this package can read."""


class CheckpointMismatchError(WeightsError):
    """The checkpoint's keys or shapes do not match the model (strict loading)."""


def default_cache_dir() -> Path:
    """``$VPR_ROS_CACHE`` if set and non-empty, else ``~/.cache/vpr_ros``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vpr_ros"


def file_sha256(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: PathLike, weights: WeightsSpec, *, check_sha256: bool = True) -> None:
    """Raise :class:`ChecksumError` if ``path`` differs from the published size/sha256."""
    path = Path(path)
    size = path.stat().st_size
    if weights.size_bytes is not None and size != weights.size_bytes:
        raise ChecksumError(
            f"{path} has {size} bytes, expected {weights.size_bytes} (truncated or wrong file)"
        )
    if check_sha256 and weights.sha256:
        actual = file_sha256(path)
        if actual != weights.sha256.lower():
            raise ChecksumError(f"{path} has sha256 {actual}, expected {weights.sha256}")


def package_file(weights: WeightsSpec) -> Path | None:
    """Path of the file inside the installed package that ships it, or None.

    ``find_spec`` on a top-level name locates the package without importing it.
    """
    if not weights.package or not weights.package_path:
        return None
    try:
        found = importlib.util.find_spec(weights.package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / weights.package_path
        if candidate.is_file():
            return candidate
    return None


def _atomic_write(dest: Path, write: Callable[[object], None], weights: WeightsSpec | None) -> Path:
    """Write through ``write(fileobj)`` into a temp file beside ``dest``, check, then rename.

    The temp file lives in the destination directory so the rename is atomic; it is
    removed on any failure so no partial file is ever left behind.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if weights is not None:
            verify_file(tmp, weights)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def download_file(
    url: str,
    dest: PathLike,
    *,
    sha256: str | None = None,
    size_bytes: int | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking size and sha256 when given.

    ``timeout`` applies to connecting and to each read. ``progress(done, total)`` is
    called after every chunk. Raises :class:`DownloadError` (or :class:`ChecksumError`)
    naming the URL; ``dest`` is only created when every check passed.
    """
    dest = Path(dest)
    digest = hashlib.sha256()

    def write(f) -> None:
        request = urllib.request.Request(url, headers={"User-Agent": "vpr_ros"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                header = response.headers.get("Content-Length")
                total = int(header) if header and header.isdigit() else None
                if size_bytes is not None and total is not None and total != size_bytes:
                    raise ChecksumError(f"{url} announces {total} bytes, expected {size_bytes}")
                done = 0
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except http.client.IncompleteRead as exc:
                        raise DownloadError(
                            f"download of {url} was cut short after {done + len(exc.partial)} bytes"
                        ) from exc
                    if not chunk:
                        break
                    done += len(chunk)
                    # Stop early instead of filling the disk when the server sends too much.
                    if size_bytes is not None and done > size_bytes:
                        raise ChecksumError(f"{url} sent more than the expected {size_bytes} bytes")
                    digest.update(chunk)
                    f.write(chunk)
                    if progress is not None:
                        progress(done, total)
                if total is not None and done != total:
                    raise DownloadError(f"download of {url} was cut short: {done} of {total} bytes")
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise DownloadError(f"could not reach {url}: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, TLS, disk full
            raise DownloadError(f"download of {url} failed: {exc!r}") from exc
        if size_bytes is not None and done != size_bytes:
            raise ChecksumError(f"{url} gave {done} bytes, expected {size_bytes} (truncated download)")
        if sha256 and digest.hexdigest() != sha256.lower():
            raise ChecksumError(f"{url} gave sha256 {digest.hexdigest()}, expected {sha256}")

    _atomic_write(dest, write, None)
    log.info("downloaded %s to %s", url, dest)
    return dest


def copy_checked(src: PathLike, dest: PathLike, weights: WeightsSpec) -> Path:
    """Copy ``src`` to ``dest`` atomically and verify size/sha256 of the copy."""
    src, dest = Path(src), Path(dest)

    def write(f) -> None:
        with open(src, "rb") as source:
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                f.write(chunk)

    return _atomic_write(dest, write, weights)


def placement_hint(spec: ModelSpec, cache_dir: PathLike | None = None) -> str:
    """Human instructions for putting a model's checkpoint where it will be found."""
    weights = spec.weights
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / weights.file_name
    where = f"from {weights.url}" if weights.url else "(no official download exists: train or obtain one)"
    lines = [
        f"Get '{weights.file_name}' {where}",
        f"and place it at {target}",
        f"(or set {CACHE_ENV} to the folder that holds it, or pass the file path explicitly).",
    ]
    if weights.url:
        lines.append(
            f"On an offline robot: run `python -m vpr_ros.apps.fetch_weights {spec.name} --dest DIR` on a "
            f"machine with internet access and copy DIR/{weights.file_name} to {target}."
        )
    return "\n".join(lines)


def resolve_weights(
    spec: ModelSpec,
    path: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    download: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Return the path of ``spec``'s checkpoint, following the module's resolution order."""
    if path is not None:
        explicit = Path(path).expanduser()
        if explicit.is_dir() and spec.weights is not None:
            explicit = explicit / spec.weights.file_name  # a folder holding the official file
        if not explicit.is_file():
            url = spec.weights.url if spec.weights is not None else None
            official = f" (official file: {url})" if url else ""
            raise WeightsNotFoundError(
                f"weights file for model '{spec.name}' not found: {explicit}{official}"
            )
        return explicit

    weights = spec.weights
    if weights is None:
        raise WeightsNotFoundError(f"model '{spec.name}' has no checkpoint description; pass a path")

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / weights.file_name
    if cached.is_file():
        # Size only: hashing an 800 MB file on every start-up is too slow.
        try:
            verify_file(cached, weights, check_sha256=False)
        except ChecksumError as exc:
            raise ChecksumError(f"{exc}; delete it and fetch it again (fetch_weights {spec.name})") from exc
        log.info("model '%s': weights from cache %s", spec.name, cached)
        return cached

    shipped = package_file(weights)
    if shipped is not None:
        verify_file(shipped, weights, check_sha256=False)
        log.info("model '%s': weights from installed package %s", spec.name, shipped)
        return shipped

    reason = "downloading is disabled" if not download else "no official URL is known"
    if download and weights.url:
        log.info("model '%s': downloading %s to %s", spec.name, weights.url, cached)
        try:
            return download_file(
                weights.url, cached, sha256=weights.sha256, size_bytes=weights.size_bytes, timeout=timeout
            )
        except (DownloadError, OSError) as exc:
            reason = str(exc)
    raise WeightsNotFoundError(
        f"no weights for model '{spec.name}' ({reason}).\n{placement_hint(spec, cache)}"
    )


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _unwrap(obj: object, container_key: str | None, path: Path) -> Mapping:
    """Find the state dict inside what ``torch.load`` returned."""
    if isinstance(obj, Mapping):
        if container_key and container_key in obj:
            obj = obj[container_key]
        elif not _is_state_dict(obj):
            for key in COMMON_CONTAINER_KEYS:
                if _is_state_dict(obj.get(key)):
                    obj = obj[key]
                    break
    if not _is_state_dict(obj):
        if isinstance(obj, Mapping):
            sample = ", ".join(repr(k) for k in list(obj)[:_SHOW_KEYS])
            what = f"a dict whose entries are not all tensors (keys: {sample})"
        else:
            what = f"a {type(obj).__name__}"
        wanted = f"'{container_key}' container or a flat" if container_key else "flat"
        raise CheckpointFormatError(
            f"{path} is not a state dict: found {what}; expected a {wanted} state dict"
        )
    return obj


def read_state_dict(path: PathLike, weights: WeightsSpec | None = None) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict in the model's key space.

    Unwraps the container (``weights.container_key``, else a common wrapper), strips
    ``weights.key_prefix`` (or ``module.`` on every key when none is declared), and drops
    ``weights.ignored_keys`` (exact names or glob patterns, matched after stripping).
    """
    path = Path(path)
    weights = weights or WeightsSpec(file_name=path.name)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    try:
        try:
            # mmap avoids holding a second copy of large checkpoints in RAM.
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (RuntimeError, TypeError) as exc:
            # Legacy (pre-zip) files cannot be mapped; torch < 2.1 has no mmap argument.
            if "mmap" not in str(exc):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise CheckpointFormatError(
            f"{path} could not be read as a weights-only PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc

    state = _unwrap(obj, weights.container_key, path)

    out: dict[str, torch.Tensor] = dict(state)
    prefix = weights.key_prefix
    if not prefix and all(k.startswith("module.") for k in out):
        prefix = "module."  # saved from DataParallel although the spec declares no prefix
    if prefix:
        # Stripped where present: a file re-saved without the prefix loads too, and strict
        # loading judges whatever is left.
        out = {(k.removeprefix(prefix)): v for k, v in out.items()}

    if weights.ignored_keys:
        out = {
            k: v for k, v in out.items() if not any(fnmatch.fnmatchcase(k, p) for p in weights.ignored_keys)
        }
    return out


def _show(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW_KEYS])
    more = f", ... ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return shown + more


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "checkpoint"
) -> None:
    """``model.load_state_dict(strict=True)`` with an error that lists what differs."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"{source} does not match the model (strict loading):"]
        if missing:
            parts.append(f"  missing keys ({len(missing)}): {_show(missing)}")
        if unexpected:
            parts.append(f"  unexpected keys ({len(unexpected)}): {_show(unexpected)}")
        if shapes:
            parts.append(f"  shape mismatches ({len(shapes)}): {_show(shapes)}")
        raise CheckpointMismatchError("\n".join(parts))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # e.g. a module's own load hook refused a value
        raise CheckpointMismatchError(f"{source} does not match the model: {exc}") from exc


def load_model(
    name: str,
    weights: PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    random_init: bool = False,
    download: bool = True,
    cache_dir: PathLike | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Build registry model ``name``, load its checkpoint strictly, return ``(model, spec)``.

    The model comes back in eval mode, on ``device``, with gradients off. ``random_init``
    skips the checkpoint (benchmarks, tests: speed does not depend on weight values).
    """
    spec = get_model_spec(name)
    model = spec.build()
    if not random_init:
        path = resolve_weights(spec, weights, cache_dir=cache_dir, download=download)
        state = read_state_dict(path, spec.weights)
        if spec.adapt_state_dict is not None:
            state = spec.adapt_state_dict(state)
        load_state_dict_strict(model, state, source=f"checkpoint {path} for model '{name}'")
    model.eval()
    model.requires_grad_(False)
    return model.to(device), spec
