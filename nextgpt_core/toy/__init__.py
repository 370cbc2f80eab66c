"""The toy world: a synthetic, compositional world in which every part of a NExT-GPT model is trained here, from
scratch, on 2 CPU cores, with the same classes and the same ``nextgpt train`` commands as the real system.

- :mod:`.contract`: :class:`ToyModality`, what a modality plugin implements to join (hook
  ``nextgpt_register_toy_world``);
- :mod:`.world`: :class:`ToyWorld`, the installed parts, their held-out splits and renderings;
- :mod:`.shapes`: the visual vocabulary (shapes, colours) the picture-like plugins draw and measure with;
- :mod:`.dialogues`, :mod:`.data`: conversations, and the training files in the official formats;
- :mod:`.encoders`, :mod:`.diffusion`, :mod:`.language`: training the frozen parts (ImageBind branches,
  diffusion decoders, the tiny Llama);
- :mod:`.recipe`: ``nextgpt toy build`` / ``make toy-world``, every phase in order.

Importing this package imports neither torch nor numpy.
"""

from typing import Any

__all__ = ["Attributes", "DecoderTraining", "EncoderRecipe", "ToyModality"]


def __getattr__(name: str) -> Any:  # the contract loads on first use (numpy), so `nextgpt --help` stays light
    if name in __all__:
        from . import contract

        return getattr(contract, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
