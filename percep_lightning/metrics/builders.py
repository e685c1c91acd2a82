"""How each registry entry builds its metric from a :class:`~percep_lightning.metrics.networks.BuildContext` and
its options (the metric classes are imported when built, so the registry itself imports no torch)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from percep_lightning.metrics.networks import LPIPS_TRUNKS, BuildContext

if TYPE_CHECKING:
    from torchmetrics import Metric

Builder = Callable[[BuildContext, Mapping[str, Any]], "Metric"]
"""``build(context, options) -> Metric``."""


def pixel(kind: str, channel: str) -> Builder:
    def build(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
        from percep_lightning.metrics.paired import MSSSIM, PSNR, SSIM

        cls = {"psnr": PSNR, "ssim": SSIM, "ms_ssim": MSSSIM}[kind]
        return cls(
            channel=options.get("channel", channel), crop_border=options["crop_border"], sync_on_compute=False
        )

    return build


def lpips(net: str, *, grey: bool = False) -> Builder:
    def build(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
        from percep_lightning.metrics.paired_lpips import LPIPS

        net_name = options.get("net", net)
        weights = ctx.weights_of(LPIPS_TRUNKS[net_name])
        return LPIPS(
            net_name, weights=weights, resize=options.get("resize"), grey=grey, sync_on_compute=False
        )  # type: ignore[arg-type]

    return build


def dists(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.dists import DISTS

    return DISTS(weights=ctx.weights_of("vgg16"), sync_on_compute=False)


def cfsd(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.cfsd import CFSD

    kwargs = {} if options["chunk_size"] is None else {"chunk_size": options["chunk_size"]}
    return CFSD(ctx.weights_of("vgg19"), sync_on_compute=False, **kwargs)


def fid(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(backbone=ctx.inception(), quantize=ctx.quantize, sync_on_compute=False)  # type: ignore[arg-type]


def fid_art(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.frechet import FrechetDistance

    return FrechetDistance(ctx.art_inception(options["resize"]), quantize=ctx.quantize, sync_on_compute=False)


def kid(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.kid import KernelInceptionDistance

    return KernelInceptionDistance(
        backbone=ctx.inception(),
        subsets=options["subsets"],
        subset_size=options["subset_size"],
        quantize=ctx.quantize,  # type: ignore[arg-type]
        sync_on_compute=False,
    )


def inception_score(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.inception_score import InceptionScore

    return InceptionScore(
        backbone=ctx.inception(), splits=options["splits"], quantize=ctx.quantize, sync_on_compute=False
    )


def fd_dinov2(infinity: bool) -> Builder:
    def build(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
        from percep_lightning.metrics.frechet import FrechetDistance

        extra = {}
        if infinity:
            extra = {
                "infinity_num_points": options["num_points"],
                "infinity_min_samples": options["min_samples"],
            }
        return FrechetDistance(
            ctx.dinov2(), quantize=ctx.quantize, infinity=infinity, sync_on_compute=False, **extra
        )  # type: ignore[arg-type]

    return build


def kd_dinov2(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.kernel import KernelDistance

    return KernelDistance(
        ctx.dinov2(),
        subsets=options["subsets"],
        subset_size=options["subset_size"],
        quantize=ctx.quantize,  # type: ignore[arg-type]
        sync_on_compute=False,
    )


def cmmd(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.cmmd import CMMD

    return CMMD(ctx.clip(), quantize=ctx.quantize, sync_on_compute=False)  # type: ignore[arg-type]


def prdc(ctx: BuildContext, options: Mapping[str, Any]) -> Metric:
    from percep_lightning.metrics.prdc import PRDC

    return PRDC(
        ctx.features(options["features"]), k=options["k"], quantize=ctx.quantize, sync_on_compute=False
    )  # type: ignore[arg-type]


def artfid(values: Mapping[str, float]) -> float:
    """ArtFID = (1 + LPIPS(stylized, content)) x (1 + FID(stylized, style)), Wright & Ommer 2022."""
    return (1 + values["lpips_content"]) * (1 + values["fid_art"])
