"""Hook implementations of the audio plugin (names only; no torch import). Filled in as the parts land."""
