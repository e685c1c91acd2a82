"""x2 super-resolution of real photographs, trained with a perceptual loss and validated with FID, IS, CFSD.

Run from the repository root (CPU, offline, a few minutes)::

    python examples/train.py
    python examples/train.py loss=restoration trainer.max_epochs=3
    python examples/train.py -m loss.weights.perceptual=0.01,0.1

Everything is configured in ``conf/`` (see ``conf/config.yaml``). All files of a run (CSV and
TensorBoard logs, checkpoints, the validation grids, ``metrics.png``) go to Hydra's output directory.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

EXAMPLES_DIR = Path(__file__).resolve().parent
if str(EXAMPLES_DIR) not in sys.path:  # the configs name the example's classes as sr_module.X, sr_data.X
    sys.path.insert(0, str(EXAMPLES_DIR))

# Official weight files each configurable class loads when one of its weights fields is "default".
_LPIPS_TRUNKS = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# ImageMetricsCallback's network names (its `weights` keys) that differ from those of backbones.WEIGHTS.
_WEIGHTS_NAMES = {"inception": "inception_fid"}


class WeightsField(NamedTuple):
    """One config value that selects pretrained weights: ``node[key]``, in the config ``owner`` (with a
    ``_target_``); ``node`` is ``owner`` itself, or ImageMetricsCallback's ``weights`` mapping."""

    owner: DictConfig
    node: DictConfig
    key: str

    @property
    def name(self) -> str:
        """``Class.field``, or ``ImageMetricsCallback.weights.<network>``."""
        target = str(self.owner._target_).rsplit(".", 1)[-1]
        return f"{target}.{self.key}" if self.node is self.owner else f"{target}.weights.{self.key}"

    @property
    def value(self) -> Any:
        return self.node[self.key]

    def set(self, value: str | None) -> None:
        self.node[self.key] = value


def _target(node: DictConfig) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]


def _needed_weights(field: WeightsField) -> set[str]:
    """Names in ``percep_lightning.backbones.WEIGHTS`` that ``field`` set to "default" would load."""
    node, target = field.owner, _target(field.owner)
    if target == "ImageMetricsCallback":
        networks = _callback_networks(node)
        wanted = networks if field.node is node else networks & {field.key}  # one value, or one network's
        return {_WEIGHTS_NAMES.get(name, name) for name in wanted}
    if target == "LPIPSLoss":
        return {_LPIPS_TRUNKS.get(str(node.get("net", "alex")), "alexnet")}
    if target == "VGGPerceptualLoss":
        return {str(node.get("arch", "vgg19"))}
    if target == "CFSDLoss":
        return {"vgg19"}
    if target == "DISTSLoss":
        return {"vgg16"}
    return set()


def _callback_networks(node: DictConfig) -> set[str]:
    """The networks (``weights`` keys) ImageMetricsCallback builds for the registry names it is given."""
    from percep_lightning.callbacks.metric_set import DEFAULT_METRICS
    from percep_lightning.metrics.registry import METRICS, resolve_names

    metrics = node.get("metrics") or DEFAULT_METRICS
    values = (
        metrics.values() if isinstance(metrics, DictConfig) else metrics
    )  # a mapping: logged name -> metric
    names = [str(name) for name in values if isinstance(name, str)]  # metric objects bring their own networks
    lpips_trunk = _LPIPS_TRUNKS.get(
        str(OmegaConf.select(node, "options.lpips.net", default="alex")), "alexnet"
    )
    networks: set[str] = set()
    for name in resolve_names(names) if names else []:
        networks.update((lpips_trunk,) if name == "lpips" else METRICS[name].weights)
    return networks


def _is_weights_field(node: DictConfig, key: str, value: Any) -> bool:
    named = key == "weights" or key.endswith("_weights")
    return "_target_" in node and named and (value is None or isinstance(value, str))


def _is_network_weights(node: DictConfig, key: str, value: Any) -> bool:
    """Whether ``value`` is ImageMetricsCallback's ``weights`` mapping (network name -> weights)."""
    return key == "weights" and isinstance(value, DictConfig) and _target(node) == "ImageMetricsCallback"


def backbone_fields(cfg: DictConfig) -> Iterator[WeightsField]:
    """Every value of ``cfg.loss`` and ``cfg.callbacks`` that selects pretrained weights.

    That is a field ``weights`` or ``*_weights`` holding a string or null, in a node with a ``_target_``,
    and each entry of ImageMetricsCallback's ``weights`` mapping (one per network).
    ``CompositeLoss`` also has a ``weights`` field, but it is the mapping of term weights: left alone.
    The terms of weight 0 are skipped: CompositeLoss never builds them, so their weights are not needed.
    """

    def walk(node: Any) -> Iterator[WeightsField]:
        if isinstance(node, DictConfig):
            unbuilt = _zero_weight_terms(node)
            for key in node:
                if OmegaConf.is_missing(node, key):
                    continue
                value = node[key]
                if key == "terms" and unbuilt:  # CompositeLoss never builds a term of weight 0
                    for name in value:
                        if str(name) not in unbuilt:
                            yield from walk(value[name])
                elif _is_network_weights(node, str(key), value):
                    for network in value:
                        yield WeightsField(node, value, str(network))
                elif OmegaConf.is_config(value):
                    yield from walk(value)
                elif _is_weights_field(node, str(key), value):
                    yield WeightsField(node, node, str(key))
        elif isinstance(node, ListConfig):
            for item in node:
                yield from walk(item)

    for group in ("loss", "callbacks"):
        if cfg.get(group) is not None:
            yield from walk(cfg[group])


def _zero_weight_terms(node: DictConfig) -> set[str]:
    """The names of the terms of weight 0 when ``node`` is a CompositeLoss config (``terms`` + ``weights``)."""
    weights = node.get("weights") if "terms" in node else None
    if not isinstance(weights, DictConfig):
        return set()
    return {str(name) for name, weight in weights.items() if weight == 0}


def resolve_pretrained(cfg: DictConfig) -> bool:
    """Apply the ``pretrained`` switch to every backbone weights field of the loss and callback configs.

    * ``true``: the official weights (``"default"``) wherever a field is null; building fails if they
      are neither cached nor downloadable. Local paths given explicitly are kept.
    * ``false``: every backbone is randomly initialised (null), after one warning.
    * ``auto``: like ``true`` when every official file needed is cached or downloadable; otherwise
      the ``"default"`` fields become null and ONE prominent warning is printed. Explicit paths are kept.

    Returns:
        Whether every backbone ends up with pretrained weights.

    Raises:
        ValueError: if ``cfg.pretrained`` is none of ``auto``, ``true``, ``false``.
    """
    from percep_lightning.backbones import WeightsUnavailableError, fetch

    mode = cfg.get("pretrained", "auto")
    if mode not in ("auto", True, False):
        raise ValueError(f"Expected `pretrained` to be one of auto, true, false, but got {mode!r}.")
    fields = list(backbone_fields(cfg))
    if mode is True:
        for field in fields:
            if field.value is None and _needed_weights(field):
                field.set("default")
        return True
    if mode is False:
        for field in fields:
            field.set(None)
        if fields:
            _warn_random_backbones("pretrained=false")
        return False
    defaults = [field for field in fields if field.value == "default"]
    needed = sorted(set().union(*(_needed_weights(field) for field in defaults)))
    missing = []
    for name in needed:
        try:
            fetch(name)
        except WeightsUnavailableError:
            missing.append(name)
    if not missing:
        return all(field.value is not None for field in fields)
    for field in defaults:
        field.set(None)
    _warn_random_backbones(
        "pretrained=auto, and the official weights are not cached and cannot be downloaded", missing
    )
    return False


def _warn_random_backbones(reason: str, missing: list[str] | None = None) -> None:
    """Print ONE prominent warning, and silence the per-backbone warnings of the library."""
    from lightning.pytorch.utilities import rank_zero_only

    from percep_lightning.backbones import WEIGHTS

    warnings.filterwarnings("ignore", message=r".*built with random weights.*")
    warnings.filterwarnings("ignore", message=r"CFSD with a randomly initialised VGG19.*")
    if rank_zero_only.rank != 0:
        return
    bar = "!" * 100
    lines = [bar, f"WARNING: RANDOMLY INITIALISED BACKBONES ({reason})."]
    lines.append(
        "The loss still trains the network, but FID, IS, CFSD and the perceptual loss values are NOT\n"
        "comparable to published numbers (random networks give near-constant FID/IS, and CFSD ~1e-9 with\n"
        "no trend); val/psnr and val/ssim need no pretrained weights."
    )
    if missing:
        lines.append(
            "Missing official weights: " + ", ".join(missing) + ". Fetch them once with network access:"
        )
        lines.append(f"    percep-lightning weights download {' '.join(missing)}")
        lines.append(
            f"or copy the files into {WEIGHTS[missing[0]].cache_path.parent} (set TORCH_HOME to move it)."
        )
        lines.append("Set pretrained=false to say that random backbones are intended.")
    lines.append(bar)
    print("\n".join(lines), file=sys.stderr, flush=True)


def _instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate one object (a node with ``_target_``) or each entry of a mapping of them."""
    from hydra.utils import instantiate

    if node is None:
        return []
    if "_target_" in node:
        return [instantiate(node)]
    return [instantiate(entry) for entry in node.values() if entry is not None and "_target_" in entry]


def _instantiate_loggers(node: DictConfig | None) -> list[Any]:
    """Instantiate the loggers, skipping one whose package is not installed (TensorBoard is optional)."""
    from hydra.utils import instantiate

    if node is None:
        return []
    entries = (
        [node] if "_target_" in node else [e for e in node.values() if e is not None and "_target_" in e]
    )
    loggers = []
    for entry in entries:
        try:
            loggers.append(instantiate(entry))
        except Exception as err:  # noqa: BLE001 (Hydra wraps the ModuleNotFoundError of a missing package)
            if not isinstance(err, ModuleNotFoundError) and not isinstance(
                err.__cause__, ModuleNotFoundError
            ):
                raise
            print(f"Logger {entry._target_} skipped: {err.__cause__ or err}", file=sys.stderr)
    return loggers


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and validate as configured by ``cfg``, then print the summary table and write the plot.

    ``cfg.output_dir`` is where every file goes (``${hydra:runtime.output_dir}`` under ``@hydra.main``;
    tests set it explicitly).

    Returns:
        ``{"history", "trainer", "model", "plot"}``: the per-epoch metrics read back from the CSV log,
        the Trainer, the LightningModule and the path of ``metrics.png`` (``None`` without a CSV logger).
    """
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger
    from sr_report import format_table, plot_history, read_history

    # The network output is deliberately not clamped before the loss (clamping kills the gradient of
    # overshooting pixels); early in training it overshoots [0, 1] at sharp edges by a few tenths.
    warnings.filterwarnings("ignore", message=r".*far outside the declared input_range.*")
    L.seed_everything(cfg.seed, workers=True)
    pretrained = resolve_pretrained(cfg)
    output_dir = Path(cfg.output_dir)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, loss=instantiate(cfg.loss))
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_loggers(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(model, datamodule=datamodule)

    result: dict[str, Any] = {"history": {}, "trainer": trainer, "model": model, "plot": None}
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if not trainer.is_global_zero:
        return result
    if csv_logger is None:
        print("No CSVLogger configured: no summary table or plot.", file=sys.stderr)
        return result
    epochs, steps = read_history(Path(csv_logger.log_dir) / "metrics.csv")
    note = None if pretrained else "random backbones: FID, IS, CFSD not comparable to published values"
    plot = plot_history(epochs, steps, output_dir / "metrics.png", note=note)
    title = "Validation metrics and training loss parts per epoch" + (f" ({note})" if note else "")
    print("\n" + format_table(epochs, title=title) + "\n")
    print(f"Outputs in {output_dir}:\n  plot:  {plot}")
    grids = sorted((output_dir / "grids").glob("*.png"))
    if grids:
        print(f"  grids: {grids[0].parent} (last: {grids[-1].name})")
    checkpoint = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
        trainer.checkpoint_callback, "best_model_path", ""
    )
    if checkpoint:
        print(f"  checkpoint: {checkpoint}")
    print(f"  logs:  {csv_logger.log_dir}")
    result.update(history=epochs, plot=plot)
    return result


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """The Hydra entry point; see ``conf/config.yaml``."""
    run(cfg)


if __name__ == "__main__":
    main()
