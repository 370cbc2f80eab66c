"""The video modality plugin of nextgpt."""
