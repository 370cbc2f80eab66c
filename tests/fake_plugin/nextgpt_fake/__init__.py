"""A fake modality plugin for nextgpt's tests (and the worked example of docs/plugins.md)."""
