"""Why a map directory cannot be used; shared by the snapshot and the keyframe-folder code."""

from __future__ import annotations


class MapError(RuntimeError):
    """A map directory that cannot be used (missing, corrupt, or from a newer vpr_ros)."""


class MapMismatchError(MapError):
    """A map made by another model or descriptor size than the one asked for."""
