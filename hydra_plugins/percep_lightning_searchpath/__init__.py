"""Hydra search-path plugin of percep_lightning (discovered by Hydra in the ``hydra_plugins`` namespace)."""
