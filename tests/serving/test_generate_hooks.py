"""The two ``NextGPT.generate`` hooks the server relies on: ``on_media`` (each media part as its decoder returns)
and ``should_stop`` checked before each decoder run (a timed-out request skips the decoders not yet started)."""

from __future__ import annotations

import numpy as np


def test_on_media_sees_each_part_in_order(tiny_model):
    seen = []
    reply = tiny_model.generate("Show me.", want=["fake_image", "fake_audio"], seed=4, on_media=seen.append)
    assert [m.modality for m in seen] == [m.modality for m in reply.media] and len(seen) == 2
    assert all(a is b for a, b in zip(seen, reply.media))
    plain = tiny_model.generate("Show me.", want=["fake_image", "fake_audio"], seed=4)
    assert plain.token_ids == reply.token_ids and not plain.cancelled
    assert all(np.array_equal(a.data, b.data) for a, b in zip(plain.media, reply.media))


def test_should_stop_skips_decoders_not_yet_started(tiny_model):
    decoded = []
    stop = {"now": False}

    def first_then_stop(media):
        decoded.append(media)
        stop["now"] = True  # e.g. the request timed out while the first decoder ran

    reply = tiny_model.generate("Show me.", want=["fake_image", "fake_audio"], seed=4, on_media=first_then_stop,
                                should_stop=lambda: stop["now"])
    assert len(decoded) == 1 and len(reply.media) == 1
    assert reply.cancelled and any("cancelled" in n for n in reply.notices)
