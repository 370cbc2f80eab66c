"""The toy world's shared visual vocabulary: shapes, colours, backgrounds, and how to draw and measure them.

Pictures, video frames and depth maps of the toy world show the same filled shapes, so their plugins build on one
renderer (:func:`shape_mask`, :func:`paint`) and one measurement (:func:`foreground`, :func:`components`,
:func:`measure_region`). Nothing here names a modality; a plugin decides what a region means (a picture's object,
a frame of a moving shape, an object in a depth map). No trained network is involved.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPES",
    "SHAPE_EDIT_REQUESTS",
    "components",
    "foreground",
    "grow",
    "measure_coverage",
    "measure_region",
    "paint",
    "shape_mask",
]

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
#: edit requests for the axes every drawn-shape modality shares (``{value}``): parts spread them into their own
#: ``edit_requests`` so a picture and a video are edited in the same words
SHAPE_EDIT_REQUESTS: dict[str, tuple[str, ...]] = {
    "colour": ("Now make it {value}.", "Change its colour to {value}.", "Make the shape {value} instead.",
               "Could it be {value}?", "Paint it {value} now."),
    "shape": ("Now make it a {value}.", "Turn it into a {value}.", "Make it a {value} instead.",
              "Could it be a {value}?", "Change the shape to a {value}."),
    "background": ("Now put it on a {value} background.", "Make the background {value}.",
                   "Change the background to {value}.", "Use a {value} background instead.",
                   "Could the background be {value}?"),
}


def shape_mask(shape: str, cx: float, cy: float, radius: float, size: int = 32, supersample: int = 4) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` centred (by its centroid) at ``(cx, cy)``: ``(size, size)`` float32.

    A circle of ``radius``; a square of side ``1.7 * radius``; an upward triangle whose bounding box is ``2 *
    radius`` square (its centroid lies a third of the height above the base). Edges are antialiased by
    ``supersample``-fold sampling.
    """
    n = size * supersample
    coords = (np.arange(n, dtype=np.float64) + 0.5) / supersample
    x, y = np.meshgrid(coords, coords)
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    elif shape == "square":
        half = 0.85 * radius
        inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    elif shape == "triangle":
        top = cy - radius * 4.0 / 3.0
        bottom = top + 2 * radius
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= (y - top) / 2.0)
    else:
        raise ValueError(f"unknown shape {shape!r}; one of {SHAPES}")
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3)).astype(np.float32)


def paint(canvas: np.ndarray, coverage: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Blend ``colour`` into the float ``(H, W, 3)`` ``canvas`` in place, weighted by ``coverage`` ``(H, W)``."""
    canvas[:] = canvas * (1 - coverage[..., None]) + np.asarray(colour, np.float32) * coverage[..., None]


def components(mask: np.ndarray) -> list[np.ndarray]:
    """Connected regions (8-neighbourhood) of a boolean ``(H, W)`` mask, as boolean masks, largest first (ties:
    the region whose first pixel in row-major order comes first).

    Vectorised labelling: every pixel takes the smallest label among itself and its masked neighbours until
    nothing changes (at most the longest path through a region, a few dozen passes on a 32x32 picture).
    """
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        smallest = np.where(mask, np.minimum.reduce(neighbours), big)
        if np.array_equal(smallest, labels):
            break
        labels = smallest
    found = np.unique(labels[mask])
    regions = [labels == label for label in found]
    return sorted(regions, key=lambda r: -int(r.sum()))


def measure_coverage(cover: np.ndarray) -> dict[str, Any]:
    """Shape, radius and centroid of one object given its coverage ``(H, W)`` in [0, 1] (1 inside, fractional
    on antialiased or blurred edges, 0 elsewhere).

    Returns ``{"shape", "radius", "centroid": (x, y)}``: the shape from which corners of the bounding box the
    object fills (a circle leaves all four empty, a square fills them, an upward triangle only the bottom two; on
    the renderer's output a circle's bottom corners are <= 0.5 covered, a square's and a triangle's >= 0.6, a
    square's top >= 0.6 and a triangle's 0), the radius from the area (the renderer's ``radius``), the centroid
    in pixel coordinates.
    """
    area = float(cover.sum())
    ys, xs = np.nonzero(cover > 0.5)
    if len(xs) == 0 or area <= 0:
        return {"shape": "none", "radius": 0.0, "centroid": (float("nan"), float("nan"))}
    yy, xx = np.mgrid[0 : cover.shape[0], 0 : cover.shape[1]]
    cx, cy = float((cover * (xx + 0.5)).sum() / area), float((cover * (yy + 0.5)).sum() / area)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    top = (cover[y0 : y0 + 2, x0 : x0 + 2].mean() + cover[y0 : y0 + 2, x1 - 1 : x1 + 1].mean()) / 2
    bottom = (cover[y1 - 1 : y1 + 1, x0 : x0 + 2].mean() + cover[y1 - 1 : y1 + 1, x1 - 1 : x1 + 1].mean()) / 2
    shape = "circle" if bottom < 0.55 else ("square" if top > 0.3 else "triangle")
    unit_area = {"circle": np.pi, "square": 1.7**2, "triangle": 2.0}[shape]
    return {"shape": shape, "radius": float(np.sqrt(area / unit_area)), "centroid": (cx, cy)}


def grow(region: np.ndarray) -> np.ndarray:
    """``region`` (boolean ``(H, W)``) and its 4-neighbour rim: antialiased edge pixels that a threshold missed."""
    grown = region.copy()
    grown[1:] |= region[:-1]
    grown[:-1] |= region[1:]
    grown[:, 1:] |= region[:, :-1]
    grown[:, :-1] |= region[:, 1:]
    return grown


def measure_region(region: np.ndarray, rgb: np.ndarray, background: str) -> dict[str, Any]:
    """Colour, shape, radius and centroid of one region of ``rgb`` ``(H, W, 3)`` on ``background``.

    The colour is the palette colour nearest the region's median; each pixel of the region and its rim then
    counts by coverage (how far its colour lies from the background towards that colour), so antialiased and
    slightly blurred edges measure as the renderer drew them (:func:`measure_coverage`).
    """
    median = np.median(rgb[region].astype(np.float32), axis=0)
    colour = min(COLOURS, key=lambda c: float(((median - np.asarray(COLOURS[c], np.float32)) ** 2).sum()))
    base = np.asarray(BACKGROUNDS[background], np.float32)
    full = np.asarray(COLOURS[colour], np.float32) - base
    cover = np.clip(((rgb.astype(np.float32) - base) @ full) / float(full @ full), 0.0, 1.0) * grow(region)
    return {"colour": colour, **measure_coverage(cover)}


def foreground(rgb: np.ndarray) -> tuple[str, np.ndarray]:
    """``(background name, boolean foreground mask)`` of an ``(H, W, 3)`` uint8 picture."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
    base = np.median(border, axis=0)
    background = min(BACKGROUNDS, key=lambda b: float(((base - np.asarray(BACKGROUNDS[b], np.float32)) ** 2).sum()))
    distance = np.sqrt(((rgb.astype(np.float32) - np.asarray(BACKGROUNDS[background], np.float32)) ** 2).sum(-1))
    return background, distance > 90.0
