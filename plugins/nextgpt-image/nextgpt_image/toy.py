"""The image plugin's part of the toy world: 32x32 pictures of one or two coloured shapes.

Captions (768 in all):

- one object: ``"a large red circle on the left on a white background"`` - shape (circle, square, triangle) x
  colour (red, green, blue, yellow) x size (small, large) x position (on the left, on the right, at the top, at the
  bottom, in the centre) x background (white, black): 240;
- two objects: ``"a red circle left of a blue square on a black background"`` - two different (colour, shape)
  objects x relation (left of, above) x background: 528.

Held out of every training phase: a triangle at the top (alone at the top, or above another shape) and a square
alone on the left: 120 captions (15.6%). Every value and every other pairing of shape with place is seen.

:meth:`ImageToyWorld.read_back` measures a picture without any trained network: background from the border,
objects as connected regions that differ from it, colour as the nearest palette colour of a region's median,
shape from which corners of its bounding box it fills, size from its area, position from its centroid.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image

from nextgpt_core.toy.contract import Attributes, DecoderTraining, EncoderRecipe, ToyModality
from nextgpt_core.toy.shapes import BACKGROUNDS, COLOURS, SHAPE_EDIT_REQUESTS, SHAPES, components, foreground, measure_region, paint, shape_mask

__all__ = ["ImageToyWorld", "SIZE_PX"]

SIZES = {"small": 5.0, "large": 8.0}  # radius in pixels
POSITIONS = {"on the left": (9.0, 16.0), "on the right": (23.0, 16.0), "at the top": (16.0, 9.0),
             "at the bottom": (16.0, 23.0), "in the centre": (16.0, 16.0)}  # (x, y) of the centroid
RELATIONS = ("left of", "above")
#: the side of a toy picture in pixels
SIZE_PX = 32
PAIR_RADIUS = 5.0
#: share of each denoiser batch drawn from the noisiest tenth of the timesteps (train_denoiser): without it the
#: UNet ignored the position words (the same seed put the shape in the same place whatever the caption said);
#: with 0.3 it followed them on 23 of 40 after 1000 steps, against 7 of 40 (docs/toy-world.md)
HIGH_NOISE_SHARE = 0.3


class ImageToyWorld(ToyModality):
    """Pictures of the toy world (see the module docstring)."""

    key: ClassVar[str] = "image"
    noun: ClassVar[str] = "picture"
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "layout": ("single", "pair"),
        "shape": SHAPES,
        "colour": tuple(COLOURS),
        "size": tuple(SIZES),
        "position": tuple(POSITIONS),
        "relation": RELATIONS,
        "shape2": SHAPES,
        "colour2": tuple(COLOURS),
        "background": tuple(BACKGROUNDS),
    }
    generate_requests: ClassVar[tuple[str, ...]] = (
        "Draw {caption}.", "Show me {caption}.", "Can you draw {caption}?", "Make a picture of {caption}.",
        "I would like to see {caption}.", "Please paint {caption}.", "Create an image of {caption}.",
        "Could you show me a picture of {caption}?", "Generate a picture of {caption}.", "Sketch {caption} for me.",
        "Give me an image showing {caption}.", "Paint me {caption}, please.",
    )
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What is in this picture?", "Describe this picture.", "What do you see here?", "What does this image show?",
        "Tell me what is in the image.", "Can you describe this image?", "What is shown in this picture?",
        "Explain what this picture contains.", "Give me a caption for this image.", "What can you see in this photo?",
        "Describe the image for me.", "Write a caption for this picture.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "The picture shows {caption}.", "I see {caption}.")
    generate_answers: ClassVar[tuple[str, ...]] = ("Here is {caption}.", "Sure, here is {caption}.", "This is {caption}.")
    edit_requests: ClassVar[dict[str, tuple[str, ...]]] = {
        **SHAPE_EDIT_REQUESTS,
        "size": ("Now make it {value}.", "Make it {value} instead.", "Change its size to {value}.",
                 "Could it be {value}?", "Draw it {value}."),
        "position": ("Now move it {value}.", "Put it {value} instead.", "Move the shape {value}.",
                     "Could it be {value}?", "Place it {value}."),
    }
    convert_requests: ClassVar[tuple[str, ...]] = (
        "Make a {size} still picture of this {noun}, {position}.",
        "Turn this {noun} into a {size} picture, {position}.",
        "Draw the shape from this {noun}, {size}, {position}.",
        "Give me a picture of this {noun}'s shape, {size} and {position}.",
        "Show this {noun} as a {size} picture {position}.",
        "Could you paint this {noun} as a picture, {size}, {position}?",
        "Render this {noun} as an image: {size}, {position}.",
        "Make an image from this {noun}, {size}, {position}.",
        "Paint what this {noun} shows, {size} and {position}.",
        "Create a {size} picture {position} from this {noun}.",
        "I want a picture of this {noun}, {size}, {position}.",
    )

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        out = [
            {"layout": "single", "shape": s, "colour": c, "size": z, "position": p, "background": b}
            for s in SHAPES for c in COLOURS for z in SIZES for p in POSITIONS for b in BACKGROUNDS
        ]
        objects = [(s, c) for s in SHAPES for c in COLOURS]
        out += [
            {"layout": "pair", "shape": a[0], "colour": a[1], "relation": r, "shape2": o[0], "colour2": o[1], "background": b}
            for a in objects for o in objects if a != o for r in RELATIONS for b in BACKGROUNDS
        ]
        return out

    def caption(self, attrs: Attributes) -> str:
        if attrs["layout"] == "single":
            return f"a {attrs['size']} {attrs['colour']} {attrs['shape']} {attrs['position']} on a {attrs['background']} background"
        return (f"a {attrs['colour']} {attrs['shape']} {attrs['relation']} a {attrs['colour2']} {attrs['shape2']} "
                f"on a {attrs['background']} background")

    def held_out(self, attrs: Attributes) -> bool:
        """A triangle at the top (alone at the top, or above another shape) and a square alone on the left."""
        if attrs["layout"] == "pair":
            return attrs["shape"] == "triangle" and attrs["relation"] == "above"
        return (attrs["shape"], attrs["position"]) in (("triangle", "at the top"), ("square", "on the left"))

    def editable(self, attrs: Attributes) -> bool:
        return attrs["layout"] == "single"

    def convert_from(self, source: Attributes, rng: np.random.Generator) -> tuple[dict[str, str], dict[str, str]] | None:
        if "shape" not in source or source.get("layout", "single") != "single":
            return None
        size, position = str(rng.choice(list(SIZES))), str(rng.choice(list(POSITIONS)))
        target = {"layout": "single", "shape": source["shape"], "size": size, "position": position,
                  "colour": source.get("colour") or str(rng.choice(list(COLOURS))),
                  "background": source.get("background") or str(rng.choice(list(BACKGROUNDS)))}
        if "colour" not in source or "background" not in source:
            return None  # a depth map has no colour: the request would have to name it (not phrased here)
        return target, {"size": size, "position": position}

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> Image.Image:
        canvas = np.empty((SIZE_PX, SIZE_PX, 3), np.float32)
        canvas[:] = BACKGROUNDS[attrs["background"]]
        if attrs["layout"] == "single":
            radius = SIZES[attrs["size"]] + float(rng.uniform(-0.5, 0.5))
            x, y = POSITIONS[attrs["position"]]
            x, y = x + float(rng.uniform(-1.5, 1.5)), y + float(rng.uniform(-1.5, 1.5))
            paint(canvas, shape_mask(attrs["shape"], x, y, radius), COLOURS[attrs["colour"]])
        else:
            along = 16.0 + float(rng.uniform(-1.0, 1.0))
            first, second = 9.0 + float(rng.uniform(-1, 1)), 23.0 + float(rng.uniform(-1, 1))
            places = [(first, along), (second, along)] if attrs["relation"] == "left of" else [(along, first), (along, second)]
            for (x, y), shape, colour in zip(places, (attrs["shape"], attrs["shape2"]), (attrs["colour"], attrs["colour2"])):
                radius = PAIR_RADIUS + float(rng.uniform(-0.4, 0.4))
                paint(canvas, shape_mask(shape, x, y, radius), COLOURS[colour])
        return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")

    def read_back(self, media: Any) -> dict[str, str]:
        rgb = np.asarray(media.convert("RGB") if isinstance(media, Image.Image) else media, dtype=np.uint8)
        if rgb.shape[:2] != (SIZE_PX, SIZE_PX):
            rgb = np.asarray(Image.fromarray(rgb).resize((SIZE_PX, SIZE_PX), Image.BICUBIC))
        background, mask = foreground(rgb)
        regions = [r for r in components(mask) if r.sum() >= 12]
        out: dict[str, str] = {"background": background}
        if len(regions) == 1:
            m = measure_region(regions[0], rgb, background)
            x, y = m["centroid"]
            out.update(layout="single", shape=m["shape"], colour=m["colour"],
                       size="small" if m["radius"] < 6.5 else "large",
                       position=min(POSITIONS, key=lambda p: (POSITIONS[p][0] - x) ** 2 + (POSITIONS[p][1] - y) ** 2))
        elif len(regions) == 2:
            a, b = (measure_region(r, rgb, background) for r in regions)
            (ax, ay), (bx, by) = a["centroid"], b["centroid"]
            relation = "left of" if abs(ax - bx) >= abs(ay - by) else "above"
            if (relation == "left of" and bx < ax) or (relation == "above" and by < ay):
                a, b = b, a
            out.update(layout="pair", shape=a["shape"], colour=a["colour"], relation=relation,
                       shape2=b["shape"], colour2=b["colour"])
        else:
            out["layout"] = f"{len(regions)} objects"
        return out

    def preview(self, media: Any) -> np.ndarray:
        return np.asarray(media.convert("RGB") if isinstance(media, Image.Image) else media, dtype=np.uint8)

    # ------------------------------------------------------------------ frozen networks
    decoder_renders: ClassVar[dict[str, int]] = {"full": 10, "mini": 1}
    #: (autoencoder steps, denoiser steps, UNet widths) per scale
    DECODER_SCALES: ClassVar[dict[str, tuple[int, int, tuple[int, ...]]]] = {
        "full": (600, 3000, (16, 32, 64)),
        "mini": (3, 3, (8, 16, 16)),
    }
    #: the toy decoder's conditioning: prompt_embeds (TEXT_LENGTH, TEXT_DIM)
    TEXT_LENGTH: ClassVar[int] = 16
    TEXT_DIM: ClassVar[int] = 64

    def decoder_choice(self, folder: str) -> dict[str, Any]:
        return {"id": "image/sd-1.5", "options": {"path": folder, "cross_attention_dim": self.TEXT_DIM,
                                                    "text_length": self.TEXT_LENGTH}}

    def decode_options(self, scale: str) -> dict[str, Any]:
        return {"num_inference_steps": 20 if scale == "full" else 2, "guidance_scale": 3.0,
                "height": SIZE_PX, "width": SIZE_PX}

    def train_decoder(self, job: DecoderTraining) -> dict[str, Any]:
        """An SD-style decoder from scratch: an ``AutoencoderKL`` (RGB <-> 16x16x4 latents), then a
        ``UNet2DConditionModel`` and its own ``CLIPTextModel`` (word-level BPE learnt from the captions) trained
        together on the latents (v-prediction), saved as a ``StableDiffusionPipeline`` folder with a DDIM
        scheduler."""
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

        from nextgpt_core.tiny_clip import learn_merges, tiny_clip_text_parts
        from nextgpt_core.toy.diffusion import encode_latents, quiet_posterior, train_autoencoder, train_denoiser

        vae_steps, unet_steps, widths = self.DECODER_SCALES[job.scale]
        torch.manual_seed(job.seed)
        pixels = torch.stack([
            torch.from_numpy(np.asarray(media.convert("RGB"), dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
            for _, _, media in job.items
        ])
        captions = [caption for _, caption, _ in job.items]
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                            layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=SIZE_PX)
        quiet_posterior(vae)
        job.log(f"autoencoder: {sum(p.numel() for p in vae.parameters()):,} parameters, {vae_steps} steps on {len(pixels)} pictures")
        vae_facts = train_autoencoder(vae, pixels, steps=vae_steps, seed=job.seed,
                                      progress=lambda s, n, loss: job.progress(s, vae_steps + unet_steps, loss))
        latents, scaling = encode_latents(vae, pixels)
        vae.register_to_config(scaling_factor=scaling)
        text_encoder, tokenizer = tiny_clip_text_parts(self.TEXT_DIM, length=self.TEXT_LENGTH,
                                                       merges=learn_merges(captions), num_layers=2)
        unet = UNet2DConditionModel(
            sample_size=SIZE_PX // 2, in_channels=4, out_channels=4, block_out_channels=widths, layers_per_block=1,
            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(widths) - 1),
            up_block_types=("CrossAttnUpBlock2D",) * (len(widths) - 1) + ("UpBlock2D",),
            cross_attention_dim=self.TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
        )
        # v-prediction: the background (and where a shape goes) is decided at the noisiest steps, where an epsilon
        # target is almost the noisy input itself; measured with the same UNet, data and 1200 steps, the background
        # read back right 0.53 (epsilon) and 1.00 (v) of training captions (docs/toy-world.md)
        train_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                       prediction_type="v_prediction")

        def condition(texts: Any) -> dict[str, Any]:
            ids = tokenizer(list(texts), padding="max_length", max_length=self.TEXT_LENGTH, truncation=True,
                            return_tensors="pt").input_ids
            return {"encoder_hidden_states": text_encoder(ids)[0]}

        job.log(f"denoiser: UNet {sum(p.numel() for p in unet.parameters()):,} + text {sum(p.numel() for p in text_encoder.parameters()):,} parameters, {unet_steps} steps")
        unet_facts = train_denoiser(unet, text_encoder, condition, latents, captions, train_schedule, steps=unet_steps,
                                    batch_size=32, lr=2e-3, seed=job.seed + 1, high_noise_share=HIGH_NOISE_SHARE,
                                    progress=lambda s, n, loss: job.progress(vae_steps + s, vae_steps + unet_steps, loss))
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            # "trailing": sampling starts at the last, pure-noise timestep, where the denoiser learnt to place the
            # shape from the caption ("leading" starts at t=951, where it learnt to read the place from the input)
            scheduler=DDIMScheduler.from_config(train_schedule.config, clip_sample=False, set_alpha_to_one=False,
                                                steps_offset=1, timestep_spacing="trailing"),
            safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
        )
        pipe.to(torch.float16).save_pretrained(job.out_dir, safe_serialization=True)
        return {"autoencoder": vae_facts, "denoiser": unet_facts, "pictures": len(pixels), "latent_scale": scaling}

    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        return EncoderRecipe(encoder="image/imagebind", branch="vision", encoder_options={"size": "toy", "image_size": SIZE_PX})
