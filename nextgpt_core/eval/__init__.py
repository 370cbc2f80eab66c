"""Evaluation: fixed, reproducible protocols that score a model (``nextgpt eval``).

- :mod:`.toy`: the toy world's held-out suite (media -> text, text -> media, conversions, edits, several outputs),
  read back by analyzers that use no trained network, with chance, ablations and a ceiling in the same run;
- :mod:`.custom`: ``.jsonl`` suites of an integrator's own rows;
- :mod:`.paper`: the NExT-GPT paper's protocols on local data (COCO / MSR-VTT / AudioCaps captioning, text -> image,
  video, audio), with :mod:`.paper_data` (the dataset readers) and :mod:`.metrics` (captioning scores, FID, CLIP
  and CLAP scores);
- :mod:`.report`: ``results.json`` and ``report.md`` (a table and a grid of examples).

Importing this package imports no torch.
"""
