"""The thermal plugin's part of the toy world: 32x32 8-bit thermal images of one warm or hot shape.

Captions (60 in all): ``"a hot circle on the left against a cold background"`` - shape (circle, square, triangle) x
position (on the left, on the right, at the top, at the bottom, in the centre) x heat (warm, hot) x background
(cold, mild).

An image is ``uint8 (H, W)``, what :class:`~nextgpt_thermal.media.ThermalIO` writes losslessly as an 8-bit PNG: a
background at about :data:`BACKGROUNDS` with a slight random gradient and a little sensor noise, and one flat
shape of the shared renderer (:mod:`nextgpt_core.toy.shapes`; radius 7 +/- 0.5 px, the centres of the image part,
+/-1.5 px jitter) at about :data:`HEATS`. Edge pixels mix the two by coverage, as a microbolometer's do. Thermal is
input-only: the part has no decoder (``can_generate`` is False).

Held out of every training phase: every circle at the bottom, and the hot triangle in the centre: 6 captions
(10%), each pairing a *what* with a *where* as the other parts do.

:meth:`ThermalToyWorld.read_back` measures an image without any trained network: the background from the border,
the object as the largest region clearly warmer than it, the object's level from the region's warmest quarter,
coverage from where each pixel lies between the two, and from it (shared
:func:`~nextgpt_core.toy.shapes.measure_coverage`) shape and position (the nearest centre); heat and background by
thresholds midway between their levels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from nextgpt_core.toy.contract import Attributes, EncoderRecipe, ToyModality
from nextgpt_core.toy.shapes import SHAPES, components, grow, measure_coverage, shape_mask

__all__ = ["BACKGROUNDS", "HEATS", "SIZE_PX", "ThermalToyWorld"]

#: the side of a toy thermal image in pixels
SIZE_PX = 32
POSITIONS = {"on the left": (9.0, 16.0), "on the right": (23.0, 16.0), "at the top": (16.0, 9.0),
             "at the bottom": (16.0, 23.0), "in the centre": (16.0, 16.0)}  # (x, y), as in the image part
#: the object's 8-bit level by heat, and the background's by its temperature
HEATS = {"warm": 165.0, "hot": 235.0}
BACKGROUNDS = {"cold": 40.0, "mild": 100.0}
JITTER = 8.0  # +/- levels of the object's and the background's base level
GRADIENT = 0.6  # most levels per pixel of the background's random gradient (each way)
NOISE = 2.0  # standard deviation of the sensor noise in levels
RADIUS = 7.0
WARMER = 30.0  # how much warmer than the background a pixel must be to count as the object's
MIN_REGION = 12


class ThermalToyWorld(ToyModality):
    """Thermal images of the toy world (see the module docstring)."""

    key: ClassVar[str] = "thermal"
    noun: ClassVar[str] = "thermal image"
    can_generate: ClassVar[bool] = False
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "shape": SHAPES,
        "position": tuple(POSITIONS),
        "heat": tuple(HEATS),
        "background": tuple(BACKGROUNDS),
    }
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What is in this thermal image?", "Describe this thermal image.", "What does the thermal camera see?",
        "What is warm in this infrared image?", "Tell me what this heat map shows.", "Can you describe this thermal picture?",
        "What shape is glowing in this thermal image, and where?", "Explain what this infrared picture contains.",
        "Give me a caption for this thermal image.", "What can you make out in this thermal scan?",
        "Describe the thermal image for me.", "Write a caption for this infrared image.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "The thermal image shows {caption}.",
                                                   "I see {caption}.")

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        return [
            {"shape": s, "position": p, "heat": h, "background": b}
            for s in SHAPES for p in POSITIONS for h in HEATS for b in BACKGROUNDS
        ]

    def caption(self, attrs: Attributes) -> str:
        return f"a {attrs['heat']} {attrs['shape']} {attrs['position']} against a {attrs['background']} background"

    def held_out(self, attrs: Attributes) -> bool:
        if (attrs["shape"], attrs["position"]) == ("circle", "at the bottom"):
            return True
        return (attrs["shape"], attrs["position"], attrs["heat"]) == ("triangle", "in the centre", "hot")

    def editable(self, attrs: Attributes) -> bool:
        return False  # input-only: nothing to edit

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
        yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX].astype(np.float64) + 0.5 - SIZE_PX / 2
        gx, gy = rng.uniform(-GRADIENT, GRADIENT, size=2)
        base = BACKGROUNDS[attrs["background"]] + float(rng.uniform(-1, 1)) * JITTER
        background = base + gx * xx + gy * yy
        level = HEATS[attrs["heat"]] + float(rng.uniform(-1, 1)) * JITTER
        x, y = POSITIONS[attrs["position"]]
        x, y = x + float(rng.uniform(-1.5, 1.5)), y + float(rng.uniform(-1.5, 1.5))
        cover = shape_mask(attrs["shape"], x, y, RADIUS + float(rng.uniform(-0.5, 0.5)), size=SIZE_PX).astype(np.float64)
        image = background * (1 - cover) + level * cover + rng.normal(0.0, NOISE, size=background.shape)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def preview(self, media: Any) -> np.ndarray:
        """The thermal image as grey ``(H, W, 3)`` (warmer is brighter)."""
        values = np.asarray(media)
        if values.ndim == 3:
            values = values[..., 0]
        if values.dtype == np.uint16:
            values = (values / 257.0).astype(np.uint8)
        elif values.dtype != np.uint8:
            values = np.clip(values.astype(np.float32) * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(values[..., None], 3, axis=2)

    def read_back(self, media: Any) -> dict[str, str]:
        values = np.asarray(media)
        if values.ndim == 3 and values.shape[2] == 1:
            values = values[..., 0]
        image = values.astype(np.float32)
        if values.dtype == np.uint16:
            image = image / 257.0
        elif not np.issubdtype(values.dtype, np.integer):
            image = image * 255.0
        if image.shape != (SIZE_PX, SIZE_PX):
            image = np.asarray(Image.fromarray(image, "F").resize((SIZE_PX, SIZE_PX), Image.BILINEAR))
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        background = float(np.median(border))
        regions = [r for r in components(image > background + WARMER) if r.sum() >= MIN_REGION]
        if not regions:
            return {}
        region = regions[0]
        level = float(np.percentile(image[region], 75))  # the object is flat; its edge pixels only lie cooler
        cover = np.clip((image - background) / max(level - background, 1.0), 0.0, 1.0) * grow(region)
        m = measure_coverage(cover)
        x, y = m["centroid"]
        return {
            "shape": m["shape"],
            "position": min(POSITIONS, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2),
            "heat": "warm" if level < sum(HEATS.values()) / 2 else "hot",
            "background": "cold" if background < sum(BACKGROUNDS.values()) / 2 else "mild",
        }

    # ------------------------------------------------------------------ frozen networks
    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        return EncoderRecipe(encoder="thermal/imagebind", branch="thermal", encoder_options={"size": "toy", "image_size": SIZE_PX})
