"""Compositions: TOML + pydantic, unknown keys rejected, parts that do not fit rejected naming both."""

from __future__ import annotations

import textwrap

import pytest

from nextgpt_core.composition import builtin_compositions, load_composition, resolve_composition
from nextgpt_core.errors import CompositionError

BASE = """
name = "t"
[llm.tiny]
hidden_size = 32
"""


def write(tmp_path, body: str, name: str = "c.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(BASE) + textwrap.dedent(body))
    return path


def test_tiny_is_built_in_and_takes_every_installed_modality(registry):
    assert "tiny" in builtin_compositions()
    resolved = resolve_composition("tiny", registry)
    assert list(resolved.modalities) == ["fake_image", "fake_audio", "fake_depth"]
    image = resolved.modalities["fake_image"]
    assert image.input_projector.options == {"in_dim": 12, "out_dim": 64}
    assert image.output_projectors[0].options["out_len"] == 4 and image.output_projectors[0].fills == "prompt_embeds"
    assert image.decode_options == {"num_inference_steps": 2}
    audio = resolved.modalities["fake_audio"]
    assert [p.fills for p in audio.output_projectors] == ["prompt_embeds", "pooled_embeds"]
    assert not resolved.modalities["fake_depth"].can_generate and resolved.modalities["fake_depth"].can_read


def test_unknown_keys_rejected_with_their_path(tmp_path):
    with pytest.raises(CompositionError, match=r"colour: unknown key"):
        load_composition(write(tmp_path, 'colour = "red"\n'))
    typo = tmp_path / "typo.toml"
    typo.write_text(BASE.replace("hidden_size", "hiden_size"))
    with pytest.raises(CompositionError, match=r"llm\.tiny\.hiden_size: unknown key"):
        load_composition(typo)
    with pytest.raises(CompositionError, match=r"modalities\.fake_image\.encodr: unknown key"):
        load_composition(write(tmp_path, '[modalities.fake_image]\nencodr = "fake-encoder"\n'))


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed\n")
    with pytest.raises(CompositionError, match="not valid TOML"):
        load_composition(bad)
    with pytest.raises(CompositionError, match=r"no composition file 'nope'.*built-ins: nextgpt-v0, tiny"):
        load_composition("nope")


def test_input_projector_dim_mismatch_names_both(tmp_path, registry):
    path = write(tmp_path, """
    [modalities.fake_image]
    preset = "tiny"
    input_projector = { id = "linear", options = { in_dim = 99 } }
    """)
    with pytest.raises(CompositionError, match=r"input projector 'linear' has enc_dim \(in_dim\) 99, but encoder 'fake-encoder' outputs 12"):
        resolve_composition(path, registry)


def test_output_projector_mismatch_names_both(tmp_path, registry):
    path = write(tmp_path, """
    [modalities.fake_image]
    preset = "tiny"
    output_projector = { id = "linear-out", options = { out_dim = 768 } }
    """)
    with pytest.raises(CompositionError, match=r"output projector 'linear-out' produces out_dim 768, but decoder 'fake-decoder' input 'prompt_embeds' is 4x16"):
        resolve_composition(path, registry)


def test_swapped_decoder_needs_a_fitting_projector(tmp_path, registry):
    path = write(tmp_path, """
    [modalities.fake_image]
    preset = "tiny"
    decoder = { id = "fake-decoder", options = { inputs = [{ name = "prompt_embeds", length = 5, dim = 10 }] } }
    output_projector = { id = "transformer", options = { out_len = 4, d_model = 8, num_heads = 2 } }
    """)
    with pytest.raises(CompositionError, match=r"'transformer' produces out_len 4, but decoder 'fake-decoder' input 'prompt_embeds' is 5x10"):
        resolve_composition(path, registry)


def test_several_conditioning_inputs_each_filled_once(tmp_path, registry):
    path = write(tmp_path, """
    [modalities.fake_audio]
    preset = "tiny"
    output_projector = "linear-out"
    """)
    # one projector choice and a decoder with two inputs: one projector of that kind per input
    resolved = resolve_composition(path, registry).modalities["fake_audio"]
    assert [(p.id, p.fills, p.options["out_len"], p.options["out_dim"]) for p in resolved.output_projectors] == [
        ("linear-out", "prompt_embeds", 3, 8), ("linear-out", "pooled_embeds", 1, 6)]
    path = write(tmp_path, """
    [modalities.fake_audio]
    preset = "tiny"
    output_projectors = [{ id = "linear-out", fills = "prompt_embeds" }]
    """)
    with pytest.raises(CompositionError, match=r"input\(s\) pooled_embeds filled by no output projector"):
        resolve_composition(path, registry)
    path = write(tmp_path, """
    [modalities.fake_audio]
    preset = "tiny"
    output_projectors = ["linear-out", "transformer"]
    """)
    with pytest.raises(CompositionError, match=r"takes several conditioning inputs \(prompt_embeds, pooled_embeds\); say which one"):
        resolve_composition(path, registry)


def test_unknown_names(tmp_path, registry):
    with pytest.raises(CompositionError, match=r"unknown modality 'imgae'; registered: fake_audio, fake_depth, fake_image"):
        resolve_composition(write(tmp_path, "[modalities.imgae]\n"), registry)
    with pytest.raises(CompositionError, match=r"unknown encoder 'clip'; registered: fake-encoder"):
        resolve_composition(write(tmp_path, '[modalities.fake_image]\npreset = "tiny"\nencoder = "clip"\n'), registry)
    with pytest.raises(CompositionError, match=r"unknown decoder 'fake-encoder'"):
        resolve_composition(write(tmp_path, '[modalities.fake_image]\npreset = "tiny"\ndecoder = "fake-encoder"\n'), registry)
    with pytest.raises(CompositionError, match=r"no preset 'huge'; presets: tiny"):
        resolve_composition(write(tmp_path, '[modalities.fake_image]\npreset = "huge"\n'), registry)
    with pytest.raises(CompositionError, match=r"invalid options for FakeEncoder: wings: unknown key"):
        resolve_composition(write(tmp_path, '[modalities.fake_image]\npreset = "tiny"\nencoder = { id = "fake-encoder", options = { wings = 2 } }\n'), registry)


def test_tied_input_projector(tmp_path, registry):
    path = write(tmp_path, """
    [input_projection]
    tie = true
    shared = "linear"
    [modalities.fake_image]
    preset = "tiny"
    [modalities.fake_audio]
    preset = "tiny"
    """)
    resolved = resolve_composition(path, registry)
    assert resolved.shared_input_projector.options == {"in_dim": 12, "out_dim": 32}
    assert all(m.input_projector is None for m in resolved.modalities.values())
    path = write(tmp_path, """
    [input_projection]
    tie = true
    shared = "linear"
    [modalities.fake_image]
    preset = "tiny"
    encoder = { id = "fake-encoder", options = { enc_dim = 5 } }
    [modalities.fake_audio]
    preset = "tiny"
    """)
    with pytest.raises(CompositionError, match=r"one encoder dim, got fake_image: encoder 'fake-encoder' -> 5, fake_audio: encoder 'fake-encoder' -> 12"):
        resolve_composition(path, registry)
    with pytest.raises(CompositionError, match="needs `input_projection.shared`"):
        load_composition(write(tmp_path, "[input_projection]\ntie = true\n"))


def test_tied_model_uses_one_projector(tmp_path, registry, fake_files):
    from nextgpt_core import Conversation, Media, NextGPT

    path = write(tmp_path, """
    [input_projection]
    tie = true
    shared = "linear"
    [modalities.fake_image]
    preset = "tiny"
    [modalities.fake_audio]
    preset = "tiny"
    encoder = { id = "fake-encoder", options = { in_features = 32, enc_dim = 12 } }
    input_projector = "mlp"
    """)
    model = NextGPT.from_composition(path, registry=registry)
    assert list(model.input_projectors) == ["shared"]
    conv = Conversation().user(Media.from_path(fake_files["image"]), Media.from_path(fake_files["audio"]), "x")
    assert model.generate(conv, seed=0, max_new_tokens=3).token_ids


def test_llm_needs_exactly_one_source(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[llm]\npath = "/weights/vicuna"\n[llm.tiny]\n')
    with pytest.raises(CompositionError, match="exactly one of `llm.path`"):
        load_composition(path)


def test_missing_local_llm_weights(tmp_path, registry):
    from nextgpt_core.errors import WeightsNotFoundError

    path = tmp_path / "c.toml"
    path.write_text(f'name = "x"\n[llm]\npath = "{tmp_path / "nowhere"}"\n')
    with pytest.raises(WeightsNotFoundError, match="no config.json"):
        resolve_composition(path, registry)


def test_token_clashes_rejected_in_either_order(tmp_path, registry):
    for first, second in (("fake_image", "fake_audio"), ("fake_audio", "fake_image")):
        wrapper_of = "fake_image"
        body = f"""
        [modalities.{first}]
        preset = "tiny"
        {'wrapper_tokens = ["[FAUD0]", "</x>"]' if first == wrapper_of else ''}
        [modalities.{second}]
        preset = "tiny"
        {'wrapper_tokens = ["[FAUD0]", "</x>"]' if second == wrapper_of else ''}
        """
        with pytest.raises(CompositionError, match=r"token '\[FAUD0\]' is a signal token of fake_audio and a wrapper of fake_image"):
            resolve_composition(write(tmp_path, body), registry)
    with pytest.raises(CompositionError, match=r"`signal_token_format` must contain '\{i\}'"):
        resolve_composition(write(tmp_path, '[modalities.fake_image]\npreset = "tiny"\nsignal_token_format = "[IMG]"\n'), registry)


def test_decode_options_checked_at_validation(tmp_path, registry):
    path = write(tmp_path, '[modalities.fake_image]\npreset = "tiny"\ndecode_options = { steps = 4 }\n')
    with pytest.raises(CompositionError, match=r"modality 'fake_image': decode_options: steps: unknown key"):
        resolve_composition(path, registry)


def test_auto_modalities_leave_out_plugins_without_the_preset(registry):
    import nextgpt_fake.plugin
    from nextgpt_registry import ModalitySpec, Registry, hookimpl

    import nextgpt_core.builtins

    class NoPreset:
        __name__ = "no-preset"

        @hookimpl
        def nextgpt_register_modalities(self, register):
            register(ModalitySpec(key="thermal", license="MIT", media_io="x.y:Z", wrapper_tokens=("<T>", "</T>")))

    reg = Registry.from_plugins([nextgpt_core.builtins, nextgpt_fake.plugin, NoPreset()])
    resolved = resolve_composition("tiny", reg)
    assert "thermal" not in resolved.modalities and "fake_image" in resolved.modalities
    assert resolved.notes == ("modality 'thermal' (no-preset) left out: it has no 'tiny' preset",)
