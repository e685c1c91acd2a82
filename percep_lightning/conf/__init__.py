"""Hydra presets installed with the package: ``loss/*`` and ``callbacks/image_metrics``.

The ``percep_lightning`` search-path plugin (``hydra_plugins.percep_lightning_searchpath``) appends
``pkg://percep_lightning.conf`` to every Hydra app's config search path, so a user's own config can
name ``loss: sr_perceptual`` or ``callbacks: image_metrics`` in its defaults list without a
``hydra.searchpath`` entry. The user's own config directories come first and win on equal names.
"""
