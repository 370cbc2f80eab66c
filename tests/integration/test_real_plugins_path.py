"""The trainer, collate, checkpoint and generation paths over the REAL tiny plugins (image, video, audio), not only
the fake one that ``tests/conftest.py`` loads for the rest of the suite.

The registry is built here from the installed plugins by name (``Registry.load(..., allow=REAL)``), so the
process-wide ``NEXTGPT_LOAD_PLUGINS=fake`` stays as it is. Everything is tiny (random-init ``tiny`` composition,
two optimizer steps) and runs in seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from nextgpt_audio.media import Audio
from nextgpt_registry import Registry
from nextgpt_video.media import Video
from PIL import Image

from nextgpt_core import Conversation, Media, NextGPT
from nextgpt_core.composition import resolve_composition
from nextgpt_core.conversation import Text
from nextgpt_core.plugins import DEFAULT_PLUGINS
from nextgpt_core.training.collate import IGNORE_INDEX, MEDIA_ID, build_example, collate_batch
from nextgpt_core.training.data import MediaLoader, read_dataset
from nextgpt_core.training.synthetic import make_synthetic_dataset
from nextgpt_core.training.targets import TargetCache, build_decoders, cache_targets
from nextgpt_core.training.trainable import STAGES, apply_stage
from nextgpt_core.training.trainer import TrainConfig, Trainer

REAL = ["image", "video", "audio"]
#: the parts of each real tiny pipeline that must stay frozen (every torch module of the pipeline is checked too)
PIPELINE_PARTS = {
    "image": ("unet", "vae", "text_encoder"),  # Stable Diffusion
    "video": ("unet", "vae", "text_encoder"),  # ZeroScope
    "audio": ("unet", "vae", "text_encoder", "vocoder"),  # AudioLDM
}
#: what each media kind decodes to
MEDIA_TYPES = {"image": Image.Image, "video": Video, "audio": Audio}
BUDGET = 8  # max_new_tokens handed to prepare_inputs for the reference prompt
FAST = {key: {"num_inference_steps": 2} for key in REAL}  # denoising steps per request (the path, not the quality)


@pytest.fixture(scope="module")
def real_registry():
    return Registry.load(DEFAULT_PLUGINS, allow=REAL)


@pytest.fixture(scope="module")
def model(real_registry):
    """One untrained model for the read-only tests (collate, generation)."""
    return NextGPT.from_composition("tiny", registry=real_registry)


@pytest.fixture(scope="module")
def data(real_registry, tmp_path_factory):
    """Synthetic media, 2 per modality: 6 captioning samples (media in) and 6 generation samples (targets out),
    the targets' L2 embeddings cached by the real tiny decoders."""
    root = tmp_path_factory.mktemp("real-path")
    ds = make_synthetic_dataset(root / "data", 2, seed=3, registry=real_registry)
    loaded = read_dataset(ds.jsonl, media_root=ds.media, registry=real_registry)
    assert loaded.report.kept == 12, loaded.report.summary()
    samples = list(loaded.samples)
    cache_targets([t for s in samples for t in s.targets], build_decoders(resolve_composition("tiny", real_registry)),
                  root / "cache")
    return {"samples": samples, "targets": TargetCache(root / "cache")}


def _media_sample(samples, modality):
    return next(s for s in samples if any(getattr(p, "modality", None) == modality
                                          for t in s.conversation.turns for p in t.parts))


def _target_sample(samples, modality):
    return next(s for s in samples if [t.modality for t in s.targets] == [modality])


def _expected_trainable(model, stage: int) -> set[str]:
    """The stage's set written out from the table in trainable.py, by parameter name in the model."""
    spec = STAGES[stage]
    prefixes = [p for p, on in (("input_projectors.", spec.input_projectors), ("output_projectors.", spec.output_projectors)) if on]
    names = {n for n, _ in model.named_parameters() if n.startswith(tuple(prefixes)) or (spec.lora and "lora_" in n)}
    names.add("trainable_rows.embed_rows")  # every stage trains some input rows (wrappers and/or signals)
    if spec.head_rows and not _tied(model):
        names.add("trainable_rows.head_rows")
    return names


def _tied(model) -> bool:
    return model.llm.get_output_embeddings().weight is model.llm.get_input_embeddings().weight


# ---------------------------------------------------------------------------------------------- apply_stage
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_apply_stage_trains_exactly_the_stage_set_and_freezes_the_real_pipelines(real_registry, stage):
    """After apply_stage every parameter of every real tiny pipeline part (SD / ZeroScope / AudioLDM UNet, VAE, text
    encoder, vocoder) has requires_grad False, even if a user's code had turned them on, and the parameters that
    require grad are exactly the stage's set: its projectors, its LoRA, its token rows; nothing of the encoders or
    the LLM's base."""
    model = NextGPT.from_composition("tiny", registry=real_registry)
    model.load_decoders()
    for decoder in model.decoders.values():
        for module in decoder.torch_modules():
            module.requires_grad_(True).train()
    trainable = apply_stage(model, stage)

    for key, parts in PIPELINE_PARTS.items():
        pipe = model.decoders[key].pipe
        for part in parts:
            params = list(getattr(pipe, part).parameters())
            assert params, (key, part)
            assert not any(p.requires_grad for p in params), (key, part)
            assert not getattr(pipe, part).training, (key, part)
        assert not [p for m in model.decoders[key].torch_modules() for p in m.parameters() if p.requires_grad], key

    requires_grad = {n for n, p in model.named_parameters() if p.requires_grad}
    assert requires_grad == {n for n, _ in trainable.named_parameters()}
    assert requires_grad == _expected_trainable(model, stage)
    assert any(n.startswith("llm.") for n in requires_grad) == (stage == 3)
    assert not any(n.startswith("encoders.") for n in requires_grad)
    wrappers = {i for pair in model.tokens.wrappers.values() for i in pair}
    signals = set(model.tokens.all_signal_ids)
    embed_ids = {1: wrappers, 2: signals, 3: wrappers | signals}[stage]
    head_ids = set() if stage == 1 else signals
    if _tied(model):
        embed_ids = head_ids = embed_ids | head_ids
    assert set(trainable.rows.embed_ids.tolist()) == embed_ids
    assert set(trainable.rows.head_ids.tolist()) == head_ids


# ---------------------------------------------------------------------------------------------- collate
@pytest.mark.parametrize("modality", REAL)
def test_collate_lays_out_real_media_as_inference_does(model, real_registry, data, modality):
    """A captioning sample with a real image / video / audio: the media sit between the modality's wrapper tokens as
    its input projector's output (with autograd), the prompt part equals what inference feeds the LLM
    (prepare_inputs), and exactly the reply is labelled."""
    sample = _media_sample(data["samples"], modality)
    ex = build_example(model, sample, media_loader=MediaLoader(real_registry))
    ids = ex.input_ids[0].tolist()
    open_id, close_id = model.tokens.wrappers[modality]
    first, last = ids.index(MEDIA_ID), len(ids) - 1 - ids[::-1].index(MEDIA_ID)
    assert ids[first - 1] == open_id and ids[last + 1] == close_id
    assert ids[first : last + 1] == [MEDIA_ID] * (last + 1 - first)
    assert ex.inputs_embeds.requires_grad and ex.signal_spans == []

    prefix = Conversation(sample.conversation.turns[:-1])
    with torch.no_grad():
        prompt, _ = model.prepare_inputs(prefix, BUDGET)
    p = prompt.shape[1]
    assert torch.allclose(ex.inputs_embeds[:, :p].detach(), prompt, atol=1e-5)
    labels = ex.labels[0]
    assert (labels[:p] == IGNORE_INDEX).all()
    assert labels[p:].tolist() == ex.input_ids[0, p:].tolist() and MEDIA_ID not in labels[p:].tolist()


@pytest.mark.parametrize("modality", REAL)
def test_collate_inserts_the_real_signal_run(model, real_registry, data, modality):
    """A generation sample: the target's signal run is inserted as ids and labelled, its span as long as the
    modality's signal tokens (4 image, 24 video, 8 audio); padding in a batch keeps every example's positions."""
    sample = _target_sample(data["samples"], modality)
    ex = build_example(model, sample, media_loader=MediaLoader(real_registry))
    (span,) = ex.signal_spans
    signal_ids = model.tokens.signals[modality]
    assert span.modality == modality and span.end - span.start == len(signal_ids)
    assert ex.input_ids[0, span.start : span.end].tolist() == signal_ids
    assert ex.labels[0, span.start : span.end].tolist() == signal_ids
    other = build_example(model, _media_sample(data["samples"], modality), media_loader=MediaLoader(real_registry))
    batch = collate_batch([ex, other])
    longest = max(ex.length, other.length)
    assert batch.inputs_embeds.shape[:2] == (2, longest)
    assert torch.equal(batch.labels[0, : ex.length], ex.labels[0])
    assert batch.attention_mask[0].sum() == ex.length and batch.attention_mask[1].sum() == other.length


# ---------------------------------------------------------------------------------------------- trainer + checkpoint
def _trained_tensors(model) -> dict[str, torch.Tensor]:
    """What a checkpoint of any stage holds: projectors, LoRA tensors, the added tokens' rows."""
    out = {f"in.{n}": p.detach().clone() for n, p in model.input_projectors.named_parameters()}
    out.update({f"out.{n}": p.detach().clone() for n, p in model.output_projectors.named_parameters()})
    out.update({f"llm.{n}": p.detach().clone() for n, p in model.llm.named_parameters() if "lora_" in n})
    ids = torch.tensor(model.tokens.new_ids)
    out["embed_rows"] = model.llm.get_input_embeddings().weight[ids].detach().clone()
    out["head_rows"] = model.llm.get_output_embeddings().weight[ids].detach().clone()
    return out


def _decoder_tensors(model) -> dict[str, torch.Tensor]:
    return {f"{key}.{i}.{n}": p.detach().clone() for key, decoder in model.decoders.items()
            for i, module in enumerate(decoder.torch_modules()) for n, p in module.named_parameters()}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_training_step_changes_exactly_the_trainable_tensors_and_the_checkpoint_round_trips(
        real_registry, data, tmp_path, stage):
    """Two optimizer steps (one epoch: every modality's samples) of the real Trainer over the real tiny plugins,
    without weight decay: every trainable tensor changed, no other tensor of the model or of a loaded decoder did,
    and nothing frozen requires grad afterwards. The step's checkpoint loads into a fresh model bit for bit, and
    that model generates the same reply (text and image) as the trained one."""
    model = NextGPT.from_composition("tiny", registry=real_registry)
    model.load_decoders()
    config = TrainConfig(stage=stage, steps=2, batch_size=6, lr=1e-2, weight_decay=0.0, warmup_steps=1, seed=11,
                         checkpoint_every=None, save_final=True, output_dir=tmp_path / "run", progress=False)
    trainer = Trainer(model, data["samples"], data["targets"] if stage > 1 else None, config, MediaLoader(real_registry))
    trainable = {n for n, _ in trainer.trainable.named_parameters()}
    assert trainable == _expected_trainable(model, stage)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    decoders_before = _decoder_tensors(model)
    assert decoders_before  # the real pipelines are loaded and looked at

    trainer.train()
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    # the embedding / LM-head matrices stay frozen; the checkpoint written at the last step merged the trained
    # rows into them, so in them exactly those rows changed, to the trained values
    rows = trainer.trainable.rows
    matrices = {}
    for module, ids, param in ((model.llm.get_input_embeddings(), rows.embed_ids, rows.embed_rows),
                               (model.llm.get_output_embeddings(), rows.head_ids, rows.head_rows)):
        name = next(n for n, p in after.items() if p is module.weight)
        if param is not None:
            matrices.setdefault(name, {}).update(zip(ids.tolist(), param.detach()))
    for name, trained_rows in matrices.items():
        moved = (before[name] != after[name].detach()).any(dim=1).nonzero().flatten().tolist()
        assert set(moved) <= set(trained_rows), name
        assert all(torch.equal(after[name][i].detach(), row) for i, row in trained_rows.items()), name
    changed = {n for n in before if n not in matrices and not torch.equal(before[n], after[n].detach())}
    assert changed == trainable, (sorted(trainable - changed)[:5], sorted(changed - trainable)[:5])
    assert {n for n, p in after.items() if p.requires_grad} == trainable
    decoders_after = _decoder_tensors(model)
    assert [n for n in decoders_before if not torch.equal(decoders_before[n], decoders_after[n])] == []
    assert not [p for d in model.decoders.values() for m in d.torch_modules() for p in m.parameters() if p.requires_grad]

    trainer.trainable.merge()
    checkpoint = tmp_path / "run" / "step-2"
    assert (checkpoint / "manifest.json").is_file()
    loaded = NextGPT.from_composition("tiny", registry=real_registry, checkpoint=checkpoint)
    a, b = _trained_tensors(model), _trained_tensors(loaded)
    assert a.keys() == b.keys() and any(k.startswith("llm.") for k in a) == (stage == 3)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    conversation = Conversation().user("Draw a red circle.")
    want = dict(seed=4, want=["image"], max_new_tokens=12, decode_options=FAST)
    reply_a, reply_b = model.generate(conversation, **want), loaded.generate(conversation, **want)
    assert reply_a.token_ids == reply_b.token_ids
    assert [m.modality for m in reply_a.media] == [m.modality for m in reply_b.media] == ["image"]
    assert np.array_equal(np.asarray(reply_a.media[0].data), np.asarray(reply_b.media[0].data))


# ---------------------------------------------------------------------------------------------- generation
def test_generation_over_the_real_composition_returns_media_of_the_right_types(model, real_registry, tmp_path):
    """One request for all three outputs: a Media per wanted modality whose data is what the plugin's decoder makes
    (a PIL image, a Video, an Audio), each saved by its plugin's writer to its own format."""
    model.encoder_cache.clear()
    reply = model.generate(Conversation().user(Text("Show me a picture, a clip and a sound.")),
                           want=REAL, seed=1, max_new_tokens=48, decode_options=FAST)
    by_modality = {m.modality: m for m in reply.media}
    assert sorted(by_modality) == sorted(REAL)
    for key, kind in MEDIA_TYPES.items():
        assert isinstance(by_modality[key], Media) and isinstance(by_modality[key].data, kind), (key, type(by_modality[key].data))
    assert by_modality["image"].data.mode == "RGB"
    assert by_modality["video"].data.frames.dtype == np.uint8 and by_modality["video"].data.frames.ndim == 4
    assert by_modality["audio"].data.samples.dtype == np.float32 and by_modality["audio"].data.sample_rate == 16000
    suffixes = sorted(Path(p).suffix for p in reply.save(tmp_path, real_registry))
    assert suffixes == [".mp4", ".png", ".txt", ".wav"]
