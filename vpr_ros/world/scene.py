"""The test world: textured rectangles ("quads") making a closed corridor ring.

A quad is the rectangle ``origin + a * u + b * v`` for a, b in [0, 1]. Its texture's columns
run along ``u`` and its rows along ``v``: seen from the front the texture reads upright when
``u`` points right and ``v`` down, and the front is where ``normal = v x u`` points. Quads are
one-sided (the renderer culls back faces): the building's surfaces all face the corridor.

``make_building`` lays out the ring: a rectangular corridor (outer walls, inner walls, floor,
ceiling) cut into places a few metres long, each with its own textures, optional alcoves
(recesses in the outer wall) and ``lookalikes`` pairs of places far apart whose walls are
near-copies of each other (perceptual aliasing).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from .textures import ceiling_texture, floor_texture, wall_texture


@dataclass(eq=False)
class Quad:
    origin: np.ndarray  # (3,) world point at texture (0, 0): the top-left corner seen from the front
    u: np.ndarray  # (3,) edge along the texture's columns
    v: np.ndarray  # (3,) edge along the texture's rows, perpendicular to u
    texture: np.ndarray  # rows x cols x 3, uint8 RGB
    name: str = ""
    normal: np.ndarray = field(init=False, repr=False)  # unit normal of the front side
    _levels: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.origin, self.u, self.v = (
            np.asarray(x, np.float64).reshape(3) for x in (self.origin, self.u, self.v)
        )
        if abs(np.dot(self.u, self.v)) > 1e-9 * np.linalg.norm(self.u) * np.linalg.norm(self.v):
            raise ValueError(f"quad {self.name!r}: u and v must be perpendicular")
        if self.texture.dtype != np.uint8 or self.texture.ndim != 3 or self.texture.shape[2] != 3:
            raise ValueError(f"quad {self.name!r}: texture must be rows x cols x 3 uint8")
        n = np.cross(self.v, self.u)  # computed once: the renderer reads it for every frame
        if not np.linalg.norm(n) > 0:
            raise ValueError(f"quad {self.name!r}: u and v must be non-zero")
        self.normal = n / np.linalg.norm(n)

    @property
    def texels_per_m(self) -> tuple[float, float]:
        """(along u, along v): texture sides are rounded, so the two may differ slightly."""
        rows, cols = self.texture.shape[:2]
        return cols / np.linalg.norm(self.u), rows / np.linalg.norm(self.v)

    def point(self, col: float, row: float) -> np.ndarray:
        """World point at texture coordinates (col, row) in texels; (0, 0) is the top-left corner."""
        rows, cols = self.texture.shape[:2]
        return self.origin + (col / cols) * self.u + (row / rows) * self.v

    @property
    def levels(self) -> list[np.ndarray]:
        """Mip pyramid (level 0 = the texture), built on first use: each level is the one above
        blurred and halved (cv2.pyrDown), so minified textures do not alias."""
        if self._levels is None:
            levels = [self.texture]
            while min(levels[-1].shape[:2]) >= 8:
                levels.append(cv2.pyrDown(levels[-1]))
            self._levels = levels
        return self._levels


@dataclass(eq=False)
class Scene:
    quads: list[Quad]
    # Names of the places whose walls are near-copies, pairwise.
    lookalike_pairs: list[tuple[str, str]] = field(default_factory=list)
    params: dict = field(default_factory=dict)


def wall(p0, p1, z0: float, z1: float, inside, texture: np.ndarray, name: str = "") -> Quad:
    """A vertical wall over the floor segment p0-p1 (x, y) from height z0 to z1, facing ``inside``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    right = np.array([d[1], -d[0]])  # a viewer on this side, facing the wall, sees p0 on the left
    if np.dot(np.asarray(inside, float) - p0, right) < 0:
        p0, p1 = p1, p0
    return Quad((*p0, z1), (*(p1 - p0), 0.0), (0.0, 0.0, z0 - z1), texture, name)


def horizontal(x0: float, x1: float, y0: float, y1: float, z: float, up: bool, texture, name="") -> Quad:
    """A floor (``up``: seen from above) or ceiling (seen from below) rectangle at height z."""
    if up:
        return Quad((x0, y1, z), (x1 - x0, 0.0, 0.0), (0.0, y0 - y1, 0.0), texture, name)
    return Quad((x0, y0, z), (x1 - x0, 0.0, 0.0), (0.0, y1 - y0, 0.0), texture, name)


@dataclass(frozen=True)
class Place:
    """One stretch of corridor: its floor rectangle and wall segments ((x, y) endpoints)."""

    name: str
    rect: tuple[float, float, float, float]  # floor x0, x1, y0, y1
    outer: tuple | None  # outer wall segment (straight places)
    inner: tuple | None  # inner wall segment (straight places)
    corner_walls: tuple = ()  # corner squares: their two outer wall segments


def _places(half_x: float, half_y: float, width: float, place_length: float) -> list[Place]:
    """Places counter-clockwise from the middle of the south side: straight parts cut into
    pieces about ``place_length`` long, plus the four corner squares."""
    ox, oy, ix, iy = half_x, half_y, half_x - width, half_y - width
    places = []
    # (side, start and end of its inner wall in the walking direction)
    sides = [
        ("S", (-ix, -iy), (ix, -iy)),
        ("E", (ix, -iy), (ix, iy)),
        ("N", (ix, iy), (-ix, iy)),
        ("W", (-ix, iy), (-ix, -iy)),
    ]
    corners = {"S": (1, -1), "E": (1, 1), "N": (-1, 1), "W": (-1, -1)}  # corner at each side's end
    for side, a, b in sides:
        a, b = np.array(a), np.array(b)
        length = float(np.linalg.norm(b - a))
        n = max(1, int(round(length / place_length)))
        along = (b - a) / length
        out = np.array([along[1], -along[0]])  # right of the walking direction: the outer wall
        for k in range(n):
            p, q = a + along * length * k / n, a + along * length * (k + 1) / n
            po, qo = p + out * width, q + out * width
            xs, ys = (p[0], q[0], po[0], qo[0]), (p[1], q[1], po[1], qo[1])
            rect = (min(xs), max(xs), min(ys), max(ys))
            places.append(Place(f"{side}{k}", rect, (tuple(po), tuple(qo)), (tuple(p), tuple(q))))
        sx, sy = corners[side]
        rect = (min(sx * ix, sx * ox), max(sx * ix, sx * ox), min(sy * iy, sy * oy), max(sy * iy, sy * oy))
        c = (sx * ox, sy * oy)
        walls = (((sx * ix, c[1]), c), (c, (c[0], sy * iy)))
        places.append(Place(f"{side}C", rect, None, None, walls))
    return places


def _lookalike_pairs(places: list[Place], count: int) -> list[tuple[int, int]]:
    """``count`` pairs (i, j) of places half the ring apart: S<k> and N<k> (then E<k> and W<k>)
    mirror each other through the centre, so they have the same length and the same view."""
    by_name = {p.name: i for i, p in enumerate(places)}
    pairs = []
    for a, b in (("S", "N"), ("E", "W")):
        ks = [k for k in range(len(places)) if f"{a}{k}" in by_name and f"{b}{k}" in by_name]
        # 1, 4, 2, 5, 0, 3 on a side of 6: the first pairs are far from each other and the corners.
        for k in sorted(ks, key=lambda k: ((k + 2) % 3, k)):
            pairs.append((by_name[f"{a}{k}"], by_name[f"{b}{k}"]))
    return pairs[:count]


@functools.lru_cache(maxsize=4)
def make_building(
    seed: int = 7,
    outer_size: tuple[float, float] = (24.0, 14.0),
    corridor_width: float = 2.4,
    height: float = 2.6,
    place_length: float = 3.2,
    alcoves: int = 2,
    lookalikes: int = 0,
    texels_per_m: float = 200.0,
    floor_texels_per_m: float = 80.0,
) -> Scene:
    """The corridor ring, centred on the world origin, floor at z = 0 (cached: treat as read-only).

    Walls get ``texels_per_m`` (memory: ~3 bytes x 345 m^2 x 200^2 = 41 MB at the defaults),
    floor and ceiling ``floor_texels_per_m``. ``alcoves`` places of the outer wall become 1.2 m
    deep recesses; ``lookalikes`` pairs of places get near-identical walls.
    """
    if texels_per_m > 200 or floor_texels_per_m > 200:
        raise ValueError("texels_per_m is capped at 200 (texture memory)")
    half_x, half_y = outer_size[0] / 2, outer_size[1] / 2
    places = _places(half_x, half_y, corridor_width, place_length)
    pairs = _lookalike_pairs(places, lookalikes)
    if len(pairs) < lookalikes:
        raise ValueError(f"this building has room for {len(pairs)} look-alike pairs, not {lookalikes}")
    twin = {j: i for i, j in pairs}  # place j copies place i
    taken = {k for pair in pairs for k in pair}
    free = [k for k, p in enumerate(places) if p.outer is not None and k not in taken]
    alcove_at = {free[int(round(t))] for t in np.linspace(1, len(free) - 2, alcoves)} if alcoves else set()
    quads: list[Quad] = []
    for k, place in enumerate(places):
        x0, x1, y0, y1 = place.rect
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        src, variant = (twin[k], 1) if k in twin else (k, 0)

        def tex(kind: int, width_m: float, src=src, variant=variant) -> np.ndarray:
            return wall_texture((seed, src, kind), width_m, height, texels_per_m, variant)

        f_tex = floor_texture((seed, k, 10), x1 - x0, y1 - y0, floor_texels_per_m)
        c_tex = ceiling_texture((seed, k, 11), x1 - x0, y1 - y0, floor_texels_per_m)
        quads.append(horizontal(x0, x1, y0, y1, 0.0, True, f_tex, f"{place.name}/floor"))
        quads.append(horizontal(x0, x1, y0, y1, height, False, c_tex, f"{place.name}/ceiling"))
        for w, (p, q) in enumerate(place.corner_walls):
            length = float(np.hypot(q[0] - p[0], q[1] - p[1]))
            quads.append(wall(p, q, 0.0, height, centre, tex(w, length), f"{place.name}/outer{w}"))
        if place.inner is not None:
            p, q = place.inner
            length = float(np.hypot(q[0] - p[0], q[1] - p[1]))
            quads.append(wall(p, q, 0.0, height, centre, tex(2, length), f"{place.name}/inner"))
        if place.outer is not None:
            p, q = np.array(place.outer[0]), np.array(place.outer[1])
            length = float(np.linalg.norm(q - p))
            if k in alcove_at:
                quads += _alcove(p, q, centre, height, seed, k, texels_per_m, floor_texels_per_m, place.name)
            else:
                quads.append(wall(p, q, 0.0, height, centre, tex(3, length), f"{place.name}/outer"))
    params = dict(
        seed=seed,
        outer_size=list(outer_size),
        corridor_width=corridor_width,
        height=height,
        place_length=place_length,
        alcoves=alcoves,
        lookalikes=lookalikes,
        texels_per_m=texels_per_m,
        floor_texels_per_m=floor_texels_per_m,
    )
    names = [(places[i].name, places[j].name) for i, j in pairs]
    return Scene(quads, names, params)


def _alcove(p, q, centre, height, seed, k, tpm, floor_tpm, name, depth=1.2, margin=0.6) -> list[Quad]:
    """Outer wall p-q with a full-height recess ``depth`` deep, ``margin`` in from both ends."""
    along = (q - p) / np.linalg.norm(q - p)
    out = np.array(_away(p, q, centre)) * depth  # from the corridor into the recess
    a, b = p + along * margin, q - along * margin
    opening = (a + b) / 2  # in front of the back wall
    middle = opening + out / 2  # in front of both side walls
    # (from, to, a point on the side it faces, texture kind, part)
    parts = [
        (p, a, centre, 4, "outer_l"),
        (b, q, centre, 5, "outer_r"),
        (a + out, b + out, opening, 6, "back"),
        (a, a + out, middle, 7, "side_l"),
        (b, b + out, middle, 8, "side_r"),
    ]
    quads = []
    for start, end, facing, kind, part in parts:
        texture = wall_texture((seed, k, kind), float(np.linalg.norm(end - start)), height, tpm)
        quads.append(wall(start, end, 0.0, height, facing, texture, f"{name}/{part}"))
    corners = np.array([a, b, a + out, b + out])
    x0, y0 = corners.min(axis=0)
    x1, y1 = corners.max(axis=0)
    f_tex = floor_texture((seed, k, 12), x1 - x0, y1 - y0, floor_tpm)
    c_tex = ceiling_texture((seed, k, 13), x1 - x0, y1 - y0, floor_tpm)
    quads.append(horizontal(x0, x1, y0, y1, 0.0, True, f_tex, f"{name}/alcove_floor"))
    quads.append(horizontal(x0, x1, y0, y1, height, False, c_tex, f"{name}/alcove_ceiling"))
    return quads


def _away(p, q, centre) -> tuple[float, float]:
    """Unit normal of segment p-q pointing away from ``centre``."""
    d = (q - p) / np.linalg.norm(q - p)
    n = np.array([-d[1], d[0]])
    return tuple(n if np.dot(n, p - np.asarray(centre)) > 0 else -n)
