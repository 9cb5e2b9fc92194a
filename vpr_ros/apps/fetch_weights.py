"""``fetch_weights``: put official checkpoints in a folder, checked, for offline robots.

Run it on a machine with internet access (or with the weight packages installed), then
copy the folder's files to the robot's cache directory::

    python -m vpr_ros.apps.fetch_weights image pairvpr --dest ./vpr_weights
    python -m vpr_ros.apps.fetch_weights --all --dest ./vpr_weights
    python -m vpr_ros.apps.fetch_weights --list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..models.base import ModelSpec
from ..models.registry import MODELS, get_model_spec
from ..weights import (
    CACHE_ENV,
    DEFAULT_TIMEOUT_S,
    WeightsError,
    copy_checked,
    default_cache_dir,
    download_file,
    file_sha256,
    package_file,
    verify_file,
)


def _has_source(spec: ModelSpec) -> bool:
    return spec.weights is not None and (
        spec.weights.url is not None or package_file(spec.weights) is not None
    )


def _progress(name: str):
    """Progress printer for a terminal; silent when stderr is a pipe or a log file."""
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def report(done: int, total: int | None) -> None:
        if total:
            percent = 100 * done // total
            if percent != last[0]:
                last[0] = percent
                print(f"\r  {name}: {percent:3d}% of {total / 1e6:.1f} MB", end="", file=sys.stderr)
                if done == total:
                    print(file=sys.stderr)

    return report


def fetch_one(
    spec: ModelSpec, dest: Path, *, timeout: float = DEFAULT_TIMEOUT_S, force: bool = False
) -> Path:
    """Put ``spec``'s official file into ``dest`` (copy from a package or download), checked."""
    weights = spec.weights
    if weights is None or not _has_source(spec):
        raise WeightsError(
            f"model '{spec.name}' has no official weights to fetch ({weights and weights.licence})"
        )
    target = dest / weights.file_name
    if target.is_file() and not force:
        try:
            verify_file(target, weights)
            print(f"{spec.name}: already present and checked: {target}")
            return target
        except WeightsError as exc:
            print(f"{spec.name}: replacing the existing file ({exc})")
    shipped = package_file(weights)
    if shipped is not None:
        copy_checked(shipped, target, weights)
        print(f"{spec.name}: copied from installed package {weights.package}: {target}")
    else:
        print(f"{spec.name}: downloading {weights.url}")
        download_file(
            weights.url,
            target,
            sha256=weights.sha256,
            size_bytes=weights.size_bytes,
            timeout=timeout,
            progress=_progress(spec.name),
        )
        print(f"{spec.name}: downloaded to {target}")
    if not weights.sha256:
        # Nothing published to check against: print the digest so the copy can be checked later.
        print(f"  (no published sha256; this file's sha256 is {file_sha256(target)})")
    if weights.licence:
        print(f"  licence: {weights.licence}")
    return target


def list_models() -> None:
    cache = default_cache_dir()
    for name, spec in MODELS.items():
        weights = spec.weights
        if weights is None:
            print(f"{name:12s} no checkpoint description")
            continue
        if (cache / weights.file_name).is_file():
            where = f"in cache ({cache / weights.file_name})"
        elif package_file(weights) is not None:
            where = f"in installed package {weights.package}"
        elif weights.url:
            where = "not present, downloadable"
        else:
            where = "not present, no official download"
        size = f"{weights.size_bytes / 1e6:.1f} MB" if weights.size_bytes else "size unknown"
        print(f"{name:12s} {weights.file_name:28s} {size:14s} {where}")
        if weights.url:
            print(f"{'':12s} url: {weights.url}")
        if weights.licence:
            print(f"{'':12s} licence: {weights.licence}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fetch_weights",
        description="Fetch official vpr_ros model checkpoints into a folder (sha256/size checked).",
    )
    parser.add_argument("models", nargs="*", help=f"model names: {', '.join(MODELS)}")
    parser.add_argument("--all", action="store_true", help="every model that has official weights")
    parser.add_argument("--list", action="store_true", help="list models, their files and where they are")
    parser.add_argument(
        "--dest", type=Path, default=None, help=f"target folder (default: the cache, {default_cache_dir()})"
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="network timeout, seconds")
    parser.add_argument("--force", action="store_true", help="fetch again even if the file is already there")
    args = parser.parse_args(argv)

    if args.list:
        list_models()
        return 0
    if not args.models and not args.all:
        parser.error("name at least one model, or use --all or --list")
    try:
        names = [name for name in MODELS if _has_source(MODELS[name])] if args.all else args.models
        specs = [get_model_spec(name) for name in names]
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2

    if args.all:
        for name, spec in MODELS.items():
            if name not in names:
                reason = spec.weights.licence if spec.weights else "no checkpoint description"
                print(f"{name}: skipped, no official file ({reason})")
    dest = (args.dest or default_cache_dir()).expanduser()
    fetched, failed = [], []
    for spec in specs:
        try:
            fetched.append(fetch_one(spec, dest, timeout=args.timeout, force=args.force))
        except (WeightsError, OSError) as exc:
            failed.append(spec.name)
            print(f"{spec.name}: FAILED: {exc}", file=sys.stderr)

    if fetched:
        dest_abs = dest.resolve()
        print()
        print(f"{len(fetched)} file(s) in {dest_abs}:")
        for path in fetched:
            print(f"  {path.name}")
        if dest_abs != default_cache_dir().resolve():
            print("On the robot, copy these files to ~/.cache/vpr_ros/ of the user that runs the nodes,")
            print(f"or copy the folder anywhere and set {CACHE_ENV}=<that folder> in the nodes' environment.")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
