"""The built-in `nextgpt-v0` composition: every v0 choice is a setting, its local paths come from the environment
or the paths file, and at full size (meta device) the complete official key list maps one to one onto what it
builds."""

from __future__ import annotations

from importlib import resources

import pytest

from nextgpt_core import CompositionError, ConfigError, NextGPT
from nextgpt_core.composition import load_composition
from nextgpt_core.official.check import read_key_table
from nextgpt_core.official.keymap import map_key

OFFICIAL = read_key_table((resources.files("nextgpt_core.official") / "nextgpt_7b_tiva_v0_delta.tsv").read_text())
V0_IDS = {"<Img>": 32000, "</Img>": 32001, **{f"[IMG{i}]": 32002 + i for i in range(4)},
          **{f"[VID{i}]": 32006 + i for i in range(24)}, **{f"[AUD{i}]": 32030 + i for i in range(8)}}


@pytest.fixture()
def no_paths(monkeypatch, tmp_path):
    for name in ("NEXTGPT_VICUNA_V0", "NEXTGPT_IMAGEBIND", "NEXTGPT_SD15", "NEXTGPT_ZEROSCOPE", "NEXTGPT_AUDIOLDM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NEXTGPT_PATHS", str(tmp_path / "absent.toml"))
    return tmp_path


def test_every_v0_choice_is_a_setting(v0_layout):
    comp = v0_layout.composition
    assert comp.prompt.user == "### Human: {content}" and comp.prompt.generation_prompt == "\n### Assistant:"
    assert comp.prompt.assistant == "\n### Assistant: {content}\n" and comp.prompt.stop == ("###",)
    assert (comp.prompt.bos, comp.prompt.strip_around_tokens, comp.prompt.join_turns) == ("every_segment", True, True)
    assert comp.llm.dummy_prefix == "always" and comp.vocabulary.first_added_id == 32000
    assert (comp.signal.hidden_layer, comp.signal.position_offset) == (-1, 0)
    assert comp.input_projection.tie and comp.input_projection.shared.id == "linear"
    assert (comp.lora.r, comp.lora.alpha, comp.lora.dropout) == (32, 32.0, 0.1)
    for key in ("image", "video", "audio"):
        m = comp.modalities[key]
        assert m.wrapper_tokens == ("<Img>", "</Img>") and m.item_merge == "sum"
    assert v0_layout.added == V0_IDS and v0_layout.rows == 32038 and v0_layout.hidden == 4096
    shared = v0_layout.components[("input_projectors", "shared")].options
    assert (shared["in_dim"], shared["out_dim"]) == (1024, 4096)


def test_full_size_official_keys_map_one_to_one(v0_layout):
    """All 647 official keys land on distinct tensors of the meta-built layout with the same shapes, and every tensor
    of the layout is covered: nothing is left over on either side (also for names without `.default.`)."""
    assert len(OFFICIAL) == 647 and sum(_numel(s) for s in OFFICIAL.values()) == 396_045_568
    for strip_default in (False, True):
        seen = {}
        for name, shape in OFFICIAL.items():
            name = name.replace(".default.", ".") if strip_default else name
            part, group, key = map_key(name)
            if part == "output_projectors":
                group = v0_layout.output_group(group)
            assert v0_layout.groups[(part, group)][key] == shape, name
            assert (part, group, key) not in seen, (name, seen.get((part, group, key)))
            seen[(part, group, key)] = name
        layout_keys = {(p, g, k) for (p, g), tensors in v0_layout.groups.items() for k in tensors}
        assert set(seen) == layout_keys
    assert v0_layout.count() == 396_045_568


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def test_unset_paths_are_named(no_paths):
    with pytest.raises(CompositionError, match=r"\$\{NEXTGPT_VICUNA_V0\}, \$\{NEXTGPT_IMAGEBIND\}, .* not set; set the environment"):
        load_composition("nextgpt-v0")


def test_paths_from_the_settings_file_and_the_environment(no_paths, monkeypatch):
    file = no_paths / "paths.toml"
    file.write_text('NEXTGPT_VICUNA_V0 = "/m/vicuna"\nNEXTGPT_IMAGEBIND = "/m/ib.pth"\nNEXTGPT_SD15 = "/m/sd"\n'
                    'NEXTGPT_ZEROSCOPE = "/m/zs"\nNEXTGPT_AUDIOLDM = "/m/aldm"\n')
    monkeypatch.setenv("NEXTGPT_PATHS", str(file))
    monkeypatch.setenv("NEXTGPT_SD15", "/env/sd")  # the environment wins over the file
    comp = load_composition("nextgpt-v0")
    assert comp.llm.path == "/m/vicuna"
    assert comp.modalities["video"].encoder.options["checkpoint"] == "/m/ib.pth"
    assert comp.modalities["image"].decoder.options["path"] == "/env/sd"
    file.write_text("NEXTGPT_SD15 = 3\n")
    with pytest.raises(CompositionError, match="every entry must be a string path"):
        load_composition("nextgpt-v0")


def test_added_token_ids_are_checked(real_registry, tiny_v0_file, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_v0_file.read_text().replace("first_added_id = 300", "first_added_id = 301"))
    with pytest.raises(ConfigError, match=r"added token '<Img>' got id 300, the composition expects 301"):
        NextGPT.from_composition(bad, registry=real_registry)


def test_decoders_load_only_when_a_reply_needs_them(real_registry, tiny_v0_file):
    """Item 6: building the model loads no decoder; a reply with an image loads the image decoder only."""
    model = NextGPT.from_composition(tiny_v0_file, registry=real_registry)
    assert not any(d.is_loaded for d in model.decoders.values())
    reply = model.generate("draw", want=["image"], seed=0, max_new_tokens=12)
    assert [m.modality for m in reply.media] == ["image"]
    assert {k for k, d in model.decoders.items() if d.is_loaded} == {"image"}
    model.decoders["image"].unload()
    assert not model.decoders["image"].is_loaded


def test_encoders_and_projectors_at_fp16(real_registry, tiny_v0_file, tmp_path):
    """`modules_dtype = "float16"` (nextgpt-v0) runs ImageBind and the projectors at fp16, as the official `.half()`;
    a request with an image in and an image out still runs end to end."""
    from nextgpt_image.media import ImageIO
    from PIL import Image

    from nextgpt_core import Conversation, Media

    file = tmp_path / "half.toml"
    file.write_text('modules_dtype = "float16"\n' + tiny_v0_file.read_text())
    model = NextGPT.from_composition(file, registry=real_registry)
    import torch

    assert {p.dtype for p in model.encoders.parameters()} == {torch.float16}
    assert {p.dtype for p in model.input_projectors.parameters()} == {torch.float16}
    assert {p.dtype for p in model.output_projectors.parameters()} == {torch.float16}
    assert model.llm.get_input_embeddings().weight.dtype == torch.float32
    picture = ImageIO().write(Image.new("RGB", (32, 32), (0, 200, 0)), tmp_path / "p.png")
    reply = model.generate(Conversation().user(Media.from_path(picture), "redraw it"), want=["image"], seed=1, max_new_tokens=12)
    assert [m.modality for m in reply.media] == ["image"]
