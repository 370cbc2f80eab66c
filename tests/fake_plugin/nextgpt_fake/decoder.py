"""A fake decoder with the real Decoder lifecycle: named conditioning inputs, a cached encoding of ``""`` as its
unconditional conditioning, classifier-free guidance over a few seeded 'denoising' steps."""

from __future__ import annotations

import math
import zlib
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from nextgpt_core.interfaces import ComponentConfig, ConditioningInput, DecodeOptions, Decoder


class FakeInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    length: int = Field(ge=1)
    dim: int = Field(ge=1)


class FakeDecoderConfig(ComponentConfig):
    inputs: tuple[FakeInput, ...] = (FakeInput(name="prompt_embeds", length=4, dim=16),)
    output_shape: tuple[int, ...] = (8, 8)
    text_vocab: int = 32


class FakeDecodeOptions(DecodeOptions):
    num_inference_steps: int = Field(default=2, ge=1, le=100)
    guidance_scale: float = Field(default=3.0, ge=0)


class _Net(nn.Module):
    def __init__(self, config: FakeDecoderConfig) -> None:
        super().__init__()
        self.text_embed = nn.ModuleDict({i.name: nn.Embedding(config.text_vocab, i.dim) for i in config.inputs})
        self.positions = nn.ParameterDict({i.name: nn.Parameter(torch.randn(i.length, i.dim) * 0.02) for i in config.inputs})
        size = math.prod(config.output_shape)
        self.denoise = nn.Linear(sum(i.dim for i in config.inputs) + size, size)


class FakeDecoder(Decoder):
    """``{name: (B, length, dim)}`` -> ``B`` float arrays of ``output_shape``. Its tiny net is built at construction."""

    config_class: ClassVar[type[ComponentConfig]] = FakeDecoderConfig
    options_class: ClassVar[type[DecodeOptions]] = FakeDecodeOptions

    def __init__(self, config: FakeDecoderConfig) -> None:
        super().__init__(config)
        with torch.random.fork_rng(devices=[]):  # fixed weights: every instance encodes a caption the same way
            torch.manual_seed(0)
            self.net = _Net(config)
        self.load_calls = 0

    @classmethod
    def conditioning_inputs_of(cls, config: FakeDecoderConfig) -> tuple[ConditioningInput, ...]:  # type: ignore[override]
        return tuple(ConditioningInput(i.name, i.length, i.dim) for i in config.inputs)

    def _state_module(self) -> nn.Module:
        return self.net

    def _load(self) -> None:
        self.load_calls += 1

    def _token_ids(self, text: str, length: int) -> torch.Tensor:
        # the "tokenizer": BOS (id 1), one id per word (a stable hash into 2..vocab-1), then padding (id 0), cut to
        # ``length``; "" is BOS followed by padding, as CLIP pads an empty prompt
        vocab = self.config.text_vocab
        words = [2 + zlib.crc32(w.encode()) % max(1, vocab - 2) for w in text.split()]
        ids = ([1] + words)[:length]
        return torch.tensor(ids + [0] * (length - len(ids)), dtype=torch.long)

    def _encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        out = {}
        for spec in self.config.inputs:
            ids = torch.stack([self._token_ids(t, spec.length) for t in texts])
            out[spec.name] = self.net.text_embed[spec.name](ids) + self.net.positions[spec.name]
        return out

    def encode_unconditional(self) -> dict[str, torch.Tensor]:
        return self._encode([""])

    def encode_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("encode_text takes a sequence of captions, not a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("encode_text needs at least one caption")
        self.load()
        with torch.no_grad():
            out = {k: v.detach().cpu() for k, v in self._encode(texts).items()}
        self._check(out, batch=len(texts), what="encode_text()")
        return out

    def generate(self, conditioning: dict[str, torch.Tensor], negative: dict[str, torch.Tensor], *,
                 generator: torch.Generator | None, options: FakeDecodeOptions) -> list[Any]:  # type: ignore[override]
        names = [i.name for i in self.config.inputs]
        batch = conditioning[names[0]].shape[0]
        size = math.prod(self.config.output_shape)
        device = conditioning[names[0]].device
        x = torch.randn(batch, size, generator=generator).to(device)  # CPU noise: same seed, same output anywhere
        cond = torch.cat([conditioning[n].mean(1) for n in names], dim=-1)
        uncond = torch.cat([negative[n].mean(1) for n in names], dim=-1)
        for _ in range(options.num_inference_steps):
            eps_c = torch.tanh(self.net.denoise(torch.cat([cond, x], -1)))
            eps_u = torch.tanh(self.net.denoise(torch.cat([uncond, x], -1)))
            x = x - (eps_u + options.guidance_scale * (eps_c - eps_u)) / options.num_inference_steps
        return [row.reshape(self.config.output_shape).cpu().numpy().astype(np.float32) for row in x]
