"""Hook implementations of the audio plugin: names and numbers only (no torch import)."""

from nextgpt_registry import ComponentChoice, ComponentSpec, ModalityPreset, ModalitySpec, ToyWorldSpec, hookimpl

CODE_LICENSE = "Apache-2.0"
TINY_TRANSFORMER = {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "dim_feedforward": 64}


@hookimpl
def nextgpt_register_modalities(register):
    register(ModalitySpec(
        key="audio",
        description="sounds: WAV/FLAC/MP3 in, WAV out (16 kHz)",
        license=CODE_LICENSE,
        signal_token_format="[AUD{i}]",
        num_signal_tokens=8,  # official v0
        wrapper_tokens=("<Aud>", "</Aud>"),  # the official v0 wraps every input in <Img></Img>: its composition says so
        extensions=(".wav", ".flac", ".mp3", ".ogg", ".m4a"),
        mime_types=("audio/wav", "audio/x-wav", "audio/flac", "audio/mpeg", "audio/ogg"),
        output_extension=".wav",
        media_io="nextgpt_audio.media:AudioIO",
        presets={"tiny": ModalityPreset(
            encoder=ComponentChoice(id="audio/imagebind", options={"size": "tiny"}),
            input_projector=ComponentChoice(id="linear"),
            output_projectors=(ComponentChoice(id="transformer", options=TINY_TRANSFORMER),),
            decoder=ComponentChoice(id="audio/audioldm", options={"tiny": True}),
            decode_options={"num_inference_steps": 2, "audio_length_in_s": 1.0},
        )},
    ))


@hookimpl
def nextgpt_register_components(register):
    register(ComponentSpec(
        id="audio/imagebind", role="encoder", modality="audio",
        target="nextgpt_audio.encoders:ImageBindAudioEncoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (ImageBind weights)",
        description="ImageBind-huge audio branch, 3 clips of 2 s averaged (official v0)",
    ))
    register(ComponentSpec(
        id="audio/clap", role="encoder", modality="audio",
        target="nextgpt_audio.clap_encoder:CLAPAudioEncoder",
        license="Apache-2.0 (code); Apache-2.0 (LAION CLAP weights)",
        description="CLAP (HTSAT) audio tower with projection (permissive alternative)",
    ))
    register(ComponentSpec(
        id="audio/audioldm", role="decoder", modality="audio",
        target="nextgpt_audio.decoders:AudioLDMAudioDecoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (AudioLDM weights)",
        description="AudioLDM (l-full), CLAP prompt_embeds 1x512 (official v0)",
    ))
    register(ComponentSpec(
        id="audio/audioldm2", role="decoder", modality="audio",
        target="nextgpt_audio.decoders:AudioLDM2AudioDecoder",
        license="Apache-2.0 (code); CC-BY-NC-SA-4.0 (AudioLDM2 weights)",
        description="AudioLDM2: two conditioning sequences (T5 prompt_embeds + GPT-2 generated_prompt_embeds)",
    ))

    register(ComponentSpec(
        id="audio/retrieval", role="decoder", modality="audio",
        target="nextgpt_core.retrieval:RetrievalDecoder",
        license="Apache-2.0 (code); the gallery's own licences (no weights)",
        description="the nearest of a local gallery's sounds in the encoder's space (`nextgpt index build`)",
    ))

@hookimpl
def nextgpt_register_toy_world(register):
    register(ToyWorldSpec(modality="audio", target="nextgpt_audio.toy:AudioToyWorld", description="1 s tones: pitch, waveform, rhythm, glide"))
