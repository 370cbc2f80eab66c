"""Hook implementations of the image plugin: names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"
#: the tiny output projector: the official architecture at toy width
TINY_TRANSFORMER = {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 64}


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="image",
        description="images: PNG/JPEG/WebP in, PNG out",
        license=CODE_LICENSE,
        signal_token_format="[IMG{i}]",
        num_signal_tokens=4,  # official v0
        wrapper_tokens=("<Img>", "</Img>"),
        extensions=(".png", ".jpg", ".jpeg", ".webp"),
        mime_types=("image/png", "image/jpeg", "image/webp"),
        output_extension=".png",
        media_io="nextgpt_image.media:ImageIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="image/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
            output_projectors=(ComponentChoice(id="transformer", options=TINY_TRANSFORMER),),
            decoder=ComponentChoice(id="image/sd-1.5", options={"tiny": True}),
            decode_options={"num_inference_steps": 2, "height": 32, "width": 32},
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="image/imagebind", role="encoder", modality="image",
        target="nextgpt_image.encoders:ImageBindImageEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge vision branch, 1024-d (official v0)",
    ))
    register(ComponentSpec(
        id="image/clip", role="encoder", modality="image",
        target="nextgpt_image.clip_encoder:CLIPImageEncoder",
        license="Apache-2.0 (code); MIT (OpenAI CLIP weights)",
        description="CLIP vision tower with projection (permissive alternative)",
    ))
    register(ComponentSpec(
        id="image/sd-1.5", role="decoder", modality="image",
        target="nextgpt_image.decoders:StableDiffusionImageDecoder",
        license="Apache-2.0 (code); CreativeML OpenRAIL-M (SD-1.5 weights)",
        description="Stable Diffusion 1.5, prompt_embeds 77x768 (official v0)",
    ))
    register(ComponentSpec(
        id="image/sd-2", role="decoder", modality="image",
        target="nextgpt_image.decoders:StableDiffusion2ImageDecoder",
        license="Apache-2.0 (code); CreativeML Open RAIL++-M (SD-2 weights)",
        description="Stable Diffusion 2, prompt_embeds 77x1024",
    ))

    register(ComponentSpec(
        id="image/retrieval", role="decoder", modality="image",
        target="nextgpt_core.retrieval:RetrievalDecoder",
        license="Apache-2.0 (code); the gallery's own licences (no weights)",
        description="the nearest of a local gallery's pictures in the encoder's space (`nextgpt index build`)",
    ))

@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="image", target="nextgpt_image.toy:ImageToyWorld", description="32x32 pictures of one or two coloured shapes"))
