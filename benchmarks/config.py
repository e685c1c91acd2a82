"""Sizes and repetitions of a run: the full default, ``--quick`` (tiny, for the test), and the GPU default."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    """What every benchmark runs on.

    Attributes:
        loss_batch, loss_size: the ``(N, 3, S, S)`` batch of the loss benchmarks (pixel, SSIM, VGG, LPIPS).
        msssim_size: image side for MS-SSIM (must exceed 160 with 5 scales and an 11-tap window).
        cfsd_size: image side of the CFSD loss and metric benchmarks (batch 1, as the reference runs).
        cfsd_big: image side of the CFSD peak-memory row.
        fid_images, fid_size, fid_batch: N real + N generated ``fid_size``-square uint8 images per validation
            epoch, in batches of ``fid_batch``.
        is_splits: Inception Score splits.
        fid_dim, fid_samples: dimension of the FID-compute statistics and the number of samples they are
            estimated from (``> fid_dim``: full-rank covariances, the usual case for a test set).
        kid_samples, kid_subsets, kid_subset_size: KID compute on ``kid_samples`` real and generated 2048-d
            features, with torch-fidelity's subsets.
        prdc_samples, prdc_dim: PRDC (k = 5) on that many real and generated float32 features, against the
            ``prdc`` package; prdc_large: the same, ours alone, at a size the package cannot hold in memory.
        cmmd_samples, cmmd_dim: CMMD on that many L2-normalised embeddings per set, against the reference
            formula on full float64 matrices; cmmd_large: ours alone, at a size those matrices do not fit.
        dinov2_arch, dinov2_batch: the DINOv2 size (a name of ``DINOV2_ARCHS``; any other name: a tiny
            2-block ViT for the quick run) and the batch of 224x224 images of the feature-extraction row.
        eval_pairs, eval_size, eval_batch, eval_workers: the folder pairs of the ``evaluate --preset lpips``
            row (PNG files), its batch size and DataLoader workers.
        gan_images, gan_size, gan_batch: the two folders of the ``evaluate --preset gan`` row (FID + IS +
            KID): ``gan_images`` PNG files of ``gan_size`` squared each, read ``gan_batch`` at a time (the
            worker count is torch-fidelity's own, given to every contender).
        reps_gan: timed repetitions of that row.
        reps_light, reps_backbone, reps_heavy, reps_epoch, reps_fid: timed repetitions of the cheap losses,
            the backbone losses (VGG, LPIPS, CFSD: more, since their ratios sit close to their targets and
            a median of 3 moves by a few percent on a shared machine), the other heavy rows (Inception
            forward, streaming LPIPS, folder evaluation), the validation epoch and the FID compute.
        warmup_light, warmup_heavy: untimed repetitions before them. The correctness check before timing
            runs every contender once more, so it is a warm-up too (the only one where these are 0).
    """

    loss_batch: int = 4
    loss_size: int = 256
    msssim_size: int = 256
    cfsd_size: int = 256
    cfsd_big: int = 512
    fid_images: int = 32
    fid_size: int = 256
    fid_batch: int = 16
    is_splits: int = 10
    fid_dim: int = 2048
    fid_samples: int = 4096
    kid_samples: int = 1000
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    prdc_samples: int = 10000
    prdc_dim: int = 1024
    prdc_large: int = 50000
    cmmd_samples: int = 10000
    cmmd_dim: int = 768
    cmmd_large: int = 30000
    dinov2_arch: str = "vitl14"
    dinov2_batch: int = 8
    eval_pairs: int = 500
    eval_size: int = 256
    eval_batch: int = 16
    eval_workers: int = 2
    gan_images: int = 1000
    gan_size: int = 256
    gan_batch: int = 50
    reps_gan: int = 2
    reps_light: int = 15
    reps_backbone: int = 5
    reps_heavy: int = 3
    reps_epoch: int = 3
    reps_fid: int = 3
    warmup_light: int = 1
    warmup_heavy: int = 0


FULL_CPU = Config()
FULL_CUDA = replace(
    FULL_CPU, loss_batch=16, fid_images=512, fid_batch=64, is_splits=10, reps_light=20, reps_backbone=10, reps_heavy=10, reps_epoch=3,
    reps_fid=5, warmup_light=3, warmup_heavy=2,
)  # fmt: skip
QUICK = Config(
    loss_batch=1, loss_size=48, msssim_size=176, cfsd_size=48, cfsd_big=64, fid_images=2, fid_size=32, fid_batch=2,
    is_splits=2, fid_dim=64, fid_samples=128, kid_samples=32, kid_subsets=5, kid_subset_size=16, prdc_samples=64,
    prdc_dim=16, prdc_large=80, cmmd_samples=48, cmmd_dim=16, cmmd_large=72, dinov2_arch="tiny",
    dinov2_batch=2, eval_pairs=2,
    eval_size=32, eval_batch=2, eval_workers=0, gan_images=4, gan_size=32, gan_batch=2, reps_gan=1, reps_light=1, reps_backbone=1, reps_heavy=1, reps_epoch=1, reps_fid=1,
    warmup_light=0, warmup_heavy=0,
)  # fmt: skip
