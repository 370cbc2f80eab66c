"""Issue C item 5: the stages learn, measured against baselines on the pretrained tiny world.

The captions are the toy world's (the plugins' toy-world parts; their held-out combinations are never drawn).
Stage 1 (single-object picture captions): caption LM loss on held-out renderings after training <= 0.5x the same run
with the media shuffled across the captions. Stage 2 (video captions): L2 on held-out captions <= 0.5x predicting
the mean target, and clearly below (<= 0.75x) the same run trained with the captions shuffled across the targets. Real plugins (tiny
ImageBind encoders, tiny diffusers decoders with their own tiny CLIP text encoders), real readers, real Trainer,
fixed seeds. The tiny world's LLM weights are cached under build/tiny-world (the first run pretrains them, about a
minute).
"""

from __future__ import annotations

import pytest
import torch
from nextgpt_registry import Registry

from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.toy.world import ToyWorld
from nextgpt_core.training.learning import LearningSettings, heldout_captions, measure_stage1, measure_stage2
from nextgpt_core.training.tiny_world import (
    TinyWorldSettings,
    caption_world,
    load_tiny_world,
    tiny_world_key,
    tiny_world_weights,
)

REAL = ["image", "video", "audio"]
#: stage 1 on single-object pictures: the frozen tiny ImageBind is random-init and its 32-d embedding of a toy picture
#: shows colour, size and background but hardly shape or position (linear probe: shape 0.37, position 0.25, chance);
#: a two-object picture adds a relation and a second shape it cannot show (benchmarks/training_learning.py)
STAGE1_WHERE = {"layout": "single"}


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def new_world(real_registry):
    """Builds (or reads) the cached tiny world once; each call returns a fresh model with the pretrained LLM."""
    load_tiny_world(real_registry)
    return lambda: load_tiny_world(real_registry)


def test_tiny_world_cache_roundtrip_and_key(real_registry, tmp_path):
    quick = TinyWorldSettings(steps=3, batch_size=4)
    first, m1 = tiny_world_weights(quick, registry=real_registry, cache_dir=tmp_path)
    again, m2 = tiny_world_weights(quick, registry=real_registry, cache_dir=tmp_path)
    assert (m1["cached"], m2["cached"]) == (False, True)
    assert m1["key"] == m2["key"] == tiny_world_key(quick, real_registry)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other_settings = TinyWorldSettings(steps=4, batch_size=4)
    assert tiny_world_key(other_settings, real_registry) != tiny_world_key(quick, real_registry)
    # the language is the installed toy-world parts' training captions: other parts, another world
    image_only = Registry.load(DEFAULT_PLUGINS, allow=["image"])
    assert tiny_world_key(quick, image_only) != tiny_world_key(quick, real_registry)
    world = ToyWorld.installed(real_registry)
    assert caption_world(real_registry) == world.training_captions()
    held = {world.parts[k].caption(c) for k in world.parts for c in world.combinations(k, "held_out")}
    assert held and not held & set(caption_world(real_registry))


def test_tiny_world_llm_learnt_the_caption_language(new_world):
    model = new_world()
    info = model.tiny_world["pretraining"]
    assert info["final_loss"] < 0.1 * info["first_loss"], info
    # the added tokens keep their fresh init; the base rows are the pretrained ones
    assert not any(p.requires_grad for p in model.llm.parameters()) and not model.llm.training
    from nextgpt_core import NextGPT

    random_llm = NextGPT.from_composition("tiny", registry=model.registry).llm
    new_ids = torch.tensor(model.tokens.new_ids)
    emb, rand = model.llm.get_input_embeddings().weight, random_llm.get_input_embeddings().weight
    assert torch.equal(emb[new_ids], rand[new_ids])
    assert not torch.equal(emb[: new_ids.min()], rand[: new_ids.min()])
    # it predicts a caption it was pretrained on much better than the random LLM does
    tok = model.tokenizer
    image = ToyWorld.installed(model.registry, keys=["image"])
    caption = image.parts["image"].caption(image.combinations("image", "train")[0])
    text = "### Human: describe it\n### Assistant: " + caption + "\n###"
    ids = torch.tensor([[tok.bos_token_id, *tok(text, add_special_tokens=False).input_ids]])
    with torch.no_grad():
        pretrained = float(model.llm(input_ids=ids, labels=ids).loss)
        untrained = float(random_llm(input_ids=ids, labels=ids).loss)
    assert pretrained < 0.2 * untrained, (pretrained, untrained)


def test_heldout_captions_split(real_registry):
    world = ToyWorld.installed(real_registry)
    for modality in ("image", "video"):
        part, train = world.parts[modality], world.combinations(modality, "train")
        held = heldout_captions(modality, real_registry)
        assert len(set(held)) == len(held) and 0.2 <= len(held) / len(train) <= 0.3, (modality, len(held), len(train))
        assert set(held) <= {part.caption(c) for c in train}  # the world's held-out combinations are never drawn
        for axis, values in part.axes.items():
            for value in values:
                with_value = [part.caption(c) for c in train if c.get(axis) == value]
                if with_value:
                    assert set(with_value) & set(held), (modality, axis, value)  # held out somewhere ...
                    assert set(with_value) - set(held), (modality, axis, value)  # ... and still trained on
    with pytest.raises(ValueError):
        heldout_captions("no-such-modality", real_registry)


def test_stage1_beats_shuffled_media(new_world, real_registry, tmp_path):
    r = measure_stage1(new_world, real_registry, tmp_path, LearningSettings(), modality="image", where=STAGE1_WHERE)
    print("stage 1:", r)
    assert r["trained"]["lm"] < r["before"]["lm"]
    assert r["ratio"] <= 0.5, r


def test_stage2_beats_mean_target_and_shuffled_captions(new_world, real_registry, tmp_path):
    r = measure_stage2(new_world, real_registry, tmp_path, LearningSettings(), modality="video")
    print("stage 2:", r)
    assert r["ratio_vs_mean"] <= 0.5, r
    assert r["ratio_vs_shuffled"] <= 0.75, r
