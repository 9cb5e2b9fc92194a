"""Why a map directory cannot be used, and the strict checks of values read from map files."""

from __future__ import annotations

import math

ID_LIMIT = 2**62  # keyframe ids, next_id and counts stay below this (room to keep counting in int64)


class MapError(RuntimeError):
    """A map directory that cannot be used (missing, corrupt, or from a newer vpr_ros)."""


class MapMismatchError(MapError):
    """A map made by another model or descriptor size than the one asked for."""


def short(value) -> str:
    """A value for a one-line message, cut to 40 characters."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(value, name: str, low: int = 0, high: int = ID_LIMIT) -> int:
    """An int (not a bool, not a float) with ``low <= value < high``; ValueError otherwise."""
    if type(value) is not int or not low <= value < high:
        raise ValueError(f"{name} {short(value)} is not an integer in [{low}, {high})")
    return value


def check_stamp_ns(value, kf_id: int) -> int:
    """A header stamp in integer nanoseconds (what builtin_interfaces/Time can hold)."""
    return check_int(value, f"keyframe {kf_id} stamp_ns", 0, 2**63)


def check_float(value, name: str) -> float:
    """A finite JSON number (int or float, not a bool); ValueError otherwise."""
    if type(value) not in (int, float):
        raise ValueError(f"{name} {short(value)} is not a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{name} {short(value)} is not finite")
    return number


def check_str(value, name: str, limit: int = 65536) -> str:
    if type(value) is not str or len(value) > limit:
        raise ValueError(f"{name} {short(value)} is not a string of at most {limit} characters")
    return value
