"""The depth plugin's part of the toy world: 32x32 depth maps (millimetres) of one shape in front of a wall.

Captions (60 in all): ``"a large circle on the left, close to the camera"`` - shape (circle, square, triangle) x
size (small, large) x position (on the left, on the right, at the top, at the bottom, in the centre) x distance
(close: ``"close to the camera"``, far: ``"far from the camera"``).

A map is float32 ``(H, W)`` in whole millimetres (what :class:`~nextgpt_depth.media.DepthIO` writes losslessly as a
16-bit PNG): a flat wall at about :data:`WALL_MM` with a slight random tilt and a few millimetres of noise, and one
flat shape of the shared renderer (:mod:`nextgpt_core.toy.shapes`; the image part's radii and centres, +/-1.5 px
jitter) about 800 mm (close) or 2000 mm (far) from the camera. Edge pixels mix the two depths by coverage, as a
sensor's mixed pixels do. Depth is input-only: the part has no decoder (``can_generate`` is False).

Held out of every training phase: the triangle on the left, and the far square at the bottom: 6 captions (10%).

:meth:`DepthToyWorld.read_back` measures a map without any trained network: the wall's depth from the border, the
object as the largest region clearly nearer than it, the object's depth from the region's nearest quarter, a
coverage map from where each pixel lies between the wall and the object, and from it (shared
:func:`~nextgpt_core.toy.shapes.measure_coverage`) shape, size (radius under 6.5 px: small), position (the nearest
centre) and distance (nearer than :data:`DISTANCE_THRESHOLD_MM`: close).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from nextgpt_core.toy.contract import Attributes, EncoderRecipe, ToyModality
from nextgpt_core.toy.shapes import SHAPES, components, grow, measure_coverage, shape_mask

__all__ = ["DepthToyWorld", "SIZE_PX", "WALL_MM"]

#: the side of a toy depth map in pixels
SIZE_PX = 32
SIZES = {"small": 5.0, "large": 8.0}  # radius in pixels (jittered by +/- 0.5), as in the image part
POSITIONS = {"on the left": (9.0, 16.0), "on the right": (23.0, 16.0), "at the top": (16.0, 9.0),
             "at the bottom": (16.0, 23.0), "in the centre": (16.0, 16.0)}  # (x, y) of the centroid, as in the image part
DISTANCES = {"close": 800.0, "far": 2000.0}  # the object's depth in millimetres
DISTANCE_JITTER = {"close": 100.0, "far": 200.0}  # +/- millimetres
PHRASES = {"close": "close to the camera", "far": "far from the camera"}
#: the wall's depth in millimetres
WALL_MM = 4000.0
WALL_TILT = 1.0  # most millimetres per pixel of the wall's random tilt (each way)
NOISE_MM = 2.0  # standard deviation of the sensor noise in millimetres
#: object depths under this read as "close", from it up as "far" (midway between the two)
DISTANCE_THRESHOLD_MM = (DISTANCES["close"] + DISTANCES["far"]) / 2
NEARER_MM = 300.0  # how much nearer than the wall a pixel must be to count as the object's
MIN_REGION = 12  # pixels a region needs to count as an object


class DepthToyWorld(ToyModality):
    """Depth maps of the toy world (see the module docstring)."""

    key: ClassVar[str] = "depth"
    noun: ClassVar[str] = "depth map"
    can_generate: ClassVar[bool] = False
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "shape": SHAPES,
        "size": tuple(SIZES),
        "position": tuple(POSITIONS),
        "distance": tuple(DISTANCES),
    }
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What is in this depth map?", "Describe this depth map.", "What does this depth map show?",
        "What do you see in this depth scan?", "Tell me what is in the depth map.", "Can you describe this depth image?",
        "What object is in this depth map, and how far is it?", "Explain what this depth map contains.",
        "Give me a caption for this depth map.", "What can you make out in this depth image?",
        "Describe the depth map for me.", "Write a caption for this depth scan.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "The depth map shows {caption}.",
                                                   "I see {caption}.")

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        return [
            {"shape": s, "size": z, "position": p, "distance": d}
            for s in SHAPES for z in SIZES for p in POSITIONS for d in DISTANCES
        ]

    def caption(self, attrs: Attributes) -> str:
        return f"a {attrs['size']} {attrs['shape']} {attrs['position']}, {PHRASES[attrs['distance']]}"

    def held_out(self, attrs: Attributes) -> bool:
        if (attrs["shape"], attrs["position"]) == ("triangle", "on the left"):
            return True
        return (attrs["shape"], attrs["position"], attrs["distance"]) == ("square", "at the bottom", "far")

    def editable(self, attrs: Attributes) -> bool:
        return False  # input-only: nothing to edit

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
        yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX].astype(np.float64) + 0.5 - SIZE_PX / 2
        tilt_x, tilt_y = rng.uniform(-WALL_TILT, WALL_TILT, size=2)
        wall = WALL_MM + tilt_x * xx + tilt_y * yy
        near = DISTANCES[attrs["distance"]] + float(rng.uniform(-1, 1)) * DISTANCE_JITTER[attrs["distance"]]
        radius = SIZES[attrs["size"]] + float(rng.uniform(-0.5, 0.5))
        x, y = POSITIONS[attrs["position"]]
        x, y = x + float(rng.uniform(-1.5, 1.5)), y + float(rng.uniform(-1.5, 1.5))
        cover = shape_mask(attrs["shape"], x, y, radius, size=SIZE_PX).astype(np.float64)
        depth = wall * (1 - cover) + near * cover + rng.normal(0.0, NOISE_MM, size=wall.shape)
        return np.rint(depth).astype(np.float32)

    def preview(self, media: Any) -> np.ndarray:
        """Nearer is brighter: the depth map as grey ``(H, W, 3)``, 0 mm white .. the wall black."""
        depth = np.asarray(media, dtype=np.float32)
        if depth.ndim == 3:
            depth = depth[..., 0]
        far = float(np.median(np.concatenate([depth[0], depth[-1]]))) or 1.0
        grey = np.clip(255.0 * (1.0 - depth / far), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)

    def read_back(self, media: Any) -> dict[str, str]:
        depth = np.asarray(media, dtype=np.float32)
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.shape != (SIZE_PX, SIZE_PX):
            depth = np.asarray(Image.fromarray(depth, "F").resize((SIZE_PX, SIZE_PX), Image.BILINEAR))
        border = np.concatenate([depth[0], depth[-1], depth[:, 0], depth[:, -1]])
        wall = float(np.median(border))
        regions = [r for r in components(depth < wall - NEARER_MM) if r.sum() >= MIN_REGION]
        if not regions:
            return {}
        region = regions[0]
        near = float(np.percentile(depth[region], 25))  # the object is flat; its edge pixels only lie farther
        cover = np.clip((wall - depth) / max(wall - near, 1.0), 0.0, 1.0) * grow(region)
        m = measure_coverage(cover)
        x, y = m["centroid"]
        return {
            "shape": m["shape"],
            "size": "small" if m["radius"] < 6.5 else "large",
            "position": min(POSITIONS, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2),
            "distance": "close" if near < DISTANCE_THRESHOLD_MM else "far",
        }

    # ------------------------------------------------------------------ frozen networks
    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        return EncoderRecipe(encoder="depth/imagebind", branch="depth", encoder_options={"size": "toy", "image_size": SIZE_PX})
