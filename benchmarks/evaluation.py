"""``percep-lightning evaluate`` over folders: ``--preset lpips`` against the loop of lpips' README, and
``--preset gan`` (FID + IS + KID) against the command lines of torch-fidelity and pytorch-fid."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from PIL import Image

from benchmarks.assets import _PHOTOS, Assets, _photo, uint8_pair
from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Target
from benchmarks.losses import _load_lpips_backbone


def _write_pairs(n: int, size: int) -> tuple[Path, Path]:
    preds, target = uint8_pair(n, size)
    root = Path(tempfile.mkdtemp(prefix="bench_lpips_pairs_"))
    for name, images in (("pred", preds), ("target", target)):
        (root / name).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / name / f"{i:04d}.png")
    return root / "pred", root / "target"


def build_lpips_preset(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import lpips

        from percep_lightning.evaluation import evaluate

        pred, target = _write_pairs(cfg.eval_pairs, cfg.eval_size)
        alexnet = str(assets.torchvision("alexnet"))
        state = assets.state_dict("alexnet")
        last: dict[str, list[torch.Tensor]] = {}

        def ours() -> None:
            values = evaluate(
                pred, target, preset="lpips", weights={"alexnet": alexnet}, device=str(env.device),
                batch_size=cfg.eval_batch, num_workers=cfg.eval_workers, progress=False,
            )  # fmt: skip
            last["ours"] = [torch.tensor(values["lpips"], dtype=torch.float64)]

        def readme_loop() -> None:
            # lpips' README script: build the model, then for each file present in both folders load, im2tensor,
            # forward one pair (both contenders include building their network, as a command-line run does)
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
            _load_lpips_backbone(model, state)
            model = model.to(env.device).eval()
            values = []
            with torch.no_grad():
                for file in sorted(os.listdir(pred)):
                    if os.path.exists(os.path.join(target, file)):
                        img0 = lpips.im2tensor(
                            np.asarray(Image.open(os.path.join(pred, file)).convert("RGB"))
                        )
                        img1 = lpips.im2tensor(
                            np.asarray(Image.open(os.path.join(target, file)).convert("RGB"))
                        )
                        values.append(model(img0.to(env.device), img1.to(env.device)).item())
            last["peer"] = [torch.tensor(float(np.mean(values)), dtype=torch.float64)]

        return [
            Contender("percep_lightning evaluate --preset lpips", OURS, ours, lambda: last["ours"]),
            Contender("lpips README loop", PEER, readme_loop, lambda: last["peer"]),
        ]

    return build


def _write_gan_folders(n: int, size: int) -> tuple[Path, Path]:
    """``n`` real and ``n`` generated ``size``-square PNG files: seeded crops and flips of the photographs.

    The "generated" images are other crops, blurred and brightened, so the two folders differ.
    """
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="bench_gan_folders_"))
    sources = [_photo(name, 2 * size) for name in _PHOTOS]
    for name in ("pred", "target"):
        (root / name).mkdir()
        for i in range(n):
            image = sources[int(rng.integers(len(sources)))]
            top, left = (int(v) for v in rng.integers(0, size + 1, size=2))
            crop = image[top : top + size, left : left + size]
            if rng.integers(2):
                crop = crop[:, ::-1]
            if name == "pred":
                blurred = (
                    Image.fromarray(np.ascontiguousarray(crop))
                    .resize((size // 2, size // 2))
                    .resize((size, size))
                )
                crop = (
                    np.clip(np.asarray(blurred, dtype=np.float32) * 0.9 + 20, 0, 255).round().astype(np.uint8)
                )
            Image.fromarray(np.ascontiguousarray(crop)).save(root / name / f"{i:05d}.png")
    return root / "pred", root / "target"


def torch_fidelity_workers() -> int:
    """The DataLoader workers torch-fidelity's command line uses (``min(4, 2 x CPUs)``); given to everyone."""
    return min(4, 2 * multiprocessing.cpu_count())


def build_gan_preset(cfg: Config, assets: Assets) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        import torch_fidelity
        from pytorch_fid import fid_score
        from pytorch_fid import inception as pytorch_fid_inception

        from percep_lightning.evaluation import evaluate

        pred, target = _write_gan_folders(cfg.gan_images, cfg.gan_size)
        weights = assets.inception()
        workers = torch_fidelity_workers()
        subset = min(1000, cfg.gan_images)
        cuda = env.device.type == "cuda"
        last: dict[str, list[torch.Tensor]] = {}

        def ours() -> None:
            values = evaluate(
                pred, target, preset="gan", weights={"inception": str(weights)}, device=str(env.device),
                batch_size=cfg.gan_batch, num_workers=workers, is_splits=cfg.is_splits, kid_subset_size=subset,
                cache=False, progress=False,
            )  # fmt: skip
            last["ours"] = [torch.tensor(values[k], dtype=torch.float64) for k in ("fid", "is", "kid")]

        def fidelity() -> None:
            # what `fidelity --fid --isc --kid --input1 PRED --input2 TARGET` runs (its workers: min(4, 2 x CPUs))
            metrics = torch_fidelity.calculate_metrics(
                input1=str(pred), input2=str(target), fid=True, isc=True, kid=True, cuda=cuda, cache=False,
                verbose=False, batch_size=cfg.gan_batch, isc_splits=cfg.is_splits, kid_subset_size=subset,
                feature_extractor_weights_path=str(weights),
            )  # fmt: skip
            names = ("frechet_inception_distance", "inception_score_mean", "kernel_inception_distance_mean")
            last["fidelity"] = [torch.tensor(metrics[k], dtype=torch.float64) for k in names]

        def pytorch_fid() -> None:
            # what `python -m pytorch_fid PRED TARGET --dims 2048 --num-workers W` runs; its download of
            # FID_WEIGHTS_URL is replaced by a read of the same weights file
            with mock.patch.object(
                pytorch_fid_inception, "load_state_dict_from_url", lambda url, **kw: torch.load(weights)
            ):
                value = fid_score.calculate_fid_given_paths(
                    [str(pred), str(target)], cfg.gan_batch, str(env.device), 2048, num_workers=workers
                )
            last["pytorch_fid"] = [torch.tensor(float(value), dtype=torch.float64)]  # not compared: FID only

        return [
            Contender("percep_lightning evaluate --preset gan", OURS, ours, lambda: last["ours"]),
            Contender("torch-fidelity --fid --isc --kid", PEER, fidelity, lambda: last["fidelity"]),
            Contender(
                "pytorch-fid (FID only)",
                PEER,
                pytorch_fid,
                None,
                note="pytorch-fid computes FID only, with its own resize: its value is not compared",
            ),  # fmt: skip
        ]

    return build


def evaluation_benches(cfg: Config, assets: Assets) -> list[Bench]:
    what = (
        f"{cfg.eval_pairs} PNG pairs {cfg.eval_size}x{cfg.eval_size}, batch {cfg.eval_batch}, "
        f"{cfg.eval_workers} decoding workers; the README loop decodes in the main process, one pair a forward"
    )
    return [
        Bench(
            "evaluate_lpips", "evaluate --preset lpips (folders)", what, build_lpips_preset(cfg, assets),
            reps=cfg.reps_heavy, warmup=cfg.warmup_heavy, rtol=(1e-5,), variants=False,
            targets=(Target("lpips preset <= 0.8x the README loop", "lpips README loop", 0.8),),
        ),
        Bench(
            "evaluate_gan", "evaluate --preset gan (FID + IS + KID, folders)",
            f"2 x {cfg.gan_images} PNG {cfg.gan_size}x{cfg.gan_size}, batch {cfg.gan_batch}, "
            f"{torch_fidelity_workers()} decoding workers (torch-fidelity's count) for every contender; KID "
            f"{min(1000, cfg.gan_images)}-image subsets; each run builds its network from the weights file; "
            "ours without the TARGET cache",
            build_gan_preset(cfg, assets), reps=cfg.reps_gan, warmup=0, rtol=(1e-3,), variants=False,
            targets=(Target("gan preset <= 0.8x the faster command line", "fastest peer", 0.8),),
        ),
    ]  # fmt: skip
