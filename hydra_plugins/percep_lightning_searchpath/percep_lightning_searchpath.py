"""Puts percep_lightning's packaged presets on the config search path of every Hydra app.

Hydra imports every module under the ``hydra_plugins`` namespace package at start-up and registers
the :class:`~hydra.plugins.search_path_plugin.SearchPathPlugin` subclasses it finds. This module only
imports Hydra, so it adds nothing noticeable to any app's start-up time.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "percep-lightning"
PRESETS = "pkg://percep_lightning.conf"


class PercepLightningSearchPathPlugin(SearchPathPlugin):
    """Append ``pkg://percep_lightning.conf`` (groups ``loss`` and ``callbacks``) to the search path.

    Appended, not prepended: an app's own config directory is searched first, so its own
    ``loss/<name>.yaml`` overrides a packaged preset of the same name.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider=PROVIDER, path=PRESETS)
