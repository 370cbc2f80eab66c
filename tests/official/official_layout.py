"""A tiny checkpoint with the official NExT-GPT v0 delta's key names and layout (the test fixture generator).

:func:`write_official_delta` writes what ``NExT-GPT-Lagacy/code/model/agent.py::save_model`` writes for the
released ``nextgpt_7b_tiva_v0`` (``pytorch_model.pt``), at toy sizes: a pickled ``OrderedDict`` of fp16
``nn.Parameter`` s, saved with ``torch.save``, with these names (the full list for the real file is
``nextgpt_core/official/nextgpt_7b_tiva_v0_delta.tsv``):

- ``llama_proj.{weight,bias}``: the shared input ``nn.Linear(enc_dim, H)``;
- ``gen_text_hidden_fcs.0.*``, ``gen_text_hidden_fcs_video.0.*``, ``gen_text_hidden_fcs_audio.0.*``: the official
  ``TextFcLayer(mode="transformer")``: ``fc`` (Linear H -> d_model), ``tfm`` (``torch.nn.Transformer``, pre-norm,
  batch-first), ``model`` (Linear d_model -> out_dim), ``query_embs`` ``(1, out_len, d_model)``;
- ``llama_model.base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.default.weight`` (peft 0.3
  names; ``default_adapter_name=False`` leaves out ``.default.``, which a loader must accept too);
- ``llama_model.base_model.model.model.embed_tokens.weight`` and ``llama_model.base_model.model.lm_head.weight``:
  the FULL ``(rows, H)`` matrices.

The names are written here from the official scheme, independently of ``nextgpt_core.official.keymap``, so a test
that converts this file checks the mapping rather than repeating it. The module list is built from plain torch
modules (``torch.nn.Transformer`` and ``Linear``), the parts the official class is made of.

Usage (tests/official/test_convert.py): ``write_official_delta(path, TinySpec(...), seed=0)`` returns the
``{name: tensor}`` it wrote, so a test can compute the expected outputs from those tensors with plain torch ops.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["ProjectorSpec", "TinySpec", "text_fc_layer", "write_official_delta"]

OUT_MODULES = {"image": "gen_text_hidden_fcs", "video": "gen_text_hidden_fcs_video", "audio": "gen_text_hidden_fcs_audio"}


@dataclass(frozen=True)
class ProjectorSpec:
    """One official ``TextFcLayer``: ``out_len`` x ``out_dim`` from ``d_model``-wide transformer."""

    out_len: int
    out_dim: int
    d_model: int = 32
    heads: int = 2
    encoder_layers: int = 1
    decoder_layers: int = 1
    ff: int = 64


@dataclass(frozen=True)
class TinySpec:
    """Sizes of the tiny official-layout file (they must be those of the composition it is converted for)."""

    hidden: int
    layers: int
    enc_dim: int
    rows: int
    lora_r: int
    projectors: dict[str, ProjectorSpec] = field(default_factory=dict)


def text_fc_layer(hidden: int, p: ProjectorSpec) -> nn.Module:
    """The official ``TextFcLayer`` (mode ``transformer``) as plain torch modules, with its parameter names."""
    layer = nn.Module()
    layer.fc = nn.Linear(hidden, p.d_model)
    with warnings.catch_warnings():  # "enable_nested_tensor ... norm_first": irrelevant here
        warnings.simplefilter("ignore", UserWarning)
        layer.tfm = nn.Transformer(
            d_model=p.d_model, nhead=p.heads, num_encoder_layers=p.encoder_layers, num_decoder_layers=p.decoder_layers,
            dim_feedforward=p.ff, dropout=0.0, batch_first=True, norm_first=True,
        )
    layer.model = nn.Linear(p.d_model, p.out_dim)
    layer.query_embs = nn.Parameter(torch.randn(1, p.out_len, p.d_model))
    return layer


def write_official_delta(
    path: Path, spec: TinySpec, *, seed: int = 0, default_adapter_name: bool = True, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """Write a tiny ``pytorch_model.pt`` in the official v0 delta layout; returns ``{name: tensor}`` as written.

    LoRA B matrices are random (not zero, as after training), so the LoRA path changes the outputs.
    """
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.05).to(dtype)

    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    peft = "llama_model.base_model.model."
    state[peft + "model.embed_tokens.weight"] = rand(spec.rows, spec.hidden)
    adapter = ".default" if default_adapter_name else ""
    for i in range(spec.layers):
        for proj in ("q", "k", "v", "o"):
            base = f"{peft}model.layers.{i}.self_attn.{proj}_proj"
            state[f"{base}.lora_A{adapter}.weight"] = rand(spec.lora_r, spec.hidden)
            state[f"{base}.lora_B{adapter}.weight"] = rand(spec.hidden, spec.lora_r)
    state["llama_proj.weight"] = rand(spec.hidden, spec.enc_dim)
    state["llama_proj.bias"] = rand(spec.hidden)
    for modality, p in spec.projectors.items():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + len(modality))
            layer = text_fc_layer(spec.hidden, p)
        for name, value in layer.state_dict().items():
            state[f"{OUT_MODULES[modality]}.0.{name}"] = (value + torch.randn(value.shape, generator=gen) * 0.01).to(dtype)
    state[peft + "lm_head.weight"] = rand(spec.rows, spec.hidden)
    params = OrderedDict((k, nn.Parameter(v, requires_grad=False)) for k, v in state.items())
    torch.save(params, path)
    return dict(state)
