"""``ImageBindEncoder``: the base every ImageBind plugin encoder subclasses (it adds ``preprocess``), for any branch
of the open table (:func:`~nextgpt_core.imagebind.register_branch`)."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import model_validator

from ..interfaces import ComponentConfig, Encoder
from .branches import BRANCH_PREFIXES, ImageBindBranch, branch_spec, embed_branch
from .checkpoint import ImageBindCheckpoint

__all__ = ["ImageBindEncoder", "ImageBindEncoderConfig"]


#: pretrained branches by (checkpoint, modality, size): the image and the video encoder share one frozen vision branch
#: (ImageBind-huge's is 633M parameters) instead of holding two copies, as the official code holds one model
_BRANCHES: "weakref.WeakValueDictionary[tuple[str, str, str], ImageBindBranch]" = weakref.WeakValueDictionary()
_BRANCHES_LOCK = threading.Lock()


def _pretrained_branch(path: str, modality: str, size: str) -> ImageBindBranch:
    """The branch of ``modality`` loaded strictly from ``path``, built once per process while someone uses it."""
    checkpoint = ImageBindCheckpoint.open(path)  # fails fast (missing / not a checkpoint), before building anything
    key = (str(Path(path).resolve()), modality, size)
    with _BRANCHES_LOCK:
        branch = _BRANCHES.get(key)
        if branch is None:
            with torch.device("meta"):  # no random init of weights that the checkpoint overwrites
                branch = ImageBindBranch(branch_spec(modality, size))
            branch.to_empty(device="cpu")
            checkpoint.load_branch(branch, modality)
            branch.requires_grad_(False).eval()
            _BRANCHES[key] = branch
        return branch


class ImageBindEncoderConfig(ComponentConfig):
    """Options of an :class:`ImageBindEncoder`.

    Attributes:
        modality: the ImageBind branch, any name registered in the open table: ``"vision"`` (images and videos),
            ``"audio"``, ``"depth"`` (the core's), or a plugin's own (``"thermal"``, ``"imu"``). Plugin configs narrow
            it and give a default, e.g. ``modality: Literal["audio"] = "audio"``.
        size: a size the branch is registered at: ``"huge"`` (``imagebind_huge``, out 1024), ``"tiny"`` (same
            geometry, 32-d, out 32; tests) or ``"toy"`` (the toy world's: 32x32 pictures, out 64;
            :data:`~nextgpt_core.imagebind.SIZES`). An unknown branch or size is one error line naming the choices.
        checkpoint: path to ``imagebind_huge.pth`` (or a ``.safetensors`` file with the same key names, as the
            toy world writes); the branch loads from it strictly. ``None``: random init.
        clips: items carry a leading clips/views dim ``V`` that is averaged (video: 5 clips x 3 crops = 15;
            audio: 3 clips); ``False``: one clip per item (images, depth).
    """

    modality: str
    size: str = "huge"
    checkpoint: str | None = None
    clips: bool = False

    @model_validator(mode="after")
    def _registered(self) -> "ImageBindEncoderConfig":
        branch_spec(self.modality, self.size)  # ValueError naming the registered branches / sizes
        return self


class ImageBindEncoder(Encoder):
    """One ImageBind branch as an :class:`~nextgpt_core.interfaces.Encoder`: one L2-normalised token per item.

    ``forward(x)``: ``x`` is ``(B, *item)``, or ``(B, V, *item)`` when ``config.clips``, with ``item`` the branch's
    (its :class:`~nextgpt_core.imagebind.BranchSpec`), e.g.:

    - vision: image ``(3, H, W)`` (repeated to a 2-frame clip) or video clip ``(3, 2, H, W)``; ``H = W = 224``
      nominally (other square sizes interpolate the positional embedding)
    - audio: ``(1, 128, 204)`` log-mel fbank (ImageBind-normalised)
    - depth: ``(1, H, W)`` disparity, 224 nominally; thermal ``(1, 224, 224)``; imu ``(6, 2000)``

    returns ``(B, 1, out_dim)`` (``out_dim`` 1024 for ``huge``).

    Postprocessing and clip order follow the official NExT-GPT encoder, checked in
    ``NExT-GPT-Lagacy/code/model/ImageBind/models/imagebind_model.py`` (``ImageBindModel.forward``, commit
    ``60d618b``; the v1.5 copy ``nextgpt/model/multimodal_encoder/ImageBind/models/imagebind_model.py`` does the
    same): the ``B*V`` clips run as one batch, each pooled head output is L2-normalised (audio: only
    ``modality_postprocessors.audio[0]``, the ``Normalize``; the x20 logit scale is skipped), **then** the ``V``
    clip embeddings are averaged and **not** renormalised. So a single clip has unit norm and an average of
    several has norm <= 1. The depth x5 logit scale is skipped too (NExT-GPT never encodes depth, its code would
    apply it; nextgpt keeps every branch's output on the unit sphere). The scale modules stay in the model, so the
    official ``log_logit_scale`` buffers load.

    The state dict is the branch's official keys (``modality_preprocessors.<m>.*`` ...), so ``imagebind_huge.pth``
    loads into it directly (:class:`~nextgpt_core.imagebind.ImageBindCheckpoint`). Subclasses implement
    ``preprocess`` and set ``config_class`` to a config with a default ``modality``.
    """

    config_class: ClassVar[type[ComponentConfig]] = ImageBindEncoderConfig
    config: ImageBindEncoderConfig

    def __init__(self, config: ImageBindEncoderConfig) -> None:
        super().__init__(config)
        self.spec = spec = branch_spec(config.modality, config.size)
        if config.checkpoint is None:
            branch = ImageBindBranch(spec)
        else:
            branch = _pretrained_branch(config.checkpoint, config.modality, config.size)
            # keep the shared branch alive while this encoder lives (not registered as a submodule)
            self.__dict__["_shared_branch"] = branch
        for name in BRANCH_PREFIXES:
            self.add_module(name, getattr(branch, name))

    @classmethod
    def output_dim_of(cls, config: ImageBindEncoderConfig) -> int:  # type: ignore[override]
        """``out_dim`` of the branch: 1024 for ``huge``, 32 for ``tiny``."""
        return branch_spec(config.modality, config.size).out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *item)`` or, with ``clips``, ``(B, V, *item)`` -> ``(B, 1, out_dim)``.

        Raises:
            ValueError: ``x`` does not have the branch's item layout (the message names the expected shape).
        """
        modality, lead = self.config.modality, 2 if self.config.clips else 1
        item_ndim = x.dim() - lead
        channels = self.spec.item_shape[0]
        if item_ndim not in self.spec.item_ndims or x.shape[lead] != channels:
            batch = "(B, V, *item)" if self.config.clips else "(B, *item)"
            raise ValueError(
                f"{type(self).__name__} ({modality}) expects {batch} with item {self.spec.describe_item()}, got {tuple(x.shape)}"
            )
        batch, views = x.shape[0], x.shape[1] if self.config.clips else 1
        embeds = embed_branch(self, modality, x.reshape(batch * views, *x.shape[lead:]))  # (B*V, E), unit norm
        return embeds.reshape(batch, views, -1).mean(dim=1).unsqueeze(1)
