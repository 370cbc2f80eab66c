"""Hook implementations of the depth plugin (input only): names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="depth",
        description="depth maps (input only): 8/16-bit PNG in millimetres, or .npy; name them: depth=PATH",
        license=CODE_LICENSE,
        wrapper_tokens=("<Dep>", "</Dep>"),
        extensions=(".png", ".npy"),
        detect_by_extension=False,  # a .png is an image unless the user says depth=PATH
        mime_types=("image/png",),
        media_io="nextgpt_depth.media:DepthIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="depth/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="depth/imagebind", role="encoder", modality="depth",
        target="nextgpt_depth.encoders:ImageBindDepthEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge depth branch (disparity), 1024-d",
    ))


@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="depth", target="nextgpt_depth.toy:DepthToyWorld", description="32x32 depth maps of a shape near or far"))
