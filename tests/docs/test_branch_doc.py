"""docs/plugins.md section 11 shows the thermal plugin's branch file as it is: the ```python branch=PATH block must
be that file, byte for byte, so the tutorial cannot drift from the code that runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_branch_file_shown_is_the_plugins_file() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python branch=(\S+)\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)
    assert [path for path, _ in blocks] == ["plugins/nextgpt-thermal/nextgpt_thermal/branch.py"]
    for path, body in blocks:
        assert body == (ROOT / path).read_text(encoding="utf-8"), f"docs/plugins.md shows an outdated {path}"
