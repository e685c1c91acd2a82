"""Loss benchmarks: forward + backward of each loss against its peers and the bare-backbone floor.

One repetition computes the loss of ``preds`` (a leaf that requires grad) against ``target`` and
back-propagates to ``preds``, as a training step does. Every peer's backbone is frozen (parameters do not
require grad), as ours is, so no contender computes weight gradients.

The floor of a backbone loss is the work any implementation must do: the torchvision trunk cut after the
deepest layer the loss uses, one forward of the normalised ``preds`` with autograd, one forward of the
normalised ``target`` without, and the backward of ``sum()`` of the deepest output to ``preds`` (the same
convolutions, forward and backward, that the loss runs; no distance computation).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from benchmarks.assets import Assets, image_pair
from benchmarks.config import Config
from benchmarks.harness import FLOOR, OURS, PEER, Bench, Contender, Env, Target

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# LPIPS net -> (torchvision arch, index of the deepest feature used + 1)
LPIPS_TARGETS = {"alex": 0.8, "vgg": 0.7, "squeeze": 0.6}  # ours / lpips 0.1.4, wall-time medians
LPIPS_TRUNKS = {"alex": ("alexnet", 12), "vgg": ("vgg16", 30), "squeeze": ("squeezenet1_1", 13)}
# Real-ESRGAN's layers (VGGPerceptualLoss default): conv1_2, conv2_2, conv3_4, conv4_4, conv5_4 of VGG19.
VGG_LAYERS = {"2": 0.1, "7": 0.1, "16": 1.0, "25": 1.0, "34": 1.0}
VGG_CHANNELS = {"2": 64, "7": 128, "16": 256, "25": 512, "34": 512}
CFSD_DEPTH = 12  # VGG19 features[:12]: relu3_1
CFSD_ARCH = "vgg19-cfsd"  # VGG19 file whose conv1_1 is scaled, see Assets.torchvision


def loss_contender(
    env: Env,
    name: str,
    role: str,
    fn: Callable[[Tensor, Tensor], Tensor],
    preds: Tensor,
    target: Tensor,
    *,
    convention: str | None = None,
    note: str = "",
) -> Contender:
    """A contender whose repetition is ``fn(preds, target).backward()``; its check values are the loss and
    the gradient with respect to ``preds``. Only the forward runs under the variant's autocast, as PyTorch
    recommends for training steps."""
    x = preds.detach().clone().requires_grad_(True)
    last: list[Tensor] = []

    def step() -> None:
        x.grad = None
        with env.autocast():
            loss = fn(x, target)
        loss.backward()
        last[:] = [loss.detach()]

    def value() -> Sequence[Tensor]:
        return last[0].float(), x.grad.detach().float().clone()  # type: ignore[union-attr]

    return Contender(name, role, step, value if role != FLOOR else None, convention, note)


def frozen(module: nn.Module, env: Env) -> nn.Module:
    module.requires_grad_(False)
    module.eval()
    return env.module(module)


def trunk(assets: Assets, arch: str, depth: int, env: Env, *, inplace: bool = True) -> nn.Sequential:
    """The torchvision ``arch().features[:depth]`` with the benchmark's weight file (``arch`` may name a
    variant file such as ``"vgg19-cfsd"``)."""
    arch_file, arch = arch, arch.split("-")[0]
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    features = model.features[:depth].to_empty(device="cpu")
    state = assets.state_dict(arch_file)
    features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if _in_trunk(k, depth)})
    if not inplace:
        for m in features.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False
    return frozen(features, env)  # type: ignore[return-value]


def _in_trunk(key: str, depth: int) -> bool:
    return key.startswith("features.") and int(key.split(".")[1]) < depth


def floor_contenders(
    env: Env,
    label: str,
    features: nn.Module,
    normalize: Callable[[Tensor], Tensor],
    preds: Tensor,
    target: Tensor,
) -> list[Contender]:
    """The bare-backbone floor, in torchvision's default layout and channels-last (the faster one counts):
    forward(preds) with grad, forward(target) without, backward of ``sum()`` of the deepest output."""
    channels_last = copy.deepcopy(features).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    out = []
    for suffix, trunk_, layout in (
        ("", features, None),
        (", channels_last", channels_last, torch.channels_last),
    ):

        def fn(
            x: Tensor, y: Tensor, trunk_: nn.Module = trunk_, layout: torch.memory_format | None = layout
        ) -> Tensor:
            x, y = normalize(x), normalize(y)
            if layout is not None:
                x, y = x.contiguous(memory_format=layout), y.contiguous(memory_format=layout)
            with torch.no_grad():
                trunk_(y)
            return trunk_(x).sum()

        out.append(loss_contender(env, f"floor: {label}{suffix}", FLOOR, fn, preds, target))
    return out


def _imagenet(env: Env) -> Callable[[Tensor], Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, device=env.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=env.device).view(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def _pair(env: Env, n: int, size: int) -> tuple[Tensor, Tensor]:
    preds, target = image_pair(n, size)
    return env.tensor(preds), env.tensor(target)


# --------------------------------------------------------------------------------------------- builders


def build_pixel(cfg: Config) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.losses import PixelLoss

        preds, target = _pair(env, cfg.loss_batch, cfg.loss_size)
        ours = env.module(PixelLoss("l1"))
        return [
            loss_contender(env, "percep_lightning PixelLoss('l1')", OURS, ours, preds, target),
            loss_contender(env, "torch F.l1_loss", PEER, F.l1_loss, preds, target),
        ]

    return build


def build_ssim(cfg: Config) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import kornia
        import piq
        import pytorch_msssim
        from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

        from percep_lightning.losses import SSIMLoss

        preds, target = _pair(env, cfg.loss_batch, cfg.loss_size)
        ours = env.module(SSIMLoss(data_range=1.0))
        return [
            loss_contender(env, "percep_lightning SSIMLoss", OURS, ours, preds, target),
            loss_contender(
                env,
                "pytorch-msssim ssim",
                PEER,
                lambda x, y: 1 - pytorch_msssim.ssim(x, y, data_range=1.0),
                preds,
                target,
            ),
            loss_contender(
                env,
                "piq ssim",
                PEER,
                lambda x, y: 1 - piq.ssim(x, y, data_range=1.0, downsample=False),
                preds,
                target,
            ),
            loss_contender(
                env,
                "kornia metrics.ssim (valid)",
                PEER,
                lambda x, y: 1 - kornia.metrics.ssim(x, y, 11, max_val=1.0, padding="valid").mean(),
                preds,
                target,
            ),
            loss_contender(
                env,
                "torchmetrics SSIM",
                PEER,
                lambda x, y: 1 - tm_ssim(x, y, data_range=1.0),
                preds,
                target,
                convention="reflect-pads the borders",
            ),
        ]

    return build


def build_ms_ssim(cfg: Config) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import piq
        import pytorch_msssim
        from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms_ssim

        from percep_lightning.losses import MSSSIMLoss

        preds, target = _pair(env, cfg.loss_batch, cfg.msssim_size)
        ours = env.module(MSSSIMLoss(data_range=1.0))
        return [
            loss_contender(env, "percep_lightning MSSSIMLoss", OURS, ours, preds, target),
            loss_contender(
                env,
                "pytorch-msssim ms_ssim",
                PEER,
                lambda x, y: 1 - pytorch_msssim.ms_ssim(x, y, data_range=1.0),
                preds,
                target,
            ),
            loss_contender(
                env,
                "piq multi_scale_ssim",
                PEER,
                lambda x, y: 1 - piq.multi_scale_ssim(x, y, data_range=1.0),
                preds,
                target,
            ),
            loss_contender(
                env,
                "torchmetrics MS-SSIM",
                PEER,
                lambda x, y: 1 - tm_ms_ssim(x, y, data_range=1.0),
                preds,
                target,
                convention="reflect-pads the borders",
            ),
        ]

    return build


def build_vgg(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import piq

        from percep_lightning.losses import VGGPerceptualLoss

        preds, target = _pair(env, cfg.loss_batch, cfg.loss_size)
        ours = env.module(VGGPerceptualLoss(weights=str(assets.torchvision("vgg19"))))
        # piq's ContentLoss sums the per-channel means over channels: dividing each layer weight by its channel
        # count gives BasicSR's (and our) mean over all elements. Its ReLUs must not run in place, or the
        # captured pre-activation features would be overwritten.
        content = piq.ContentLoss(
            feature_extractor=trunk(assets, "vgg19", 35, env, inplace=False),
            layers=tuple(VGG_LAYERS),
            weights=[w / VGG_CHANNELS[k] for k, w in VGG_LAYERS.items()],
            distance="mae",
        )
        return [
            loss_contender(env, "percep_lightning VGGPerceptualLoss", OURS, ours, preds, target),
            loss_contender(env, "piq ContentLoss (same layers)", PEER, content, preds, target),
            *floor_contenders(
                env, "VGG19 features[:35]", trunk(assets, "vgg19", 35, env), _imagenet(env), preds, target
            ),
        ]

    return build


def _load_lpips_backbone(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load a torchvision state dict into an lpips-style network: its slices hold ``features[i]`` as module
    ``str(i)`` (``slice1.0.weight`` in lpips, ``slices.0.0.weight`` in torchmetrics)."""

    def source(key: str) -> str:
        parts = key.split(".")
        return "features." + ".".join(parts[2:] if parts[0] == "slices" else parts[1:])

    net = model.net
    net.load_state_dict({k: state[source(k)] for k in net.state_dict()}, strict=True)


def build_lpips(cfg: Config, assets: Assets, net: str) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import lpips
        from torchmetrics.functional.image.lpips import _LPIPS

        from percep_lightning.losses import LPIPSLoss

        arch, depth = LPIPS_TRUNKS[net]
        preds, target = _pair(env, cfg.loss_batch, cfg.loss_size)
        state = assets.state_dict(arch)
        ours = env.module(LPIPSLoss(net, weights=str(assets.torchvision(arch))))  # type: ignore[arg-type]
        reference = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
        _load_lpips_backbone(reference, state)
        reference = frozen(reference, env)
        tm = _LPIPS(pretrained=True, net=net, pnet_rand=True)  # type: ignore[arg-type]
        _load_lpips_backbone(tm, state)
        tm = frozen(tm, env)
        shift = torch.tensor(LPIPS_SHIFT, device=env.device).view(1, 3, 1, 1)
        scale = torch.tensor(LPIPS_SCALE, device=env.device).view(1, 3, 1, 1)
        return [
            loss_contender(env, f"percep_lightning LPIPSLoss('{net}')", OURS, ours, preds, target),
            loss_contender(
                env, "lpips 0.1.4", PEER, lambda x, y: reference(x, y, normalize=True).mean(), preds, target
            ),
            loss_contender(
                env,
                "torchmetrics LPIPS network",
                PEER,
                lambda x, y: tm(x, y, normalize=True).mean(),
                preds,
                target,
            ),
            *floor_contenders(
                env,
                f"{arch} features[:{depth}]",
                trunk(assets, arch, depth, env),
                lambda x: (2 * x - 1 - shift) / scale,
                preds,
                target,
            ),
        ]

    return build


class StyleIDCFSD(nn.Module):
    """CFSD computed as StyleID's ``evaluation/image_metrics.py`` (``PatchSimi``) does, full matrices.

    The trunk is cut at ``features[:12]`` (relu3_1, the only output used); StyleID's code runs all 37 layers,
    so this reference is already faster than the original.
    """

    def __init__(self, features: nn.Module, env: Env) -> None:
        super().__init__()
        self.features = features
        self.normalize = _imagenet(env)

    @staticmethod
    def _similarity(feature: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        f = feature.transpose(1, 3).reshape(b, h * w, c).div(c)
        return torch.bmm(f, f.transpose(1, 2))

    def forward(self, stylized: Tensor, content: Tensor) -> Tensor:
        log_q = F.log_softmax(self._similarity(self.features(self.normalize(stylized))), dim=-1)
        p = F.softmax(self._similarity(self.features(self.normalize(content))), dim=-1)
        b = log_q.shape[0]
        return F.kl_div(log_q.reshape(b, -1), p.reshape(b, -1), reduction="batchmean")


def build_cfsd(cfg: Config, assets: Assets, size: int) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.losses import CFSDLoss

        preds, target = _pair(env, 1, size)
        ours = env.module(CFSDLoss(weights=str(assets.torchvision(CFSD_ARCH))))
        reference = StyleIDCFSD(trunk(assets, CFSD_ARCH, CFSD_DEPTH, env), env)
        return [
            loss_contender(env, "percep_lightning CFSDLoss", OURS, ours, preds, target),
            loss_contender(env, "StyleID full-matrix CFSD", PEER, reference, preds, target),
            *floor_contenders(
                env,
                f"VGG19 features[:{CFSD_DEPTH}]",
                trunk(assets, CFSD_ARCH, CFSD_DEPTH, env),
                _imagenet(env),
                preds,
                target,
            ),
        ]

    return build


def loss_benches(cfg: Config, assets: Assets) -> list[Bench]:
    """Every loss benchmark, cheapest first."""
    batch = f"{cfg.loss_batch}x3x{cfg.loss_size}x{cfg.loss_size}"
    light = {"reps": cfg.reps_light, "warmup": cfg.warmup_light}
    heavy = {"reps": cfg.reps_backbone, "warmup": cfg.warmup_heavy}
    benches = [
        Bench("pixel", "Pixel L1", f"fwd+bwd, {batch}", build_pixel(cfg), **light, rtol=(1e-6,)),
        Bench(
            "ssim", "SSIM", f"fwd+bwd, {batch}", build_ssim(cfg), **light, rtol=(3e-4, 1e-3),
            targets=(Target("SSIM <= 0.75x fastest peer", "fastest peer", 0.75),),
        ),
        Bench(
            "ms_ssim", "MS-SSIM", f"fwd+bwd, {cfg.loss_batch}x3x{cfg.msssim_size}x{cfg.msssim_size}",
            build_ms_ssim(cfg), **light, rtol=(3e-4, 1e-3),
            targets=(Target("MS-SSIM <= 0.75x fastest peer", "fastest peer", 0.75),),
        ),
        Bench(
            "vgg", "VGG perceptual", f"fwd+bwd, {batch}, VGG19 conv1_2..conv5_4 (Real-ESRGAN), l1",
            build_vgg(cfg, assets), **heavy, rtol=(1e-4, 2e-2),
            targets=(Target("VGG perceptual <= 1.02x floor", "floor", 1.02),),
        ),
    ]  # fmt: skip
    for net, limit in LPIPS_TARGETS.items():
        benches.append(
            Bench(
                f"lpips_{net}", f"LPIPS {net}", f"fwd+bwd, {batch}", build_lpips(cfg, assets, net), **heavy,
                rtol=(1e-4, 1e-2), targets=(Target(f"LPIPS {net} <= {limit}x lpips", "lpips 0.1.4", limit),),
            )
        )  # fmt: skip
    side = cfg.cfsd_size
    big = cfg.cfsd_big
    benches += [
        Bench("cfsd", "CFSD loss", f"fwd+bwd, 1x3x{side}x{side}", build_cfsd(cfg, assets, side), **heavy,
            rtol=(1e-4, 1e-2),
        ),
        Bench(
            "cfsd_big", "CFSD loss, peak memory", f"fwd+bwd, 1x3x{big}x{big}, one repetition, no warm-up",
            build_cfsd(cfg, assets, big), reps=1, warmup=0, memory=True, check=False,
        ),
    ]  # fmt: skip
    from benchmarks.dists import dists_benches  # imports this module's helpers

    return benches + dists_benches(cfg, assets)
