"""`nextgpt params`: every component of the full-size nextgpt-v0 counted on the meta device, exact integers for what
nextgpt builds, and the trainable fraction (the paper: 131M trainable of about 12.4B, about 1%)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nextgpt_core.cli import app
from nextgpt_core.composition import resolve_composition
from nextgpt_core.hf_loading import quiet_transformers
from nextgpt_core.official.params import count_parameters
from nextgpt_core.official.paths import load_with_stand_ins


@pytest.fixture(scope="module")
def report(real_registry):
    with quiet_transformers():
        return count_parameters(resolve_composition(load_with_stand_ins("nextgpt-v0"), real_registry))


def test_exact_counts_of_what_we_build(report):
    rows = {name: (c.total, c.trainable, c.counted) for name, c in report.by_name().items()}
    assert rows == {
        "llm LlamaForCausalLM": (6_738_726_912, 303_104, True),           # Vicuna-7B v0 (32001 rows) resized to 32038
        "lora r=32": (33_554_432, 33_554_432, True),
        "image/encoder image/imagebind": (632_829_440, 0, True),          # ImageBind-huge vision branch
        "video/encoder video/imagebind": (632_829_440, 0, False),         # the same branch, shared: counted once
        "audio/encoder audio/imagebind": (86_235_648, 0, True),
        "input_projector shared": (4_198_400, 4_198_400, True),           # llama_proj
        "image/output_projector prompt_embeds": (31_958_784, 31_958_784, True),
        "video/output_projector prompt_embeds": (32_090_112, 32_090_112, True),
        "audio/output_projector prompt_embeds": (31_788_544, 31_788_544, True),
        "image/decoder image/sd-1.5": (1_066_235_307, 0, True),           # UNet + VAE + CLIP-L text (no safety checker)
        "video/decoder video/zeroscope": (1_835_275_563, 0, True),
        "audio/decoder audio/audioldm": (975_082_866, 0, True),
    }
    # stage 3 trains LoRA + every projector + 38 input rows (wrappers and signals) + 36 LM-head rows (signals)
    assert report.trainable == 133_893_376 == 33_554_432 + 4_198_400 + 95_837_440 + (38 + 36) * 4096
    assert report.stages == {1: 4_206_592, 2: 96_132_352, 3: 133_893_376}  # the figures of docs/training.md
    assert report.stages[1] == 4_198_400 + 2 * 4096  # llama_proj + the <Img> </Img> input rows
    assert report.stages[2] == 95_837_440 + 36 * 4096 * 2  # output projectors + signal rows in both matrices
    assert report.total == 11_467_976_008
    assert 0.009 < report.fraction < 0.013  # about 1%, as the paper's 131M / 12.4B
    # the official delta minus the base rows of its full matrices and the 2 wrapper rows of lm_head (frozen here)
    assert report.trainable == 396_045_568 - 2 * 32_000 * 4096 - 2 * 4096


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_each_stage_figure_is_what_the_stage_trains(real_registry, tiny_v0_file, stage):
    """`nextgpt params`' figure for a stage equals the trainable count of `apply_stage` on the built model, for
    the tiny v0 layout (shared projector, tied wrappers) and for `tiny` (no LoRA in the composition: stage 3
    adds it)."""
    from nextgpt_core import NextGPT
    from nextgpt_core.training.trainable import apply_stage

    for composition in (str(tiny_v0_file), "tiny"):
        resolved = resolve_composition(composition, real_registry)
        with quiet_transformers():
            report = count_parameters(resolved)
        model = NextGPT.from_composition(composition, registry=real_registry)
        assert report.stages[stage] == apply_stage(model, stage).trainable, composition


def test_cli_prints_every_component(real_registry, tiny_v0_file, monkeypatch):
    from nextgpt_core import plugins

    monkeypatch.setattr(plugins, "get_registry", lambda: real_registry)
    result = CliRunner().invoke(app, ["params", "--composition", str(tiny_v0_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [c["name"] for c in data["components"]]
    assert names[:2] == ["llm LlamaForCausalLM", "lora r=4"] and "image/decoder image/sd-1.5" in names
    assert data["trainable"] == sum(c["trainable"] for c in data["components"] if c["counted"]) == data["stages"]["3"]
    assert data["components"][0]["stages"] == {"1": 2 * 64, "2": 36 * 64 * 2, "3": (38 + 36) * 64}
    table = CliRunner().invoke(app, ["params", "--composition", str(tiny_v0_file)])
    assert table.exit_code == 0, table.output
    header, total = table.stdout.splitlines()[1], [line for line in table.stdout.splitlines() if "total" in line][0]
    assert header.split()[2:8] == ["stage", "1", "stage", "2", "stage", "3"]
    assert [int(x.replace(",", "")) for x in total.split()[2:5]] == [data["stages"][s] for s in "123"]
