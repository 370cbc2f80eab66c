"""Evaluation: fixed, reproducible protocols that score a model (``nextgpt eval``).

- :mod:`.toy`: the toy world's held-out suite (media -> text, text -> media, conversions, edits, several outputs),
  read back by analyzers that use no trained network, with chance, ablations and a ceiling in the same run;
- :mod:`.report`: ``results.json`` and ``report.md`` (a table and a grid of examples).

Importing this package imports no torch.
"""
