"""Hook implementations of the image plugin (names only; no torch import). Filled in as the parts land."""
