"""The video plugin's part of the toy world: 1-second clips (8 frames of 32x32 px at 8 fps) of one moving shape.

Captions (192 in all): ``"a red circle moving left slowly on a white background"`` - shape (circle, square,
triangle) x colour (red, green, blue, yellow) x background (white, black) x direction (left, right, up, down) x
speed (slowly, quickly).

A clip shows one filled shape of radius about 6 px (the shared renderer, :mod:`nextgpt_core.toy.shapes`) moving in
a straight line at constant speed: "slowly" covers about 8 px from the first frame to the last, "quickly" about
16 px. The start is random, with a random offset across the motion, and the shape stays inside the frame (1 px
clear of the border) in every frame.

Held out of every training phase: every triangle moving up and every square moving left: 32 captions (16.7%).

:meth:`VideoToyWorld.read_back` measures a clip without any trained network: per frame the background from the
border and the shape as the largest region that differs from it (:func:`~nextgpt_core.toy.shapes.measure_region`);
background, colour and shape are the majority over frames, direction and speed come from the centroid's track (the
displacement from the first to the last frame of a straight line fitted to it: its dominant axis and sign, and
whether it is under or over 12 px). It also reads clips that went through :class:`~nextgpt_video.media.VideoIO`
(H.264, yuv420p).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from nextgpt_core.toy.contract import Attributes, DecoderTraining, EncoderRecipe, ToyModality
from nextgpt_core.toy.shapes import BACKGROUNDS, COLOURS, SHAPE_EDIT_REQUESTS, SHAPES, components, foreground, measure_region, paint, shape_mask

from nextgpt_video.media import Video

__all__ = ["FPS", "FRAMES", "SIZE_PX", "VideoToyWorld"]

#: the side of a toy frame in pixels
SIZE_PX = 32
#: frames per clip
FRAMES = 8
#: frames per second (a clip lasts one second)
FPS = 8.0
RADIUS = 6.0  # the shape's radius in pixels (jittered by +/- RADIUS_JITTER)
RADIUS_JITTER = 0.25
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # unit (dx, dy)
SPEEDS = {"slowly": 8.0, "quickly": 16.0}  # displacement in pixels from the first frame to the last
SPEED_JITTER = 0.5
#: displacements (first to last frame) under this read as "slowly", from it up as "quickly"
SPEED_THRESHOLD = 12.0
MARGIN = 1.0  # pixels kept clear between the shape and the frame's border
MIN_REGION = 12  # pixels a frame's region needs to count as the shape


def _extent(shape: str, radius: float) -> tuple[float, float, float, float]:
    """How far ``shape`` reaches from its centroid: ``(left, right, up, down)`` in pixels (see ``shape_mask``)."""
    if shape == "square":
        return (0.85 * radius,) * 4
    if shape == "triangle":
        return radius, radius, radius * 4.0 / 3.0, radius * 2.0 / 3.0
    return (radius,) * 4


class VideoToyWorld(ToyModality):
    """Videos of the toy world (see the module docstring)."""

    key: ClassVar[str] = "video"
    noun: ClassVar[str] = "video"
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        "shape": SHAPES,
        "colour": tuple(COLOURS),
        "background": tuple(BACKGROUNDS),
        "direction": tuple(DIRECTIONS),
        "speed": tuple(SPEEDS),
    }
    generate_requests: ClassVar[tuple[str, ...]] = (
        "Make a video of {caption}.", "Show me a video of {caption}.", "Can you animate {caption}?",
        "Create a clip of {caption}.", "I would like to watch {caption}.", "Please film {caption}.",
        "Generate a video showing {caption}.", "Could you make a short video of {caption}?",
        "Animate {caption} for me.", "Produce a clip with {caption}.", "Give me a video where I see {caption}.",
        "Render a short clip of {caption}, please.",
    )
    describe_requests: ClassVar[tuple[str, ...]] = (
        "What happens in this video?", "Describe this video.", "What do you see in this clip?",
        "What does this video show?", "Tell me what is in the video.", "Can you describe this clip?",
        "What is moving in this video?", "Explain what this video contains.", "Give me a caption for this video.",
        "What can you see in this clip?", "Describe the video for me.", "Write a caption for this clip.",
    )
    describe_answers: ClassVar[tuple[str, ...]] = ("It is {caption}.", "The video shows {caption}.", "I see {caption}.")
    generate_answers: ClassVar[tuple[str, ...]] = ("Here is {caption}.", "Sure, here is a video of {caption}.",
                                                   "This is {caption}.")
    edit_requests: ClassVar[dict[str, tuple[str, ...]]] = {
        **SHAPE_EDIT_REQUESTS,
        "direction": ("Now make it move {value}.", "Let it go {value} instead.", "Change its direction to {value}.",
                      "Could it move {value}?", "Make the shape move {value}."),
        "speed": ("Now make it move {value}.", "Let it move {value} instead.", "Could it go {value}?",
                  "Make the shape move {value}.", "Have it move {value} now."),
    }
    convert_requests: ClassVar[tuple[str, ...]] = (
        "Make this {noun} move {direction} {speed}.",
        "Turn this {noun} into a video moving {direction} {speed}.",
        "Animate this {noun}: it should move {direction} {speed}.",
        "Make a video of this {noun}'s shape moving {direction} {speed}.",
        "Show this {noun} as a video, moving {direction} {speed}.",
        "Could you animate this {noun} so it moves {direction} {speed}?",
        "Bring this {noun} to life, moving {direction} {speed}.",
        "Create a clip from this {noun} where the shape goes {direction} {speed}.",
        "Let the shape in this {noun} move {direction} {speed}.",
        "Make a short video from this {noun}, moving {direction} {speed}.",
        "I want a video of this {noun}, the shape moving {direction} {speed}.",
    )

    # ------------------------------------------------------------------ what exists
    def combinations(self) -> list[dict[str, str]]:
        return [
            {"shape": s, "colour": c, "background": b, "direction": d, "speed": v}
            for s in SHAPES for c in COLOURS for b in BACKGROUNDS for d in DIRECTIONS for v in SPEEDS
        ]

    def caption(self, attrs: Attributes) -> str:
        return (f"a {attrs['colour']} {attrs['shape']} moving {attrs['direction']} {attrs['speed']} "
                f"on a {attrs['background']} background")

    def held_out(self, attrs: Attributes) -> bool:
        """Every triangle moving up and every square moving left."""
        return (attrs["shape"], attrs["direction"]) in (("triangle", "up"), ("square", "left"))

    def editable(self, attrs: Attributes) -> bool:
        return True  # every clip shows one shape: each axis can be edited

    def convert_from(self, source: Attributes, rng: np.random.Generator) -> tuple[dict[str, str], dict[str, str]] | None:
        if source.get("layout", "single") != "single" or not all(k in source for k in ("shape", "colour", "background")):
            return None  # several objects, or no colour (a depth map): the request would have to say more
        direction, speed = str(rng.choice(list(DIRECTIONS))), str(rng.choice(list(SPEEDS)))
        target = {"shape": source["shape"], "colour": source["colour"], "background": source["background"],
                  "direction": direction, "speed": speed}
        return target, {"direction": direction, "speed": speed}

    # ------------------------------------------------------------------ media
    def render(self, attrs: Attributes, rng: np.random.Generator) -> Video:
        shape = attrs["shape"]
        radius = RADIUS + float(rng.uniform(-RADIUS_JITTER, RADIUS_JITTER))
        travel = SPEEDS[attrs["speed"]] + float(rng.uniform(-SPEED_JITTER, SPEED_JITTER))
        dx, dy = DIRECTIONS[attrs["direction"]]
        left, right, up, down = _extent(shape, radius)
        x_range = (MARGIN + left, SIZE_PX - MARGIN - right)  # where the centroid may lie
        y_range = (MARGIN + up, SIZE_PX - MARGIN - down)
        along, across = (x_range, y_range) if dx else (y_range, x_range)
        low = float(rng.uniform(along[0], along[1] - travel))  # the lower end of the track along the motion
        start = low if dx + dy > 0 else low + travel  # moving right/down starts at the lower end
        offset = float(rng.uniform(*across))
        x0, y0 = (start, offset) if dx else (offset, start)

        frames = np.empty((FRAMES, SIZE_PX, SIZE_PX, 3), np.uint8)
        for i in range(FRAMES):
            step = travel * i / (FRAMES - 1)
            canvas = np.empty((SIZE_PX, SIZE_PX, 3), np.float32)
            canvas[:] = BACKGROUNDS[attrs["background"]]
            paint(canvas, shape_mask(shape, x0 + dx * step, y0 + dy * step, radius), COLOURS[attrs["colour"]])
            frames[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return Video(frames=frames, fps=FPS)

    def read_back(self, media: Any) -> dict[str, str]:
        frames = np.asarray(media.frames if isinstance(media, Video) else media, dtype=np.uint8)
        if frames.shape[1:3] != (SIZE_PX, SIZE_PX):
            frames = np.stack([np.asarray(Image.fromarray(f).resize((SIZE_PX, SIZE_PX), Image.BICUBIC)) for f in frames])
        backgrounds, colours, shapes, track = [], [], [], []
        for index, rgb in enumerate(frames):
            background, mask = foreground(rgb)
            backgrounds.append(background)
            regions = [r for r in components(mask) if r.sum() >= MIN_REGION]
            if not regions:
                continue
            m = measure_region(regions[0], rgb, background)
            colours.append(m["colour"])
            shapes.append(m["shape"])
            track.append((index, *m["centroid"]))
        out: dict[str, str] = {"background": _majority(backgrounds)}
        if not track:
            return out
        out.update(colour=_majority(colours), shape=_majority(shapes))
        if len(track) >= 2:
            t, x, y = np.asarray(track, np.float64).T
            # a straight line through the centroids; its displacement over the world's clip (first to last frame)
            move_x, move_y = (float(np.polyfit(t, v, 1)[0]) * (FRAMES - 1) for v in (x, y))
            if abs(move_x) >= abs(move_y):
                direction, distance = ("right" if move_x > 0 else "left"), abs(move_x)
            else:
                direction, distance = ("down" if move_y > 0 else "up"), abs(move_y)
            out.update(direction=direction, speed="slowly" if distance < SPEED_THRESHOLD else "quickly")
        return out

    def preview(self, media: Any) -> np.ndarray:
        """The frames side by side: ``(H, T * W, 3)``."""
        return np.concatenate(list(np.asarray(media.frames, dtype=np.uint8)), axis=1)

    # ------------------------------------------------------------------ frozen networks
    decoder_renders: ClassVar[dict[str, int]] = {"full": 6, "mini": 1}
    #: (autoencoder steps, denoiser steps, UNet widths) per scale
    DECODER_SCALES: ClassVar[dict[str, tuple[int, int, tuple[int, ...]]]] = {
        "full": (300, 1200, (16, 32, 64)),
        "mini": (3, 3, (8, 16, 16)),
    }
    #: clips per denoiser step
    DENOISER_BATCH: ClassVar[int] = 8
    #: share of each denoiser batch from the noisiest tenth of the timesteps, where a clip's start and path are
    #: decided from the caption (train_denoiser; the image decoder's measurement is in docs/toy-world.md)
    HIGH_NOISE_SHARE: ClassVar[float] = 0.3
    #: the toy decoder's conditioning: prompt_embeds (TEXT_LENGTH, TEXT_DIM)
    TEXT_LENGTH: ClassVar[int] = 16
    TEXT_DIM: ClassVar[int] = 64

    def decoder_choice(self, folder: str) -> dict[str, Any]:
        return {"id": "video/zeroscope", "options": {"path": folder, "cross_attention_dim": self.TEXT_DIM,
                                                       "text_length": self.TEXT_LENGTH}}

    def decode_options(self, scale: str) -> dict[str, Any]:
        return {"num_inference_steps": 20 if scale == "full" else 2, "guidance_scale": 3.0, "height": SIZE_PX,
                "width": SIZE_PX, "num_frames": FRAMES, "fps": FPS}

    def train_decoder(self, job: DecoderTraining) -> dict[str, Any]:
        """A ZeroScope-style decoder from scratch: an ``AutoencoderKL`` on single frames (RGB <-> 16x16x4
        latents), then a ``UNet3DConditionModel`` (spatial and temporal layers) and its own OpenCLIP-style
        ``CLIPTextModel`` trained together on the frame latents ``(4, 8, 16, 16)`` of each video, saved as a
        ``TextToVideoSDPipeline`` folder with a DDIM scheduler (v-prediction, cosine schedule)."""
        import torch
        from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

        from nextgpt_core.diffusers_decoder import quiet_library_notices
        from nextgpt_core.tiny_clip import learn_merges, tiny_clip_text_parts
        from nextgpt_core.toy.diffusion import encode_latents, quiet_posterior, train_autoencoder, train_denoiser

        vae_steps, unet_steps, widths = self.DECODER_SCALES[job.scale]
        total = vae_steps + unet_steps
        torch.manual_seed(job.seed)
        videos = torch.stack([
            torch.from_numpy(np.asarray(media.frames, dtype=np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
            for _, _, media in job.items
        ])  # (N, T, 3, H, W)
        n, t = videos.shape[:2]
        captions = [caption for _, caption, _ in job.items]
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                            layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=SIZE_PX)
        quiet_posterior(vae)
        frames = videos.flatten(0, 1)
        job.log(f"autoencoder: {sum(p.numel() for p in vae.parameters()):,} parameters, {vae_steps} steps on {len(frames)} frames")
        vae_facts = train_autoencoder(vae, frames, steps=vae_steps, seed=job.seed, progress=lambda s, _, loss: job.progress(s, total, loss))
        latents, scaling = encode_latents(vae, frames)
        vae.register_to_config(scaling_factor=scaling)
        latents = latents.reshape(n, t, *latents.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()  # (N, 4, T, h, w)
        text_encoder, tokenizer = tiny_clip_text_parts(self.TEXT_DIM, length=self.TEXT_LENGTH, pad_token="!",
                                                       hidden_act="gelu", merges=learn_merges(captions), num_layers=2)
        unet = UNet3DConditionModel(
            sample_size=SIZE_PX // 2, in_channels=4, out_channels=4, block_out_channels=widths, layers_per_block=1,
            down_block_types=("DownBlock3D",) + ("CrossAttnDownBlock3D",) * (len(widths) - 1),
            up_block_types=("CrossAttnUpBlock3D",) * (len(widths) - 1) + ("UpBlock3D",),
            cross_attention_dim=self.TEXT_DIM, attention_head_dim=8, norm_num_groups=8,
        )
        # v-prediction on a cosine schedule (ZeroScope itself: epsilon on SD's scaled-linear one): a clip's
        # background, colour and path are decided at the noisiest steps, where an epsilon target carries next to no
        # gradient about them (docs/toy-world.md); the DDIM sampler follows the scheduler's prediction_type
        schedule_config = {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000,
                           "prediction_type": "v_prediction"}
        train_schedule = DDPMScheduler(**schedule_config)

        def condition(texts: Any) -> dict[str, Any]:
            ids = tokenizer(list(texts), padding="max_length", max_length=self.TEXT_LENGTH, truncation=True,
                            return_tensors="pt").input_ids
            return {"encoder_hidden_states": text_encoder(ids)[0]}

        job.log(f"denoiser: UNet3D {sum(p.numel() for p in unet.parameters()):,} + text {sum(p.numel() for p in text_encoder.parameters()):,} parameters, {unet_steps} steps on {n} videos")
        unet_facts = train_denoiser(unet, text_encoder, condition, latents, captions, train_schedule, steps=unet_steps,
                                    batch_size=self.DENOISER_BATCH, lr=2e-3, seed=job.seed + 1,
                                    high_noise_share=self.HIGH_NOISE_SHARE,
                                    progress=lambda s, _, loss: job.progress(vae_steps + s, total, loss))
        with quiet_library_notices():
            pipe = TextToVideoSDPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=DDIMScheduler(**schedule_config, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                        timestep_spacing="trailing"),
            )
        pipe.to(torch.float16).save_pretrained(job.out_dir, safe_serialization=True)
        return {"autoencoder": vae_facts, "denoiser": unet_facts, "videos": n, "latent_scale": scaling}

    def encoder_recipe(self, scale: str) -> EncoderRecipe:
        return EncoderRecipe(encoder="video/imagebind", branch="vision", encoder_options={"size": "toy", "image_size": SIZE_PX,
                                                               "clips_per_video": 1, "num_crops": 1})


def _majority(values: list[str]) -> str:
    """The most frequent value (the first seen among equals)."""
    return Counter(values).most_common(1)[0][0]
