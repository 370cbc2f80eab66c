"""The plugin tutorial (docs/plugins.md) must work exactly as written.

Every ```` ```LANG file=PATH ```` block of the tutorial is written into a temporary folder, the package is installed
from there (``pip install --no-deps --no-build-isolation --target``), and then, in child processes that see only
that plugin (``NEXTGPT_LOAD_PLUGINS=tabular``):

- ``python -m nextgpt_core.cli plugins --json`` lists the ``tabular`` modality and its components with their licence,
  and the table the tutorial shows matches what ``nextgpt plugins`` prints;
- the tutorial's own test file passes under pytest;
- ``NextGPT.from_composition("tiny")`` picks the plugin up through its ``tiny`` preset and a request with
  ``want=["tabular"]`` returns a tabular media part, which the plugin's writer saves and reads back.

Editing the tutorial's code, or the core in a way that breaks it, fails this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "plugins.md"
PACKAGE = "nextgpt-tabular"

#: The files the tutorial must show, relative to the folder it starts from.
EXPECTED_FILES = {
    f"{PACKAGE}/pyproject.toml",
    f"{PACKAGE}/README.md",
    f"{PACKAGE}/nextgpt_tabular/__init__.py",
    f"{PACKAGE}/nextgpt_tabular/plugin.py",
    f"{PACKAGE}/nextgpt_tabular/media.py",
    f"{PACKAGE}/nextgpt_tabular/encoder.py",
    f"{PACKAGE}/nextgpt_tabular/decoder.py",
    f"{PACKAGE}/nextgpt_tabular/toy.py",
    f"{PACKAGE}/tests/test_tabular.py",
}
#: The tutorial's test file: 6 encoder + 7 decoder + 3 media-io conformance tests and its own 3.
MIN_TUTORIAL_TESTS = 19

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_TIMEOUT = 240


@dataclass(frozen=True)
class Block:
    """One fenced block of the tutorial: its info-string words and its text."""

    words: tuple[str, ...]
    body: str

    def attr(self, name: str) -> str | None:
        """The value of ``name=VALUE`` in the info string, if present."""
        for word in self.words:
            if word.startswith(f"{name}="):
                return word.split("=", 1)[1]
        return None


def parse_blocks(text: str) -> list[Block]:
    """Every fenced code block of a markdown text, in order."""
    return [Block(tuple(m["info"].split()), m["body"]) for m in _FENCE.finditer(text)]


@dataclass(frozen=True)
class Tutorial:
    root: Path
    site: Path
    env: dict[str, str]
    files: dict[str, str]
    blocks: list[Block]

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd or self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
        )


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> Tutorial:
    blocks = parse_blocks(DOC.read_text())
    files: dict[str, str] = {}
    for block in blocks:
        name = block.attr("file")
        if name is None:
            continue
        assert name not in files, f"docs/plugins.md shows {name} twice"
        assert not Path(name).is_absolute() and ".." not in Path(name).parts, f"bad file= path {name!r}"
        files[name] = block.body
    root = tmp_path_factory.mktemp("tutorial")
    for name, body in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    site = root / "site"
    install = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
            "--no-deps", "--no-build-isolation", "--target", str(site), str(root / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
    )
    assert install.returncode == 0, f"pip could not install the tutorial's package:\n{install.stdout}\n{install.stderr}"
    outer = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), *outer]),
        "NEXTGPT_LOAD_PLUGINS": "tabular",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return Tutorial(root, site, env, files, blocks)


def test_the_tutorial_shows_every_file_and_step(tutorial: Tutorial) -> None:
    assert set(tutorial.files) == EXPECTED_FILES
    pyproject = tutorial.files[f"{PACKAGE}/pyproject.toml"]
    assert '[project.entry-points.nextgpt]\ntabular = "nextgpt_tabular.plugin"' in pyproject
    plugin = tutorial.files[f"{PACKAGE}/nextgpt_tabular/plugin.py"]
    assert not re.search(r"^\s*(import|from)\s+torch\b", plugin, re.MULTILINE), "plugin.py must not import torch"
    steps = "\n".join(b.body for b in tutorial.blocks if b.words[:2] == ("bash", "run"))
    for command in (f"pip install -e {PACKAGE}", "nextgpt plugins", "NEXTGPT_LOAD_PLUGINS=tabular", "pytest"):
        assert command in steps, f"no ```bash run step of docs/plugins.md runs {command!r}"
    assert (tutorial.site / "nextgpt_tabular" / "plugin.py").is_file()


def test_nextgpt_plugins_lists_the_plugin_with_its_licence(tutorial: Tutorial) -> None:
    result = tutorial.run("-m", "nextgpt_core.cli", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["problems"] == []
    assert [m["key"] for m in listing["modalities"]] == ["tabular"]
    (tabular,) = listing["modalities"]
    assert tabular["plugin"] == "tabular (nextgpt-tabular 0.1.0)"
    assert tabular["license"] == "Apache-2.0"
    assert tabular["inputs"] == ".csv" and tabular["outputs"] == "2 x [TAB{i}]"
    ours = {c["id"]: c for c in listing["components"] if c["plugin"].startswith("tabular ")}
    assert set(ours) == {"tabular/encoder", "tabular/decoder"}
    assert ours["tabular/encoder"]["role"] == "encoder" and ours["tabular/decoder"]["role"] == "decoder"
    assert all(c["license"] == "Apache-2.0" and c["modality"] == "tabular" for c in ours.values())
    assert ours["tabular/encoder"]["target"] == "nextgpt_tabular.encoder:TabularEncoder"
    assert ours["tabular/decoder"]["target"] == "nextgpt_tabular.decoder:TabularDecoder"

    # the table the tutorial shows is what `nextgpt plugins` prints for the plugin's rows
    shown = [b for b in tutorial.blocks if b.attr("output") == "nextgpt-plugins"]
    assert len(shown) == 1, "docs/plugins.md must show the `nextgpt plugins` table once (```text output=nextgpt-plugins)"
    table = tutorial.run("-m", "nextgpt_core.cli", "plugins")
    assert table.returncode == 0, table.stderr
    printed = {line.rstrip() for line in table.stdout.splitlines()}
    rows = [line.rstrip() for line in shown[0].body.splitlines() if "tabular" in line]
    assert len(rows) == 3, rows
    for row in rows:
        assert row in printed, f"the tutorial shows {row!r}; `nextgpt plugins` prints:\n{table.stdout}"


def test_the_tutorial_test_file_passes(tutorial: Tutorial) -> None:
    package = tutorial.root / PACKAGE
    result = tutorial.run(
        "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
        "--rootdir", str(package), cwd=package,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"the tutorial's tests failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= MIN_TUTORIAL_TESTS, summary
    assert not re.search(r"\b(failed|error|errors|skipped|xfailed|deselected)\b", summary), summary


_REQUEST = """
import json
from pathlib import Path

from nextgpt_core import Conversation, Media, NextGPT
from nextgpt_tabular.media import TabularIO

model = NextGPT.from_composition("tiny")
io = TabularIO()
row = io.write(io.example(), Path("row.csv"))
conversation = Conversation.from_prompt("What could come next?", [Media.from_path(row)])
reply = model.generate(conversation, want=["tabular"], seed=0)
again = model.generate(conversation, want=["tabular"], seed=0)
paths = reply.save("reply")
tabular = [part for part in reply.media if part.modality == "tabular"]
back = io.read(Path("reply") / "tabular_0.csv")
print(json.dumps({
    "inputs": model.input_modalities(),
    "outputs": model.output_modalities(),
    "media": [part.modality for part in reply.media],
    "shape": list(tabular[0].data.shape),
    "dtype": str(tabular[0].data.dtype),
    "reproducible": bool((again.media[0].data == tabular[0].data).all()),
    "roundtrip": bool((back == tabular[0].data).all()),
    "files": [p.name for p in paths],
    "cache_hits": model.encoder_cache.hits,
}))
"""


def test_tiny_composition_generates_tabular(tutorial: Tutorial) -> None:
    script = tutorial.root / "request.py"
    script.write_text(_REQUEST)
    result = tutorial.run(str(script))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["inputs"] == ["tabular"] and report["outputs"] == ["tabular"]
    assert report["media"] == ["tabular"]
    assert report["shape"] == [8] and report["dtype"] == "float32"
    assert report["reproducible"], "the same seed must give the same row"
    assert report["roundtrip"], "the saved .csv must read back as the generated row"
    assert report["files"] == ["tabular_0.csv", "reply.txt"]
    assert report["cache_hits"] >= 1, "the second request must reuse the cached encoding of the input row"


_TOY = """
import json

import numpy as np

from nextgpt_core.toy.world import ToyWorld

world = ToyWorld.installed()
part = world.parts["tabular"]
rng = np.random.default_rng(0)
combos = world.combinations("tabular")
right = sum(part.read_back(part.render(c, rng)) == c for c in combos for _ in range(50))
print(json.dumps({"parts": list(world.parts), "read_back": right / (50 * len(combos)),
                  "held_out": world.held_out_fraction("tabular"), "parse": part.parse("It shows " + part.caption(combos[0]) + ".") == combos[0]}))
"""


def test_the_tutorial_part_joins_the_toy_world(tutorial: Tutorial, tmp_path: Path) -> None:
    """The toy-world part of section 10: found through its hook, read back on its own renderings, and the mini
    recipe builds a (tables-only, input-only) world from it with no core edit."""
    script = tutorial.root / "toy_check.py"
    script.write_text(_TOY)
    result = tutorial.run(str(script))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["parts"] == ["tabular"] and report["read_back"] >= 0.99 and report["held_out"] >= 0.1 and report["parse"]
    out = tmp_path / "world"
    built = tutorial.run("-m", "nextgpt_core.cli", "toy", "build", "--scale", "mini", "--modality", "tabular", "--out", str(out))
    assert built.returncode == 0, built.stderr[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["modalities"] == ["tabular"] and "stage1" in manifest["phases"] and "stage2" not in manifest["phases"]
    assert "[modalities.tabular]" in (out / "toy.toml").read_text()
