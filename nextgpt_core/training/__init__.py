"""Training: data readers (:mod:`.data`), synthetic datasets from the toy world (:mod:`.synthetic`), the stages.

Importing this package imports nothing heavy (no torch); import the submodules you need.
"""
