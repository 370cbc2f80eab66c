"""Running the released NExT-GPT weights (``ChocoWu/nextgpt_7b_tiva_v0``, the legacy v0 code's only release).

- :mod:`.paths`: the local weight paths the built-in ``nextgpt-v0`` composition reads (environment variables or
  the paths file) and the bundled full-size configs used to build it on the meta device without weights;
- :mod:`.keymap`: official key names -> nextgpt checkpoint parts, one to one;
- :mod:`.layout`: what a composition's trained parts look like (names and shapes), built on the meta device;
- :mod:`.convert`: ``nextgpt convert official``: the delta file -> a nextgpt checkpoint, loaded strictly;
- :mod:`.check`: ``nextgpt check-weights``: which local weights are present, missing or mis-shaped;
- :mod:`.params`: ``nextgpt params``: parameters per component, total and trainable, on the meta device.

Importing this package does not import torch. See docs/official-weights.md.
"""
