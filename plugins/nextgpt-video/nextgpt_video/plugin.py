"""Hook implementations of the video plugin (names only; no torch import). Filled in as the parts land."""
