"""Hook implementations of the video plugin: names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"
TINY_TRANSFORMER = {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 64}


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="video",
        description="videos: MP4/WebM/GIF in (PyAV), MP4 out",
        license=CODE_LICENSE,
        signal_token_format="[VID{i}]",
        num_signal_tokens=24,  # official v0
        wrapper_tokens=("<Vid>", "</Vid>"),  # the official v0 wraps every input in <Img></Img>: its composition says so
        extensions=(".mp4", ".webm", ".gif", ".mov", ".mkv"),
        mime_types=("video/mp4", "video/webm", "image/gif"),
        output_extension=".mp4",
        media_io="nextgpt_video.media:VideoIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="video/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
            output_projectors=(ComponentChoice(id="transformer", options=TINY_TRANSFORMER),),
            decoder=ComponentChoice(id="video/zeroscope", options={"tiny": True}),
            decode_options={"num_inference_steps": 2, "height": 32, "width": 32, "num_frames": 2},
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="video/imagebind", role="encoder", modality="video",
        target="nextgpt_video.encoders:ImageBindVideoEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge vision branch on 2-frame clips, 15 views averaged (official v0)",
    ))
    register(ComponentSpec(
        id="video/zeroscope", role="decoder", modality="video",
        target="nextgpt_video.decoders:ZeroScopeVideoDecoder",
        license="Apache-2.0 (code); CC-BY-NC-4.0 (ZeroScope v2 weights)",
        description="TextToVideoSD (ZeroScope v2 576w), prompt_embeds 77x1024 (official v0)",
    ))
    register(ComponentSpec(
        id="video/animatediff", role="decoder", modality="video",
        target="nextgpt_video.decoders:AnimateDiffVideoDecoder",
        license="Apache-2.0 (code); weights: the SD-1.5 base's and the motion adapter's licences",
        description="AnimateDiff (SD-1.5 UNet + motion adapter), prompt_embeds 77x768",
    ))

    register(ComponentSpec(
        id="video/retrieval", role="decoder", modality="video",
        target="nextgpt_core.retrieval:RetrievalDecoder",
        license="Apache-2.0 (code); the gallery's own licences (no weights)",
        description="the nearest of a local gallery's videos in the encoder's space (`nextgpt index build`)",
    ))

@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="video", target="nextgpt_video.toy:VideoToyWorld", description="8-frame 32x32 videos of a shape moving"))
