"""The image modality plugin of nextgpt."""
