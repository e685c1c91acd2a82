"""The one registry of named metrics, read by :class:`~percep_lightning.callbacks.ImageMetricsCallback` and by
``percep-lightning evaluate``: the same names, options and numbers in both.

An entry (:class:`MetricSpec`) says what a metric reads (its image roles, ``"preds"`` first), how it is fed,
what it is called in the logs and tables, which direction is better, how many images and how large they
must be, which pretrained weights it needs, and how to build it from its options. Feeds:

* ``"images"``: ``update(*images of the roles)``; a :class:`~percep_lightning.metrics.paired.PerImageMean`
  also gives one value per pair (``per_image``), which ``evaluate`` reports per file;
* ``"features"``: a distribution metric on the features of a shared extractor (its ``extractor``): the
  ``preds`` images are the generated side, the second role the real side; one forward of an extractor
  feeds every metric that holds it (``update_features(features, real, indices)``);
* ``"logits"``: the Inception Score, fed the unbiased logits of the FID Inception's forward.

A ``"derived"`` entry combines the values of the entries it ``requires`` (ArtFID).

Per-metric options are one mapping per name (``{"is": {"splits": 10}, "psnr": {"crop_border": 4}}``);
:func:`resolve_options` checks them against the entry's ``defaults``. Networks shared by several metrics
(the FID Inception, StyleID's art Inception, DINOv2, CLIP) are built once per :class:`BuildContext`
(:mod:`percep_lightning.metrics.networks`); each entry's builder is in :mod:`percep_lightning.metrics.builders`.

A new metric is one builder and one entry here, and both the callback and ``evaluate`` have it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from percep_lightning.metrics import builders
from percep_lightning.metrics.builders import Builder
from percep_lightning.metrics.networks import (
    FEATURE_SPACES,
    LPIPS_TRUNKS,
    NETWORKS,
    STYLEID_SIZE,
    BuildContext,
    seeded,
)

if TYPE_CHECKING:  # the table itself imports no torch: the command line lists it without loading it
    from torchmetrics import Metric

__all__ = [
    "ALIASES",
    "METRICS",
    "LPIPS_TRUNKS",
    "NETWORKS",
    "PRESETS",
    "ROLES",
    "SHARED_OPTIONS",
    "BuildContext",
    "MetricSpec",
    "build_metric",
    "describe",
    "resolve_names",
    "resolve_options",
]

Feed = Literal["images", "features", "logits", "derived"]
ROLES: tuple[str, ...] = ("preds", "target", "content", "style")
"""The images a metric can read: the generated ``preds``, and the ``target``, ``content`` or ``style`` images."""
SHARED_OPTIONS: Mapping[str, Any] = {"resize": "tensorflow", "quantize": "round"}
"""Options of the shared FID Inception (its resize mode) and of every ``uint8`` extractor (``quantize``)."""
OptionsFn = Callable[[Mapping[str, Any]], int]


@dataclass(frozen=True)
class MetricSpec:
    """One named metric.

    Attributes:
        name: the name in the callback's ``metrics``, on the command line and in the outputs.
        description: one line for ``--list-metrics``, ``--help`` and the JSON output.
        roles: the images it reads, ``"preds"`` first (:data:`ROLES`).
        higher_is_better: the better direction.
        build: ``build(context, options) -> Metric``.
        feed: how it is fed (see the module notes).
        defaults: its options and their defaults (the keys it accepts).
        logs: the names of the values ``compute()`` returns, in order (default: ``(name,)``).
        weights: the network names whose weights it needs (keys of ``--weights``).
        min_images: ``min_images(options)``, the fewest images of each role it accepts.
        why_min: why (for the error messages).
        min_side: ``min_side(options)``, the smallest image side it accepts.
        why_side: why.
        caches_real: whether its real side can come from cached statistics (``evaluate``'s TARGET cache, one
            entry per network; the callback's store holds the FID Inception's, for ``fid`` and ``kid``).
        spread: what its second logged value is a spread over (``"splits"``, ``"subsets"``), if any.
        requires: the entries a ``"derived"`` metric combines.
        combine: ``combine(values by name) -> value`` of a ``"derived"`` metric.
    """

    name: str
    description: str
    roles: tuple[str, ...]
    higher_is_better: bool
    build: Builder | None
    feed: Feed = "images"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    logs: tuple[str, ...] = ()
    weights: tuple[str, ...] = ()
    min_images: OptionsFn = lambda options: 1
    why_min: str = "1 pair"
    min_side: OptionsFn = lambda options: 1
    why_side: str = ""
    caches_real: bool = False
    spread: str | None = None
    requires: tuple[str, ...] = ()
    combine: Callable[[Mapping[str, float]], float] | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A registry entry is pickled by name (its builders and bounds are closures and lambdas), so a callback
        # holding entries reaches the processes `ddp_spawn` starts; other entries pickle as dataclasses.
        if METRICS.get(self.name) is self:
            return _registered, (self.name,)
        return super().__reduce_ex__(protocol)

    @property
    def logged(self) -> tuple[str, ...]:
        """The names of its values: :attr:`logs`, or just its name."""
        return self.logs or (self.name,)

    def weights_for(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The networks whose weights it needs with ``options`` (LPIPS with ``net="vgg"`` needs vgg16)."""
        net, space = options.get("net"), options.get("features")
        if net is not None:
            return (LPIPS_TRUNKS[net],)
        return (FEATURE_SPACES[space],) if space is not None else self.weights

    @property
    def paired(self) -> bool:
        """Whether it has one value per (preds, other) pair."""
        return self.feed == "images" and len(self.roles) == 2

    @property
    def against(self) -> str | None:
        """The role compared with ``preds`` (``None`` for IS and derived metrics)."""
        return self.roles[1] if len(self.roles) > 1 else None


def _crop(extra: int, why: str) -> tuple[OptionsFn, str]:
    return (lambda options: 2 * options["crop_border"] + extra), why


_CROP = {"crop_border": 0}
_STYLEID = {"resize": STYLEID_SIZE}
_PIXEL_SIDES = {
    "psnr": _crop(1, "a pixel left after `crop_border`"),
    "ssim": _crop(11, "the 11-tap window after `crop_border`"),
    "ms_ssim": _crop(161, "5 scales of an 11-tap window: sides above 160 after `crop_border`"),
}


def _pixel_spec(name: str, kind: str, channel: str, description: str) -> MetricSpec:
    side, why = _PIXEL_SIDES[kind]
    defaults = {"crop_border": 0} if channel == "y" else {"crop_border": 0, "channel": "rgb"}
    return MetricSpec(
        name, description, ("preds", "target"), True, builders.pixel(kind, channel), defaults=defaults,
        min_side=side, why_side=why,
    )  # fmt: skip


def _two(options: Mapping[str, Any]) -> int:
    return 2


_ROWS = (
    _pixel_spec("psnr", "psnr", "rgb", "PSNR (dB), the mean of per-image values (channel: rgb, y, per_channel)"),
    _pixel_spec("ssim", "ssim", "rgb", "SSIM (Gaussian 11, sigma 1.5, valid region)"),
    _pixel_spec("ms_ssim", "ms_ssim", "rgb", "MS-SSIM (5 scales)"),
    _pixel_spec("psnr_y", "psnr", "y", "PSNR (dB) of the MATLAB luma (BasicSR test_y_channel)"),
    _pixel_spec("ssim_y", "ssim", "y", "SSIM of the MATLAB luma (BasicSR test_y_channel)"),
    MetricSpec(
        "lpips", "LPIPS v0.1 (net: alex, vgg, squeeze; default alex)", ("preds", "target"), False,
        builders.lpips("alex"), defaults={"net": "alex"}, weights=("alexnet",),
    ),
    MetricSpec(
        "lpips_vgg", "LPIPS v0.1, VGG16", ("preds", "target"), False, builders.lpips("vgg"), weights=("vgg16",),
    ),
    MetricSpec(
        "dists", "DISTS (Ding et al. 2020): VGG16 with L2 pooling, the official alpha/beta", ("preds", "target"),
        False, builders.dists, weights=("vgg16",), min_side=lambda options: 17,
        why_side="relu5_3 of VGG16 at least 2x2",
    ),
    MetricSpec(
        "lpips_content", "LPIPS v0.1 AlexNet vs the content images, shorter sides resized to 512 (StyleID)",
        ("preds", "content"), False, builders.lpips("alex"), defaults=_STYLEID, weights=("alexnet",),
    ),
    MetricSpec(
        "lpips_gray", "lpips_content on grey images (StyleID's LPIPS_gray)", ("preds", "content"), False,
        builders.lpips("alex", grey=True), defaults=_STYLEID, weights=("alexnet",),
    ),
    MetricSpec(
        "cfsd", "CFSD vs the content images (StyleID)", ("preds", "content"), False, builders.cfsd,
        defaults={"chunk_size": None}, weights=("vgg19",),
    ),
    MetricSpec(
        "fid", "FID vs the target images (FID Inception, torch-fidelity's conventions)", ("preds", "target"),
        False, builders.fid, feed="features", weights=("inception",), min_images=_two,
        why_min="2 to estimate a covariance", caches_real=True,
    ),
    MetricSpec(
        "fid_style", "FID vs the style images", ("preds", "style"), False, builders.fid, feed="features",
        weights=("inception",), min_images=_two, why_min="2 to estimate a covariance",
    ),
    MetricSpec(
        "fid_art", "FID vs the style images on the art Inception, shorter sides resized to 512 (StyleID's FID)",
        ("preds", "style"), False, builders.fid_art, feed="features", defaults=_STYLEID, weights=("art_inception",),
        min_images=_two, why_min="2 to estimate a covariance",
        min_side=lambda options: 75 if options["resize"] is None else 1,
        why_side="the art Inception's smallest input with `resize`=None",
    ),
    MetricSpec(
        "artfid", "ArtFID = (1 + lpips_content) x (1 + fid_art) (StyleID)", ("preds", "content", "style"), False,
        None, feed="derived", requires=("lpips_content", "fid_art"), combine=builders.artfid,
    ),
    MetricSpec(
        "kid", "KID vs the target images (mean and std over `subsets` subsets of `subset_size`)",
        ("preds", "target"), False, builders.kid, feed="features", defaults={"subsets": 100, "subset_size": 1000},
        logs=("kid", "kid_std"), weights=("inception",), min_images=_two,
        why_min="2 per side for the unbiased MMD", caches_real=True, spread="subsets",
    ),
    MetricSpec(
        "fd_dinov2", "Frechet distance on DINOv2 ViT-L/14 features vs the target images (dgm-eval's FD)",
        ("preds", "target"), False, builders.fd_dinov2(False), feed="features", weights=("dinov2_vitl14",),
        min_images=_two, why_min="2 to estimate a covariance", caches_real=True,
    ),
    MetricSpec(
        "fd_dinov2_inf", "FD-DINOv2 extrapolated to infinitely many generated images (dgm-eval's FD-infinity)",
        ("preds", "target"), False, builders.fd_dinov2(True), feed="features",
        defaults={"num_points": 15, "min_samples": None}, weights=("dinov2_vitl14",),
        min_images=lambda options: 3 if options["min_samples"] is None else options["min_samples"] + 1,
        why_min="more generated images than `min_samples` (default min(5000, max(N // 10, 2)))", caches_real=True,
    ),
    MetricSpec(
        "kd_dinov2", "Kernel distance (KID's MMD) on DINOv2 ViT-L/14 features vs the target images",
        ("preds", "target"), False, builders.kd_dinov2, feed="features", defaults={"subsets": 100, "subset_size": 1000},
        logs=("kd_dinov2", "kd_dinov2_std"), weights=("dinov2_vitl14",), min_images=_two,
        why_min="2 per side for the unbiased MMD", spread="subsets", caches_real=True,
    ),
    MetricSpec(
        "cmmd", "CMMD: MMD of CLIP ViT-L/14 (336 px) embeddings vs the target images (Jayasumana et al. 2024)",
        ("preds", "target"), False, builders.cmmd, feed="features", weights=("clip_vit_l14_336",), caches_real=True,
    ),
    MetricSpec(
        "prdc", "precision, recall, density, coverage vs the target images (features: dinov2, inception, clip)",
        ("preds", "target"), True, builders.prdc, feed="features", defaults={"k": 5, "features": "dinov2"},
        logs=("precision", "recall", "density", "coverage"), weights=("dinov2_vitl14",),
        min_images=lambda options: options["k"] + 1, why_min="more than `k` per side for the neighbour balls", caches_real=True,
    ),
    MetricSpec(
        "is", "Inception Score (mean and std over `splits` splits)", ("preds",), True, builders.inception_score, feed="logits",
        defaults={"splits": 10}, logs=("is", "is_std"), weights=("inception",),
        min_images=lambda options: max(2, options["splits"]), why_min="one per split, `splits`", spread="splits",
    ),
)  # fmt: skip

METRICS: Mapping[str, MetricSpec] = {spec.name: spec for spec in _ROWS}
"""Every named metric, by name."""


def _registered(name: str) -> MetricSpec:
    """The registry entry ``name`` (what a pickled entry becomes again)."""
    return METRICS[name]


ALIASES: Mapping[str, str] = dict.fromkeys(("precision", "recall", "density", "coverage"), "prdc")
"""Names that ask for the entry computing them: ``precision`` (or ``recall``, ...) is ``prdc``, which logs all
four from one set of neighbour balls."""

PRESETS: Mapping[str, tuple[str, ...]] = {
    "lpips": ("lpips",),
    "sr": ("psnr_y", "ssim_y", "lpips", "dists"),
    "gan": ("fid", "is", "kid"),
    "styleid": ("artfid", "fid_art", "lpips_content", "lpips_gray", "cfsd"),
    "dgm": ("fd_dinov2", "prdc", "cmmd"),
}
"""Named lists of metrics (``evaluate --preset``)."""


def describe() -> list[str]:
    """One line per metric, ``name: description`` (``evaluate --list-metrics``).

    Example:
        >>> describe()[0]
        'psnr: PSNR (dB), the mean of per-image values (channel: rgb, y, per_channel)'
    """
    return [f"{spec.name}: {spec.description}" for spec in METRICS.values()]


def resolve_names(names: object) -> list[str]:
    """The requested names, each known, with the entries a derived metric requires added after them.

    An alias of :data:`ALIASES` stands for its entry (``precision`` is ``prdc``).

    Args:
        names: a name, or a sequence of names.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or no name at all.

    Example:
        >>> resolve_names(["artfid", "cfsd"])
        ['artfid', 'cfsd', 'lpips_content', 'fid_art']
        >>> resolve_names(["precision", "recall"])
        ['prdc']
    """
    if isinstance(names, str):
        names = [names]
    listed = [ALIASES.get(str(name).lower(), str(name).lower()) for name in names]  # type: ignore[union-attr]
    unknown = [name for name in listed if name not in METRICS]
    if unknown or not listed:
        raise ValueError(
            f"Expected metric names from {', '.join(METRICS)}, but got {listed!r}"
            + (f" ({', '.join(map(repr, unknown))} unknown)." if unknown else ".")
        )
    for name in list(listed):
        listed.extend(METRICS[name].requires)
    return list(dict.fromkeys(listed))


def resolve_options(spec: MetricSpec, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The entry's defaults updated with ``given``, each key checked.

    Raises:
        ValueError: for an option the metric does not take (the message lists those it takes).
        TypeError: if ``given`` is not a mapping.
    """
    if given is None:
        return dict(spec.defaults)
    if not isinstance(given, Mapping):
        raise TypeError(
            f"Expected the options of metric {spec.name!r} to be a mapping, but got {type(given).__name__}."
        )
    unknown = sorted(set(given) - set(spec.defaults))
    if unknown:
        takes = ", ".join(spec.defaults) or "none"
        raise ValueError(f"Metric {spec.name!r} takes no option {', '.join(unknown)}; its options: {takes}.")
    for key, value in given.items():
        _check_option(spec.name, key, value)
    return {**spec.defaults, **given}


_INTEGER_OPTIONS = {
    "crop_border": 0,
    "splits": 1,
    "subsets": 1,
    "subset_size": 1,
    "chunk_size": 1,
    "resize": 1,
    "k": 1,
    "num_points": 2,
    "min_samples": 2,
}
_CHOICES = {
    "channel": ("rgb", "y", "per_channel"),
    "net": ("alex", "vgg", "squeeze"),
    "features": tuple(FEATURE_SPACES),
}
_MAY_BE_NONE = ("chunk_size", "resize", "min_samples")
_MINIMUM_OF = {("fid_art", "resize"): 75}  # the art Inception's smallest input


def _check_option(metric: str, key: str, value: object) -> None:
    """Raise a TypeError or ValueError naming ``options[metric][key]`` for a value it cannot take."""
    from percep_lightning.functional.inputs import check_int  # here: this module is importable without torch

    name = f"options[{metric!r}][{key!r}]"
    if value is None and key in _MAY_BE_NONE:
        return
    if key in _INTEGER_OPTIONS:
        check_int(value, name, minimum=_MINIMUM_OF.get((metric, key), _INTEGER_OPTIONS[key]))
    elif key in _CHOICES and value not in _CHOICES[key]:
        raise ValueError(f"Expected `{name}` to be one of {_CHOICES[key]}, but got {value!r}.")


def build_metric(spec: MetricSpec, context: BuildContext, options: Mapping[str, Any]) -> Metric:
    """Build one entry's metric. Its own random networks come from a seed of its name (the shared ones from
    theirs, see :meth:`BuildContext.network`), so values with random weights do not depend on what else is
    built, and every process holds the same networks.

    Raises:
        ValueError: for a derived entry (build the entries it requires).
    """
    if spec.build is None:
        raise ValueError(f"Metric {spec.name!r} is derived from {spec.requires}; build those instead.")
    with seeded(spec.name):
        return spec.build(context, options)
