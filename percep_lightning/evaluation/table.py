"""The metric table of ``percep-lightning evaluate`` and its presets.

Each metric is one :class:`MetricSpec`: its kind (paired, or on Inception features), the folder it
compares the predictions with, the weights it needs, which direction is better, and a ``build`` function
returning its scorer (see :mod:`percep_lightning.evaluation.scorers`). Presets are lists of names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from percep_lightning.evaluation.errors import EvaluationError

__all__ = ["METRICS", "PRESETS", "BuildContext", "MetricSpec", "resolve_metrics"]

Kind = Literal["paired", "features", "derived"]
Against = Literal["target", "content", "style"]


@dataclass
class BuildContext:
    """What a scorer is built from: the device, resolved weights (name -> path or ``None``), settings."""

    device: Any
    weights: dict[str, Any]
    crop_border: int = 0
    is_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    styleid_size: int | None = 512
    inception: Any = None  # the shared FIDInceptionV3, built once for every feature metric
    art_inception: Any = None  # the ArtInception of StyleID's FID, built once when a metric needs it
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """One row of the metric table.

    Attributes:
        name: the name on the command line and in the outputs.
        kind: ``"paired"`` (one value per pair, mean over pairs), ``"features"`` (Inception features
            of whole folders) or ``"derived"`` (a formula of the values of ``requires``).
        against: the folder compared with the predictions (``None``: the predictions alone).
        higher_is_better: the direction shown in the table.
        weights: the weights names (keys of ``--weights``) it needs.
        description: one line for ``--help`` and the JSON output.
        build: ``build(context) -> scorer``.
        spread: what the value's own ``±`` is taken over (``"splits"`` for IS, ``"subsets"`` for KID);
            ``None`` for none. Paired metrics report the standard deviation over pairs.
        min_images: the fewest images per folder it accepts.
        network: the feature network of a ``"features"`` metric: ``"inception"`` (the FID Inception) or
            ``"art_inception"`` (StyleID's art-trained Inception).
        requires: the metrics a ``"derived"`` metric is computed from (added to the run when not named).
        combine: ``combine(values) -> value`` of a ``"derived"`` metric, ``values`` by metric name.
    """

    name: str
    kind: Kind
    against: Against | None
    higher_is_better: bool
    weights: tuple[str, ...]
    description: str
    build: Callable[[BuildContext], Any]
    spread: str | None = None
    min_images: int = 1
    network: str = "inception"
    requires: tuple[str, ...] = ()
    combine: Callable[[dict[str, float]], float] | None = None


def _pixel(metric: str, y: bool) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> Any:
        from percep_lightning.evaluation.scorers import PixelScorer

        return PixelScorer(metric, y_channel=y, crop_border=ctx.crop_border)

    return build


def _lpips(net: str, trunk: str, grey: bool = False, styleid: bool = False) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> Any:
        from percep_lightning.evaluation.scorers import LPIPSScorer

        resize = ctx.styleid_size if styleid else None
        return LPIPSScorer(net, ctx.weights[trunk], ctx.device, grey=grey, resize=resize)

    return build


def _cfsd(ctx: BuildContext) -> Any:
    from percep_lightning.evaluation.scorers import CFSDScorer

    return CFSDScorer(ctx.weights["vgg19"], ctx.device)


def _fid(against: str) -> Callable[[BuildContext], Any]:
    def build(ctx: BuildContext) -> Any:
        from percep_lightning.evaluation.scorers import FIDConsumer

        return FIDConsumer(ctx.inception, against)

    return build


def _art_fid(ctx: BuildContext) -> Any:
    from percep_lightning.evaluation.scorers import ArtFIDConsumer

    return ArtFIDConsumer()


def _no_scorer(ctx: BuildContext) -> None:
    return None


def _artfid(values: dict[str, float]) -> float:
    """ArtFID = (1 + LPIPS(stylized, content)) x (1 + FID(stylized, style)), Wright & Ommer 2022."""
    return (1 + values["lpips_content"]) * (1 + values["fid_art"])


def _kid(ctx: BuildContext) -> Any:
    from percep_lightning.evaluation.scorers import KIDConsumer

    return KIDConsumer(ctx.inception, subsets=ctx.kid_subsets, subset_size=ctx.kid_subset_size)


def _is(ctx: BuildContext) -> Any:
    from percep_lightning.evaluation.scorers import ISConsumer

    return ISConsumer(ctx.inception, splits=ctx.is_splits)


_ROWS = (
    MetricSpec("psnr", "paired", "target", True, (), "PSNR (dB) on RGB in [0, 1]", _pixel("psnr", False)),
    MetricSpec("ssim", "paired", "target", True, (), "SSIM (Gaussian 11, sigma 1.5, valid)", _pixel("ssim", False)),
    MetricSpec("ms_ssim", "paired", "target", True, (), "MS-SSIM (5 scales)", _pixel("ms_ssim", False)),
    MetricSpec(
        "psnr_y", "paired", "target", True, (), "PSNR (dB) of the MATLAB luma (BasicSR test_y_channel)",
        _pixel("psnr", True),
    ),
    MetricSpec(
        "ssim_y", "paired", "target", True, (), "SSIM of the MATLAB luma (BasicSR test_y_channel)",
        _pixel("ssim", True),
    ),
    MetricSpec("lpips", "paired", "target", False, ("alexnet",), "LPIPS v0.1, AlexNet", _lpips("alex", "alexnet")),
    MetricSpec("lpips_vgg", "paired", "target", False, ("vgg16",), "LPIPS v0.1, VGG16", _lpips("vgg", "vgg16")),
    MetricSpec(
        "lpips_content", "paired", "content", False, ("alexnet",),
        "LPIPS v0.1 AlexNet of the predictions vs --content, shorter sides resized to --styleid-size (StyleID)",
        _lpips("alex", "alexnet", styleid=True),
    ),
    MetricSpec(
        "lpips_gray", "paired", "content", False, ("alexnet",),
        "lpips_content on grey images (StyleID's LPIPS_gray)", _lpips("alex", "alexnet", grey=True, styleid=True),
    ),
    MetricSpec(
        "cfsd", "paired", "content", False, ("vgg19",), "CFSD of the predictions vs --content (StyleID)", _cfsd
    ),
    MetricSpec(
        "fid", "features", "target", False, ("inception",), "FID vs TARGET (folder or .npz)", _fid("target"),
        min_images=2,
    ),
    MetricSpec(
        "fid_style", "features", "style", False, ("inception",), "FID of the predictions vs --style",
        _fid("style"), min_images=2,
    ),
    MetricSpec(
        "fid_art", "features", "style", False, ("art_inception",),
        "FID of the predictions vs --style, art Inception, shorter sides --styleid-size (StyleID's FID)",
        _art_fid, min_images=2, network="art_inception",
    ),
    MetricSpec(
        "artfid", "derived", None, False, (), "ArtFID = (1 + lpips_content) x (1 + fid_art) (StyleID)",
        _no_scorer, requires=("lpips_content", "fid_art"), combine=_artfid,
    ),
    MetricSpec(
        "kid", "features", "target", False, ("inception",),
        "KID vs TARGET folder (mean and std over --kid-subsets subsets of --kid-subset-size)", _kid,
        spread="subsets", min_images=2,
    ),
    MetricSpec(
        "is", "features", None, True, ("inception",), "Inception Score (mean and std over --is-splits splits)", _is, spread="splits",
    ),
)  # fmt: skip

METRICS: dict[str, MetricSpec] = {spec.name: spec for spec in _ROWS}
"""Every metric ``evaluate`` knows, by name."""

PRESETS: dict[str, tuple[str, ...]] = {
    "lpips": ("lpips",),
    "sr": ("psnr_y", "ssim_y", "lpips"),
    "gan": ("fid", "is", "kid"),
    "styleid": ("artfid", "fid_art", "lpips_content", "lpips_gray", "cfsd"),
}
"""Named metric lists (``--preset``)."""


def resolve_metrics(metrics: Sequence[str] | str | None, preset: str | None) -> list[MetricSpec]:
    """The metric rows to compute: the preset's, then the named ones (without repeats).

    Args:
        metrics: names from :data:`METRICS` (a comma-separated string is split), or ``None``.
        preset: a key of :data:`PRESETS`, or ``None``.

    Raises:
        EvaluationError: for an unknown name or preset (the message lists the valid ones), or when
            neither is given.

    Example:
        >>> [spec.name for spec in resolve_metrics("psnr,lpips", None)]
        ['psnr', 'lpips']
        >>> [spec.name for spec in resolve_metrics(None, "sr")]
        ['psnr_y', 'ssim_y', 'lpips']
    """
    names: list[str] = []
    if preset is not None:
        if preset not in PRESETS:
            raise EvaluationError(f"Unknown preset {preset!r}; expected one of {', '.join(PRESETS)}.")
        names.extend(PRESETS[preset])
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    for name in metrics or ():
        if name not in METRICS:
            raise EvaluationError(f"Unknown metric {name!r}; expected some of {', '.join(METRICS)}.")
        names.append(name)
    if not names:
        raise EvaluationError(
            f"Name the metrics (--metrics, some of {', '.join(METRICS)}) or a preset "
            f"(--preset, one of {', '.join(PRESETS)})."
        )
    for name in list(names):
        names.extend(METRICS[name].requires)
    return [METRICS[name] for name in dict.fromkeys(names)]
