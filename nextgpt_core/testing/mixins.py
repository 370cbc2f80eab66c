"""Conformance tests every plugin reuses: shapes, save/load round-trip, dtype, the conditioning contract.

A plugin's test module subclasses a mixin, names the class under test and gives a tiny config and dummy inputs;
pytest collects the inherited ``test_*`` methods::

    class TestMyEncoder(EncoderTesterMixin):
        component_class = MyEncoder
        def get_init_dict(self): return {"width": 8}
        def get_dummy_media(self): return [make_media(0), make_media(1)]

Every assertion here checks behaviour that breaks when the contract breaks (nothing is skipped silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from ..errors import ConditioningError, ConfigError, MediaError
from ..interfaces import Component, Decoder, Encoder, InputProjector, MediaIO, OutputProjector

__all__ = [
    "DecoderTesterMixin",
    "EncoderTesterMixin",
    "InputProjectorTesterMixin",
    "MediaIOTesterMixin",
    "OutputProjectorTesterMixin",
]


def _assert_same(a: Any, b: Any) -> None:
    from ..interfaces import DecodedItem

    if isinstance(a, DecodedItem) or isinstance(b, DecodedItem):
        assert isinstance(a, DecodedItem) and isinstance(b, DecodedItem) and a.details == b.details
        a, b = a.data, b.data
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    else:
        import numpy as np

        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class _ComponentTester:
    component_class: ClassVar[type[Component]]

    def get_init_dict(self) -> dict[str, Any]:
        """Options of a tiny instance."""
        return {}

    def make(self, seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return self.component_class.from_options(self.get_init_dict())

    def test_config_rejects_unknown_key(self) -> None:
        with pytest.raises(ConfigError, match="no_such_option"):
            self.component_class.from_options({**self.get_init_dict(), "no_such_option": 1})

    def run(self, component: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_save_load_roundtrip(self, tmp_path: Path) -> None:
        component = self.make(seed=0)
        component.save_pretrained(tmp_path / "c")
        assert (tmp_path / "c" / "config.json").is_file()
        loaded = type(component).from_pretrained(tmp_path / "c")
        assert type(loaded) is type(component) and loaded.config == component.config
        other = self.make(seed=1)  # a differently initialised twin: the round-trip must not be a coincidence
        out, again, different = self.run(component), self.run(loaded), self.run(other)
        for a, b in zip(out if isinstance(out, list) else [out], again if isinstance(again, list) else [again]):
            _assert_same(a, b)
        if isinstance(component, torch.nn.Module) and sum(p.numel() for p in component.parameters()):
            assert not all(
                torch.equal(torch.as_tensor(a), torch.as_tensor(b))
                for a, b in zip(out if isinstance(out, list) else [out], different if isinstance(different, list) else [different])
            ), "a different init gave identical outputs: the round-trip test could not fail"


class EncoderTesterMixin(_ComponentTester):
    """Encoder contract: ``preprocess`` one item, ``forward`` a batch to ``(B, n_tokens, output_dim)``."""

    component_class: ClassVar[type[Encoder]]

    def get_dummy_media(self) -> list[Any]:
        """At least two media items of the modality."""
        raise NotImplementedError

    def run(self, encoder: Encoder) -> torch.Tensor:
        with torch.no_grad():
            return encoder(torch.stack([encoder.preprocess(m) for m in self.get_dummy_media()]))

    def test_forward_shape(self) -> None:
        encoder = self.make()
        out = self.run(encoder)
        media = self.get_dummy_media()
        assert out.dim() == 3 and out.shape[0] == len(media)
        assert out.shape[-1] == encoder.output_dim == type(encoder).output_dim_of(encoder.config)

    def test_preprocess_is_per_item_and_cpu(self) -> None:
        encoder = self.make()
        shapes = {tuple(encoder.preprocess(m).shape) for m in self.get_dummy_media()}
        assert len(shapes) == 1, f"preprocess must give one shape per item, got {shapes}"
        assert encoder.preprocess(self.get_dummy_media()[0]).device.type == "cpu"

    def test_built_frozen(self) -> None:
        encoder = self.make()
        assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
        again = type(encoder).from_options(self.get_init_dict())
        with torch.no_grad():  # eval mode: no dropout / drop-path, so two calls agree
            x = torch.stack([encoder.preprocess(m) for m in self.get_dummy_media()])
            torch.testing.assert_close(again(x), again(x), rtol=0, atol=0)

    def test_dtype_follows_module(self) -> None:
        encoder = self.make().to(torch.float64)
        x = torch.stack([encoder.preprocess(m) for m in self.get_dummy_media()])
        x = x.to(torch.float64) if x.is_floating_point() else x
        assert encoder(x).dtype == torch.float64


class InputProjectorTesterMixin(_ComponentTester):
    """Input projector contract: ``(B, n, in_dim)`` -> ``(B, n_llm_tokens, out_dim)``."""

    component_class: ClassVar[type[InputProjector]]
    batch: ClassVar[int] = 2
    n_tokens: ClassVar[int] = 3

    def run(self, projector: InputProjector) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return projector(torch.randn(self.batch, self.n_tokens, projector.config.in_dim, generator=g))  # type: ignore[attr-defined]

    def test_forward_shape(self) -> None:
        projector = self.make()
        out = self.run(projector)
        assert out.shape[0] == self.batch and out.shape[-1] == projector.config.out_dim  # type: ignore[attr-defined]

    def test_trainable_and_dtype(self) -> None:
        projector = self.make().to(torch.float64)
        x = torch.randn(1, self.n_tokens, projector.config.in_dim, dtype=torch.float64)  # type: ignore[attr-defined]
        y = projector(x)
        assert y.dtype == torch.float64
        y.sum().backward()
        assert all(p.grad is not None for p in projector.parameters() if p.requires_grad)


class OutputProjectorTesterMixin(_ComponentTester):
    """Output projector contract: ``(B, N, in_dim)`` x2 -> ``(B, out_len, out_dim)``, the declared shape."""

    component_class: ClassVar[type[OutputProjector]]
    batch: ClassVar[int] = 2

    def _inputs(self, projector: OutputProjector, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        c = projector.config
        shape = (self.batch, c.num_signal_tokens, c.in_dim)  # type: ignore[attr-defined]
        return torch.randn(*shape, generator=g).to(dtype), torch.randn(*shape, generator=g).to(dtype)

    def run(self, projector: OutputProjector) -> torch.Tensor:
        with torch.no_grad():
            return projector(*self._inputs(projector))

    def test_forward_shape(self) -> None:
        projector = self.make()
        assert tuple(self.run(projector).shape) == (self.batch, *projector.output_shape)

    def test_trainable_and_dtype(self) -> None:
        projector = self.make().to(torch.float64)
        y = projector(*self._inputs(projector, torch.float64))
        assert y.dtype == torch.float64
        y.sum().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())


class DecoderTesterMixin(_ComponentTester):
    """Decoder contract: named conditioning inputs, cached encoding of ``""``, shape checks, seeded output."""

    component_class: ClassVar[type[Decoder]]
    batch: ClassVar[int] = 2

    def get_decode_options(self) -> dict[str, Any]:
        """Per-request options for a fast tiny run."""
        return {}

    def conditioning(self, decoder: Decoder, batch: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {c.name: torch.randn(batch or self.batch, c.length, c.dim, generator=g) for c in decoder.conditioning_inputs}

    def run(self, decoder: Decoder) -> list[Any]:
        return decoder(self.conditioning(decoder), generator=torch.Generator().manual_seed(0), **self.get_decode_options())

    def test_declares_conditioning_inputs(self) -> None:
        decoder = self.make()
        inputs = decoder.conditioning_inputs
        assert inputs and len({c.name for c in inputs}) == len(inputs)
        assert inputs == type(decoder).conditioning_inputs_of(decoder.config)

    def test_lazy_load_and_cached_unconditional(self) -> None:
        decoder = self.make()
        assert not decoder.is_loaded
        first = decoder.unconditional()
        assert decoder.is_loaded
        for c in decoder.conditioning_inputs:
            assert tuple(first[c.name].shape) == (1, c.length, c.dim)
        again = decoder.unconditional()
        assert all(first[k] is again[k] for k in first), "unconditional conditioning must be computed once and cached"

    def test_loaded_decoder_is_frozen_and_lists_its_modules(self) -> None:
        """After ``load()`` every module of ``torch_modules()`` has no trainable parameter and is in eval mode, and
        ``freeze()`` restores that after someone switched them on (what every training stage relies on)."""
        decoder = self.make().load()
        modules = decoder.torch_modules()
        params = [p for m in modules for p in m.parameters()]
        assert not [p for p in params if p.requires_grad]
        assert not [m for top in modules for m in top.modules() if m.training]
        for m in modules:
            m.requires_grad_(True).train()
        assert decoder.freeze() is decoder
        assert not [p for p in params if p.requires_grad]
        assert not [m for top in modules for m in top.modules() if m.training]

    def test_generates_one_item_per_row_and_is_seeded(self) -> None:
        """Same seed, same media; another seed, other media; a decoder with ``seeded = False`` (retrieval) must
        instead give the same media for any seed, and other media for another conditioning."""
        from ..interfaces import unwrap_decoded

        decoder = self.make()
        out = self.run(decoder)
        assert len(out) == self.batch
        _assert_same(out[0], self.run(decoder)[0])
        other = decoder(self.conditioning(decoder), generator=torch.Generator().manual_seed(1), **self.get_decode_options())
        import numpy as np

        if type(decoder).seeded:
            assert not np.array_equal(np.asarray(unwrap_decoded(out[0])[0]), np.asarray(unwrap_decoded(other[0])[0])), (
                "the generator seed must matter")
            return
        _assert_same(out[0], other[0])
        first = [np.asarray(unwrap_decoded(a)[0]) for a in out]
        moved = [  # a few other conditionings: a decoder that ignores its conditioning returns the same media for all
            np.asarray(unwrap_decoded(b)[0])
            for seed in range(1, 6)
            for b in decoder(self.conditioning(decoder, seed=seed), generator=torch.Generator().manual_seed(0), **self.get_decode_options())
        ]
        assert any(not np.array_equal(a, b) for a in first for b in moved), "other conditionings must give other media"

    def test_encode_text_matches_declared_inputs_and_unconditional(self) -> None:
        """``encode_text`` (the stage-2 L2 targets): one ``(B, length, dim)`` CPU tensor per declared input,
        ``encode_text([""])`` is the cached unconditional conditioning, different captions encode differently.
        A decoder that keeps the base method (it cannot give stage-2 targets) must say so with its one-line error."""
        decoder = self.make()
        if type(decoder).encode_text is Decoder.encode_text:
            with pytest.raises(NotImplementedError, match="cannot encode text targets"):
                decoder.encode_text(["a caption"])
            return
        captions = ["a red bird sings on a branch", "waves crash against the rocky shore"]
        out = decoder.encode_text(captions)
        assert set(out) == {c.name for c in decoder.conditioning_inputs}
        for c in decoder.conditioning_inputs:
            t = out[c.name]
            assert tuple(t.shape) == (2, c.length, c.dim), c.name
            assert t.is_floating_point() and t.device.type == "cpu" and not t.requires_grad, c.name
        empty = decoder.encode_text([""])
        uncond = decoder.unconditional()
        for c in decoder.conditioning_inputs:
            torch.testing.assert_close(
                empty[c.name].float(), uncond[c.name].detach().cpu().float(), rtol=1e-5, atol=1e-5, msg=c.name
            )
        assert any(not torch.allclose(out[c.name][0], out[c.name][1]) for c in decoder.conditioning_inputs), (
            "two different captions must encode differently"
        )
        # each row is its caption's own encoding, whatever else is in the batch
        alone = decoder.encode_text(captions[1:])
        for c in decoder.conditioning_inputs:
            torch.testing.assert_close(alone[c.name][0], out[c.name][1], rtol=1e-4, atol=1e-5, msg=c.name)

    def test_rejects_wrong_conditioning(self) -> None:
        decoder = self.make()
        good = self.conditioning(decoder)
        name, tensor = next(iter(good.items()))
        with pytest.raises(ConditioningError, match=name):
            decoder({**good, name: tensor[:, :, :-1]}, **self.get_decode_options())
        with pytest.raises(ConditioningError, match="missing"):
            decoder({k: v for k, v in good.items() if k != name}, **self.get_decode_options())
        with pytest.raises(ConditioningError, match="unknown"):
            decoder({**good, "not_an_input": tensor}, **self.get_decode_options())

    def test_rejects_unknown_option(self) -> None:
        decoder = self.make()
        with pytest.raises(ConfigError, match="no_such_option"):
            decoder(self.conditioning(decoder), no_such_option=1)


class MediaIOTesterMixin:
    """MediaIO contract: write then read gives the same media; a corrupt or missing file is a ``MediaError``."""

    io_class: ClassVar[type[MediaIO]]
    suffix: ClassVar[str]

    def get_dummy_media(self) -> Any:
        raise NotImplementedError

    def assert_media_equal(self, a: Any, b: Any) -> None:
        _assert_same(a, b)

    def test_roundtrip(self, tmp_path: Path) -> None:
        io = self.io_class()
        media = self.get_dummy_media()
        path = io.write(media, tmp_path / f"x{self.suffix}")
        self.assert_media_equal(io.read(path), media)
        assert io.to_bytes(media) == io.to_bytes(io.read(path))

    def test_corrupt_file(self, tmp_path: Path) -> None:
        io = self.io_class()
        path = io.write(self.get_dummy_media(), tmp_path / f"x{self.suffix}")
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])
        with pytest.raises(MediaError, match=path.name):
            io.read(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(MediaError, match="nope"):
            self.io_class().read(tmp_path / f"nope{self.suffix}")
