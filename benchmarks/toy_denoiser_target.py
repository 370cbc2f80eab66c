"""The toy image decoder's denoiser target: epsilon against v-prediction, side by side, read back.

Why the toy decoders learn velocity (``prediction_type = "v_prediction"``): a picture's background, and where a
shape goes, are decided at the noisiest steps, where an epsilon target is almost the noisy input itself and carries
next to no gradient about the conditional mean. This script measures it on the toy world.

Set-up, identical for both variants except the target: the built-in toy world's image autoencoder (frozen; its
latents of 10 renderings of every training combination of the image part), a fresh ``UNet2DConditionModel`` and
``CLIPTextModel`` of the recipe's sizes (``ImageToyWorld.DECODER_SCALES["full"]`` widths; the same init seed),
trained with :func:`nextgpt_core.toy.diffusion.train_denoiser` for ``--steps`` steps of 32 (same batches, noise and
timesteps), then a DDIM pipeline (20 steps, guidance 3) drawing 32 training and 32 held-out captions (seeded), each
picture read back by the part's analyzer (no trained network). The two variants run in two processes, one torch
thread each. Reported per variant and split: the share of pictures right on every attribute, and per attribute.

Run from the repository root (about 10 minutes on the 2-vCPU VM with the defaults)::

    .venv/bin/python benchmarks/toy_denoiser_target.py [--steps 1200]

Writes ``docs/benchmarks/toy_denoiser_target.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict

from bench_common import ROOT, git_state, machine

OUT = ROOT / "docs" / "benchmarks" / "toy_denoiser_target.json"
SAMPLES = 32


def run_variant(target: str, steps: int) -> dict:
    """Train one variant and read its pictures back (runs in its own process)."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from nextgpt_core.tiny_clip import learn_merges, tiny_clip_text_parts
    from nextgpt_core.toy.diffusion import encode_latents, train_denoiser
    from nextgpt_core.toy.recipe import builtin_world
    from nextgpt_image.toy import SIZE_PX, ImageToyWorld

    torch.set_num_threads(1)
    part = ImageToyWorld()
    combos = part.combinations()
    train = [c for c in combos if not part.held_out(c)]
    held = [c for c in combos if part.held_out(c)]
    rng = np.random.default_rng(3)
    items = [(part.caption(c), part.render(c, rng)) for c in train for _ in range(part.decoder_renders["full"])]
    pixels = torch.stack([torch.from_numpy(np.asarray(m, np.float32) / 127.5 - 1).permute(2, 0, 1) for _, m in items])
    captions = [c for c, _ in items]
    vae = AutoencoderKL.from_pretrained(builtin_world() / "decoders" / "image" / "vae", torch_dtype=torch.float32)
    latents, _ = encode_latents(vae, pixels)
    _, _, widths = part.DECODER_SCALES["full"]
    torch.manual_seed(0)
    text_encoder, tokenizer = tiny_clip_text_parts(part.TEXT_DIM, length=part.TEXT_LENGTH, merges=learn_merges(captions), num_layers=2)
    unet = UNet2DConditionModel(
        sample_size=SIZE_PX // 2, in_channels=4, out_channels=4, block_out_channels=widths, layers_per_block=1,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(widths) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(widths) - 1) + ("UpBlock2D",),
        cross_attention_dim=part.TEXT_DIM, attention_head_dim=8, norm_num_groups=8)
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=target)

    def condition(texts):
        ids = tokenizer(list(texts), padding="max_length", max_length=part.TEXT_LENGTH, truncation=True, return_tensors="pt").input_ids
        return {"encoder_hidden_states": text_encoder(ids)[0]}

    started = time.perf_counter()
    facts = train_denoiser(unet, text_encoder, condition, latents, captions, schedule, steps=steps, batch_size=32, lr=2e-3, seed=1)
    seconds = time.perf_counter() - started
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler.from_config(schedule.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pick = np.random.default_rng(0)
    out = {"target": target, "steps": steps, "train_seconds": round(seconds, 1), "first_loss": facts["first_loss"],
           "final_loss": facts["final_loss"]}
    for split, pool in (("train", train), ("held_out", held)):
        attrs = [pool[i] for i in pick.choice(len(pool), SAMPLES, replace=False)]
        images = pipe([part.caption(a) for a in attrs], num_inference_steps=20, guidance_scale=3.0, height=SIZE_PX,
                      width=SIZE_PX, generator=torch.Generator().manual_seed(0)).images
        per: dict[str, list[bool]] = defaultdict(list)
        every = []
        for a, image in zip(attrs, images):
            got = part.read_back(image)
            for k, v in a.items():
                per[k].append(got.get(k) == v)
            every.append(all(got.get(k) == v for k, v in a.items()))
        out[split] = {"n": SAMPLES, "all_attributes": sum(every) / SAMPLES,
                      "attributes": {k: round(sum(v) / len(v), 3) for k, v in sorted(per.items())}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--variant", choices=["epsilon", "v_prediction"], help=argparse.SUPPRESS)  # the child
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps)))
        return
    started = time.perf_counter()
    children = [subprocess.Popen([sys.executable, __file__, "--steps", str(args.steps), "--variant", v],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT) for v in ("epsilon", "v_prediction")]
    results = []
    for child in children:
        stdout, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"a variant failed (exit {child.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    payload = {"benchmark": "toy_denoiser_target", "steps": args.steps, "wall_seconds": round(time.perf_counter() - started, 1),
               "variants": results, **git_state(), "machine": machine()}
    OUT.write_text(json.dumps(payload, indent=1) + "\n")
    attributes = sorted(results[0]["train"]["attributes"])
    print(f"| target | split | every attribute | {' | '.join(attributes)} |")
    print("|---|---|---|" + "---|" * len(attributes))
    for r in results:
        for split in ("train", "held_out"):
            row = r[split]
            print(f"| {r['target']} | {split} | {100 * row['all_attributes']:.1f}% | "
                  + " | ".join(f"{row['attributes'].get(a, float('nan')):.2f}" for a in attributes) + " |")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
