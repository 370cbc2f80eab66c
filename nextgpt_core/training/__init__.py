"""Training: data readers (:mod:`.data`), synthetic datasets (:mod:`.synthetic`) and the stages.

Importing this package imports nothing heavy (no torch); import the submodules you need.
"""
