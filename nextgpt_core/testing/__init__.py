"""The plugin author kit: conformance mixins every plugin's tests reuse (see docs/plugins.md).

The packaged fake plugin under ``tests/fake_plugin`` (distribution ``nextgpt-fake``) is the worked example: its
three modalities, encoder, two-input decoder and media reader pass every mixin here.
"""

from .mixins import (
    DecoderTesterMixin,
    EncoderTesterMixin,
    InputProjectorTesterMixin,
    MediaIOTesterMixin,
    OutputProjectorTesterMixin,
)

__all__ = [
    "DecoderTesterMixin",
    "EncoderTesterMixin",
    "InputProjectorTesterMixin",
    "MediaIOTesterMixin",
    "OutputProjectorTesterMixin",
]
