"""Hook implementations of the thermal plugin (input only): names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="thermal",
        description="thermal images (input only): 8/16-bit grey PNG or TIFF, JPEG, .npy; name them: thermal=PATH",
        license=CODE_LICENSE,
        wrapper_tokens=("<Thm>", "</Thm>"),
        extensions=(".png", ".tif", ".tiff", ".jpg", ".jpeg", ".npy"),
        detect_by_extension=False,  # a .png is an image unless the user says thermal=PATH
        mime_types=("image/png", "image/tiff", "image/jpeg"),
        media_io="nextgpt_thermal.media:ThermalIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="thermal/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="thermal/imagebind", role="encoder", modality="thermal",
        target="nextgpt_thermal.encoders:ImageBindThermalEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge thermal branch (one-channel 224x224, 16x16 patches), 1024-d",
    ))


@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="thermal", target="nextgpt_thermal.toy:ThermalToyWorld",
                          description="32x32 thermal images of a warm or hot shape on a cold or mild background"))
