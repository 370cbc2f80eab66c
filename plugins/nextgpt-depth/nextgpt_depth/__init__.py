"""The depth modality plugin of nextgpt."""
