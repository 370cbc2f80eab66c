"""The thermal modality plugin of nextgpt (input only): ImageBind's thermal branch."""
