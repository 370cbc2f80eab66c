"""Hook implementations only: names and numbers, no torch import."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, hookimpl

LICENSE = "Apache-2.0"
_TINY_TFM = {"d_model": 16, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 32}


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="fake_image",
        description="fake 8x8 'images' stored as .fimg (numpy)",
        license=LICENSE,
        signal_token_format="[FIMG{i}]",
        num_signal_tokens=4,
        wrapper_tokens=("<FImg>", "</FImg>"),
        extensions=(".fimg",),
        mime_types=("application/x-fake-image",),
        output_extension=".fimg",
        media_io="nextgpt_fake.media:FakeImageIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="fake-encoder", options={"in_features": 64, "enc_dim": 12}),
            input_projector=ComponentChoice(id="linear"),
            output_projectors=(ComponentChoice(id="transformer", options=_TINY_TFM),),
            decoder=ComponentChoice(id="fake-decoder", options={
                "inputs": [{"name": "prompt_embeds", "length": 4, "dim": 16}], "output_shape": [8, 8]}),
            decode_options={"num_inference_steps": 2},
        )},
    ))
    register(ModalitySpec(
        key="fake_audio",
        description="fake 32-sample 'sounds' stored as .faud; its decoder takes two conditioning inputs",
        license=LICENSE,
        signal_token_format="[FAUD{i}]",
        num_signal_tokens=2,
        wrapper_tokens=("<FAud>", "</FAud>"),
        extensions=(".faud",),
        output_extension=".faud",
        media_io="nextgpt_fake.media:FakeAudioIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="fake-encoder", options={"in_features": 32, "enc_dim": 12, "n_tokens": 2}),
            input_projector=ComponentChoice(id="mlp"),
            output_projectors=(
                ComponentChoice(id="linear-out", fills="prompt_embeds"),
                ComponentChoice(id="transformer", fills="pooled_embeds", options=_TINY_TFM),
            ),
            decoder=ComponentChoice(id="fake-decoder", options={
                "inputs": [{"name": "prompt_embeds", "length": 3, "dim": 8}, {"name": "pooled_embeds", "length": 1, "dim": 6}],
                "output_shape": [32]}),
        )},
    ))
    register(ModalitySpec(
        key="fake_depth",
        description="input-only fake depth maps; also .fimg files, so it must be named (fake_depth=PATH)",
        license=LICENSE,
        wrapper_tokens=("<FDep>", "</FDep>"),
        extensions=(".fimg",),
        detect_by_extension=False,
        media_io="nextgpt_fake.media:FakeImageIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="fake-encoder", options={"in_features": 64, "enc_dim": 12}),
            input_projector=ComponentChoice(id="linear"),
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(id="fake-encoder", role="encoder", license=LICENSE,
                           target="nextgpt_fake.encoder:FakeEncoder", description="Linear + tanh over a numpy array"))
    register(ComponentSpec(id="fake-decoder", role="decoder", license=LICENSE,
                           target="nextgpt_fake.decoder:FakeDecoder",
                           description="a few CFG 'denoising' steps with named conditioning inputs"))
