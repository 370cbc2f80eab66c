"""The HTTP API's media parts say which decoder made them (generation or retrieval), with the decoder's details but
never the server's own file paths."""

from __future__ import annotations

import numpy as np
from PIL import Image

from nextgpt_core.conversation import Media
from nextgpt_core.serving.config import ServeConfig
from nextgpt_core.serving.files import FileStore
from nextgpt_core.serving.media import MediaGateway


def test_media_part_carries_produced_by_and_details_without_paths(image_model, tmp_path) -> None:
    gateway = MediaGateway(image_model, FileStore(tmp_path / "media"), ServeConfig(media_dir=tmp_path / "media"))
    picture = Image.fromarray(np.full((8, 8, 3), 120, np.uint8))
    found = Media(modality="image", data=picture, produced_by="image/retrieval",
                  details={"gallery_item": "cats/01.png", "file": "/srv/gallery/cats/01.png", "score": 0.83})
    part = gateway.part_json(gateway.store_output(found), False, found)["media"]
    assert part["produced_by"] == "image/retrieval"
    assert part["details"] == {"gallery_item": "cats/01.png", "score": 0.83}
    drawn = Media(modality="image", data=picture, produced_by="image/sd-1.5")
    plain = gateway.part_json(gateway.store_output(drawn), False, drawn)["media"]
    assert plain["produced_by"] == "image/sd-1.5" and "details" not in plain
    assert "produced_by" not in gateway.part_json(gateway.store_output(drawn), False)["media"]
