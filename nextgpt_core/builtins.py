"""The core's own plugin: generic projectors any modality can use. Torch-free (names only)."""

from __future__ import annotations

from nextgpt_registry import ComponentSpec, hookimpl

_LICENSE = "Apache-2.0"


@hookimpl
def nextgpt_register_components(register):  # type: ignore[no-untyped-def]
    register(ComponentSpec(
        id="linear", role="input_projector", license=_LICENSE,
        target="nextgpt_core.projectors:LinearInputProjector",
        description="one Linear per token (official v0 llama_proj)",
    ))
    register(ComponentSpec(
        id="mlp", role="input_projector", license=_LICENSE,
        target="nextgpt_core.projectors:MLPInputProjector",
        description="two-layer GELU MLP per token",
    ))
    register(ComponentSpec(
        id="transformer", role="output_projector", license=_LICENSE,
        target="nextgpt_core.projectors:TransformerOutputProjector",
        description="official TextFcLayer: fc, nn.Transformer over learned queries, model",
    ))
    register(ComponentSpec(
        id="linear-out", role="output_projector", license=_LICENSE,
        target="nextgpt_core.projectors:LinearOutputProjector",
        description="per-token Linear then a Linear across tokens",
    ))
