"""Hook implementations of the depth plugin (names only; no torch import). Filled in as the parts land."""
