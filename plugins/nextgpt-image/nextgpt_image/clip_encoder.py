"""A permissively licensed image encoder: OpenAI CLIP's vision tower (transformers ``CLIPVisionModelWithProjection``).

ImageBind's weights are CC-BY-NC; CLIP's (``openai/clip-vit-large-patch14`` and friends) are MIT. This encoder is the
drop-in alternative for commercial use.

Shapes:

- ``preprocess(PIL.Image)`` -> ``(3, S, S)`` float32, ``S = image_size`` (224): CLIP's own preprocessing (resize the
  shortest edge to ``S`` with bicubic, centre-crop ``S x S``, scale to [0, 1], normalise with OpenAI's mean / std).
- ``forward((B, 3, S, S))`` ->
    - ``tokens="pooled"``:  ``(B, 1, projection_dim)``, the L2-normalised ``image_embeds`` (CLIP's joint space);
    - ``tokens="patches"``: ``(B, (S / patch_size) ** 2, hidden_size)``, the patch tokens (CLS dropped) of the hidden
      state ``feature_layer`` (default ``-2``, the penultimate layer, as LLaVA uses), not normalised.

Weights come from a local folder (``path``; never downloaded) that holds a transformers CLIP checkpoint: either a
full ``CLIPModel`` (``openai/clip-vit-large-patch14`` as saved by ``save_pretrained``; the text tower is ignored) or
a ``CLIPVisionModelWithProjection``. If the folder has a ``preprocessor_config.json`` it configures the preprocessing;
otherwise OpenAI's settings are used. With ``path`` unset the vision tower is randomly initialised (seeded by
``torch.manual_seed``) with the dims given in the config; every dim left unset takes its **full-size default, which
is ViT-L/14 at 224 px** (``openai/clip-vit-large-patch14``: hidden 1024, 24 layers, 16 heads, MLP 4096, patch 14,
projection 768), the CLIP that Stable Diffusion 1.x conditions on and LLaVA / NExT-GPT-style models commonly use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from nextgpt_core.errors import CheckpointError, ConfigError, MediaError, WeightsNotFoundError
from nextgpt_core.hf_loading import describe_mismatch, quiet_transformers, weights_folder
from nextgpt_core.interfaces import ComponentConfig, Encoder

__all__ = ["CLIP_FULL_SIZE", "CLIPImageEncoder", "CLIPImageEncoderConfig"]

#: Full-size defaults: ViT-L/14 at 224 px (``openai/clip-vit-large-patch14``).
CLIP_FULL_SIZE: dict[str, int] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
}
_PREPROCESSOR_FILE = "preprocessor_config.json"


class CLIPImageEncoderConfig(ComponentConfig):
    """Options of :class:`CLIPImageEncoder`.

    ``path``: a local folder with a transformers CLIP checkpoint (``config.json`` + weights); the architecture then
    comes from its ``config.json`` and the dims below must stay unset. With ``path`` unset, the dims (``None`` =
    the ViT-L/14 value in :data:`CLIP_FULL_SIZE`) define a randomly initialised tower (tests use tiny widths).
    """

    path: str | None = None
    tokens: Literal["pooled", "patches"] = "pooled"
    feature_layer: int = -2
    hidden_size: int | None = Field(default=None, ge=1)
    intermediate_size: int | None = Field(default=None, ge=1)
    num_hidden_layers: int | None = Field(default=None, ge=1)
    num_attention_heads: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=1)
    patch_size: int | None = Field(default=None, ge=1)
    projection_dim: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "CLIPImageEncoderConfig":
        given = [k for k in CLIP_FULL_SIZE if getattr(self, k) is not None]
        if self.path is not None and given:
            raise ValueError(f"with path set the architecture comes from its config.json; leave {given} unset")
        if self.path is None:
            dims = self.dims()
            if dims["hidden_size"] % dims["num_attention_heads"]:
                raise ValueError("hidden_size must be a multiple of num_attention_heads")
            if dims["image_size"] % dims["patch_size"]:
                raise ValueError("image_size must be a multiple of patch_size")
            if not -(dims["num_hidden_layers"] + 1) <= self.feature_layer <= dims["num_hidden_layers"]:
                raise ValueError(f"feature_layer {self.feature_layer} is outside the {dims['num_hidden_layers'] + 1} hidden states")
        return self

    def dims(self) -> dict[str, int]:
        """The architecture of a randomly initialised tower: given dims, the rest from :data:`CLIP_FULL_SIZE`."""
        return {k: (v if (v := getattr(self, k)) is not None else d) for k, d in CLIP_FULL_SIZE.items()}


def _vision_config(config: CLIPImageEncoderConfig) -> CLIPVisionConfig:
    """The transformers vision config: read from ``path`` (a CLIPModel's ``vision_config`` or a vision model's)."""
    if config.path is None:
        d = config.dims()
        return CLIPVisionConfig(**d, num_channels=3, hidden_act="quick_gelu", attention_dropout=0.0)
    folder = weights_folder(config.path, "CLIP")
    with quiet_transformers():
        try:
            vision = CLIPVisionConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{folder / 'config.json'}: not a CLIP config ({exc})") from exc
    n = vision.num_hidden_layers
    if not -(n + 1) <= config.feature_layer <= n:
        raise ConfigError(f"feature_layer {config.feature_layer} is outside the {n + 1} hidden states of {folder}")
    return vision


class CLIPImageEncoder(Encoder):
    """CLIP vision encoder: ``PIL.Image`` -> ``(3, 224, 224)``; ``(B, 3, 224, 224)`` -> ``(B, n_tokens, output_dim)``.

    ``tokens="pooled"``: ``n_tokens = 1``, ``output_dim = projection_dim``, unit L2 norm.
    ``tokens="patches"``: ``n_tokens = (image_size / patch_size) ** 2``, ``output_dim = hidden_size``.
    Frozen after construction (``eval()``, no gradients).
    """

    config_class: ClassVar[type[ComponentConfig]] = CLIPImageEncoderConfig
    config: CLIPImageEncoderConfig

    def __init__(self, config: CLIPImageEncoderConfig) -> None:
        super().__init__(config)
        vision = _vision_config(config)
        if config.path is None:
            self.model = CLIPVisionModelWithProjection(vision)
            size = vision.image_size
            self.processor = CLIPImageProcessorPil(
                do_resize=True,
                size={"shortest_edge": size},
                resample=PILImageResampling.BICUBIC,
                do_center_crop=True,
                crop_size={"height": size, "width": size},
                do_rescale=True,
                rescale_factor=1 / 255,
                do_normalize=True,
                image_mean=list(OPENAI_CLIP_MEAN),
                image_std=list(OPENAI_CLIP_STD),
                do_convert_rgb=True,
            )
        else:
            self.model = self._load(Path(config.path).expanduser())
            folder = Path(config.path).expanduser()
            if (folder / _PREPROCESSOR_FILE).is_file():
                with quiet_transformers():
                    self.processor = CLIPImageProcessorPil.from_pretrained(folder, local_files_only=True)
            else:
                size = self.model.config.image_size
                self.processor = CLIPImageProcessorPil(
                    size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                    resample=PILImageResampling.BICUBIC, image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
                )
        self.freeze()

    @staticmethod
    def _load(folder: Path) -> CLIPVisionModelWithProjection:
        folder = weights_folder(str(folder), "CLIP")
        with quiet_transformers():
            try:
                model, info = CLIPVisionModelWithProjection.from_pretrained(
                    folder, local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True
                )  # mis-shaped weights are reported below, by name
            except OSError as exc:
                raise WeightsNotFoundError(f"CLIP weights folder {folder}: {str(exc).splitlines()[0]}") from exc
            except (RuntimeError, ValueError) as exc:
                raise CheckpointError(f"{folder}: unreadable checkpoint ({str(exc).splitlines()[0]})") from exc
        missing = sorted(info.get("missing_keys", ()))
        mismatched = sorted(describe_mismatch(k) for k in info.get("mismatched_keys", ()))
        if missing or mismatched:
            parts = [f"{len(missing)} weights missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"] if missing else []
            parts += [f"mis-shaped {mismatched[:5]}{' ...' if len(mismatched) > 5 else ''}"] if mismatched else []
            raise CheckpointError(f"{folder}: not a CLIP vision checkpoint: " + "; ".join(parts))
        return model

    @classmethod
    def output_dim_of(cls, config: CLIPImageEncoderConfig) -> int:  # type: ignore[override]
        """``projection_dim`` (pooled) or ``hidden_size`` (patches); read from ``path``'s config.json if set."""
        if config.path is None:
            dims = config.dims()
        else:
            vision = _vision_config(config)
            dims = {"projection_dim": vision.projection_dim, "hidden_size": vision.hidden_size}
        return dims["projection_dim"] if config.tokens == "pooled" else dims["hidden_size"]

    def preprocess(self, media: Any) -> torch.Tensor:
        """One ``PIL.Image.Image`` -> ``(3, S, S)`` float32 on CPU (CLIP resize / centre-crop / normalise)."""
        from PIL import Image

        if not isinstance(media, Image.Image):
            raise MediaError(f"{type(self).__name__}.preprocess expects a PIL.Image.Image, got {type(media).__module__}.{type(media).__qualname__}")
        if media.width < 1 or media.height < 1:
            raise MediaError(f"{type(self).__name__}.preprocess got an empty image ({media.width}x{media.height})")
        image = media if media.mode == "RGB" else media.convert("RGB")
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixels.to(torch.float32).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` -> ``(B, 1, projection_dim)`` (pooled, unit norm) or ``(B, n_patches, hidden_size)``."""
        if self.config.tokens == "pooled":
            embeds = self.model(pixel_values=x).image_embeds
            return nn.functional.normalize(embeds, dim=-1).unsqueeze(1)
        hidden = self.model.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
        return hidden[self.config.feature_layer][:, 1:, :]
