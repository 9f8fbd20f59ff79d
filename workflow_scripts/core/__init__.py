"""The workflow's foundation: the one registry of models, datasets, backends and precisions, config loading and
checks, the one path scheme, errors, atomic artifacts, the device tag, provenance, progress lines.

Imports point down only: ``core`` imports nothing else of ``workflow_scripts``.
"""
