"""The audio modality plugin of nextgpt."""
