"""The torch-free registry: discovery through entry points, clear errors, the allow-list."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from nextgpt_registry import (
    ComponentSpec,
    DuplicateKeyError,
    MediaTypeError,
    ModalitySpec,
    PluginHookError,
    Registry,
    UnknownKeyError,
    hookimpl,
)


def _modality(key: str, **kw) -> ModalitySpec:
    return ModalitySpec(key=key, license="MIT", media_io="x.y:Z", **kw)


class _Plugin:
    def __init__(self, name: str, *keys: str, components: tuple[str, ...] = ()) -> None:
        self.__name__ = name
        self.keys, self.components = keys, components

    @hookimpl
    def nextgpt_register_modalities(self, register):
        for key in self.keys:
            register(_modality(key, extensions=(f".{key}",)))

    @hookimpl
    def nextgpt_register_components(self, register):
        for cid in self.components:
            register(ComponentSpec(id=cid, role="encoder", target="x.y:Z", license="MIT"))


def test_fake_plugin_found_through_its_entry_point():
    reg = Registry.load(allow=["fake"])
    assert {"fake_image", "fake_audio", "fake_depth"} <= set(reg.modalities)
    provider = reg.provider("modality", "fake_image")
    assert provider.plugin == "fake" and provider.distribution == "nextgpt-fake" and provider.version == "0.1.0"
    assert reg.component("fake-decoder").license == "Apache-2.0"


def test_allow_list_from_environment(monkeypatch):
    monkeypatch.setenv("NEXTGPT_LOAD_PLUGINS", "")
    assert Registry.load().modalities == {}
    monkeypatch.setenv("NEXTGPT_LOAD_PLUGINS", "nextgpt-fake")  # a distribution name works too
    assert "fake_image" in Registry.load().modalities
    monkeypatch.setenv("NEXTGPT_LOAD_PLUGINS", "fake, not-installed")
    reg = Registry.load()
    assert "fake_image" in reg.modalities and reg.not_found == ["not-installed"]


def test_duplicate_key_names_both_providers():
    with pytest.raises(DuplicateKeyError, match=r"'image'.*first.*second"):
        Registry.from_plugins([_Plugin("first", "image"), _Plugin("second", "image")])
    with pytest.raises(DuplicateKeyError, match=r"component 'enc'.*first.*second"):
        Registry.from_plugins([_Plugin("first", components=("enc",)), _Plugin("second", components=("enc",))])


def test_unknown_key_lists_known_keys():
    reg = Registry.from_plugins([_Plugin("p", "image", "audio", components=("enc",))])
    with pytest.raises(UnknownKeyError, match=r"unknown modality 'imgae'; registered: audio, image"):
        reg.modality("imgae")
    with pytest.raises(UnknownKeyError, match=r"unknown decoder 'enc'; registered: \(none\)"):
        reg.component("enc", role="decoder")


def test_misspelled_hook_fails_loudly():
    class Typo:
        __name__ = "typo-plugin"

        @hookimpl
        def nextgpt_register_modality(self, register):  # missing "ies"
            pass

    with pytest.raises(PluginHookError, match=r"typo-plugin.*'nextgpt_register_modality'.*known hooks"):
        Registry.from_plugins([Typo()])


def test_hook_with_wrong_argument_fails_loudly():
    class BadArgs:
        __name__ = "bad-args"

        @hookimpl
        def nextgpt_register_modalities(self, registr):
            pass

    with pytest.raises(PluginHookError, match="bad-args"):
        Registry.from_plugins([BadArgs()])


def test_raising_hook_is_reported_and_others_load():
    class Raises:
        __name__ = "raises"

        @hookimpl
        def nextgpt_register_modalities(self, register):
            raise RuntimeError("boom\nsecond line")

    reg = Registry.from_plugins([Raises(), _Plugin("good", "image")])
    assert "image" in reg.modalities
    assert [f.plugin for f in reg.failures] == ["raises"]
    assert "boom second line" in reg.failures[0].describe() and "\n" not in reg.failures[0].describe()


def test_plugin_whose_import_raises_is_reported_by_name(tmp_path, monkeypatch):
    # a real (hand-built) distribution whose entry point module raises on import
    (tmp_path / "broken_mod.py").write_text("raise ImportError('needs a missing library')\n")
    dist = tmp_path / "nextgpt_broken-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: nextgpt-broken\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[nextgpt]\nbroken = broken_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry.load(allow=["fake", "broken"])
    assert "fake_image" in reg.modalities
    assert len(reg.failures) == 1
    line = reg.failures[0].describe()
    assert "'broken'" in line and "nextgpt-broken" in line and "needs a missing library" in line


def test_modality_for_path():
    reg = Registry.from_plugins([_Plugin("p", "image", "audio")])
    assert reg.modality_for_path("/a/B.IMAGE") == "image"
    with pytest.raises(MediaTypeError, match=r"unsupported media type '\.txt'.*\.audio, \.image"):
        reg.modality_for_path("x.txt")


def test_depth_like_modality_must_be_named():
    reg = Registry.load(allow=["fake"])
    assert reg.modality_for_path("d.fimg") == "fake_image"  # fake_depth also reads .fimg but does not claim it

    class Second:
        __name__ = "second"

        @hookimpl
        def nextgpt_register_modalities(self, register):
            register(_modality("other", extensions=(".x",)))
            register(_modality("another", extensions=(".x",)))

    with pytest.raises(MediaTypeError, match=r"several modalities \(other, another\); name one, e\.g\. other="):
        Registry.from_plugins([Second()]).modality_for_path("f.x")


def test_specs_validate():
    with pytest.raises(ValueError, match="license"):
        ComponentSpec(id="a", role="encoder", target="m:C", license=" ")
    with pytest.raises(ValueError, match="module:Class"):
        ComponentSpec(id="a", role="encoder", target="not a target", license="MIT")
    with pytest.raises(ValueError, match=r"\{i\}"):
        _modality("x", signal_token_format="[X]", num_signal_tokens=2)
    with pytest.raises(ValueError, match="extra"):
        ModalitySpec(key="x", license="MIT", media_io="m:C", colour="red")
    assert _modality("x", signal_token_format="[X{i}]", num_signal_tokens=3).signal_tokens() == ["[X0]", "[X1]", "[X2]"]


def test_a_plugin_cannot_take_the_shared_projector_key():
    """`shared` names the input projector every modality shares; a modality of that name would take it over."""
    with pytest.raises(ValueError, match=r"'shared' is reserved.*input projector"):
        _modality("shared")


def test_import_registry_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys, nextgpt_registry
        reg = nextgpt_registry.Registry.load(["nextgpt_core.builtins"])
        assert reg.components, "builtins did not register"
        bad = [m for m in ("torch", "transformers", "numpy") if m in sys.modules]
        assert not bad, bad
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
