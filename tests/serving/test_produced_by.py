"""The HTTP API's media parts say which decoder made them (generation or retrieval), with the decoder's details but
never the server's own file paths; a reply carrying them can be sent back as returned."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nextgpt_core.conversation import Media
from nextgpt_core.serving.config import ServeConfig
from nextgpt_core.serving.dialect import media_part
from nextgpt_core.serving.files import FileStore
from nextgpt_core.serving.media import MediaGateway
from nextgpt_core.serving.schemas import ChatMessage


def test_media_part_carries_produced_by_and_details_without_paths(image_model, tmp_path) -> None:
    gateway = MediaGateway(image_model, FileStore(tmp_path / "media"), ServeConfig(media_dir=tmp_path / "media"))
    base = "http://127.0.0.1:8000"

    def part(media: Media, source: Media | None) -> dict:
        return media_part(gateway.store, gateway.store_output(media), False, base, source)["image_url"]

    picture = Image.fromarray(np.full((8, 8, 3), 120, np.uint8))
    found = Media(modality="image", data=picture, produced_by="image/retrieval",
                  details={"gallery_item": "cats/01.png", "file": "/srv/gallery/cats/01.png", "score": 0.83})
    retrieved = part(found, found)
    assert retrieved["produced_by"] == "image/retrieval"
    assert retrieved["details"] == {"gallery_item": "cats/01.png", "score": 0.83}
    drawn = Media(modality="image", data=picture, produced_by="image/sd-1.5")
    plain = part(drawn, drawn)
    assert plain["produced_by"] == "image/sd-1.5" and "details" not in plain
    assert "produced_by" not in part(drawn, None)
    # a reply sent back as returned (with these nextgpt fields) is a valid assistant message
    ChatMessage.model_validate({"role": "assistant", "content": [{"type": "image_url", "image_url": retrieved}]})
