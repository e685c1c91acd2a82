"""Two CPU processes (DDP, gloo) log exactly what one process logs, although DistributedSampler pads."""

from __future__ import annotations

import json

import pytest
import torch
from _ddp_module import StyleModule, fit

METRICS = (
    "val/fid", "val/is", "val/is_std", "val/kid", "val/kid_std", "val/cfsd", "val/psnr", "val/ssim",
    "val/lpips", "val/artfid", "val/artfid_fid", "val/artfid_lpips",
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_two_processes_log_what_one_process_logs(
    tmp_path, inception_weights, torchvision_weights, art_inception_weights
):
    """7 validation images, batch 2, 2 processes: the sampler pads to 8, the duplicate must not count.

    ``strategy="ddp_spawn"`` starts the two processes from inside pytest (``"ddp"`` would re-run the pytest
    command line in each child); the callback code is the same for both strategies. Two epochs: the second
    reuses the cached real statistics (FID's and KID's) on every process. KID's subsets depend on the
    order of the gathered features, so its equality shows that the positions put them in dataset order.
    """
    kwargs = {
        "metrics": ("fid", "is", "kid", "cfsd", "psnr", "ssim", "lpips", "artfid"),
        "weights": str(inception_weights),
        "vgg_weights": str(torchvision_weights("vgg19")),
        "content_key": "content",
        "style_key": "style",
        "is_splits": 3,
        "kid_subsets": 20,
        "kid_subset_size": 4,
        "lpips_weights": str(torchvision_weights("alexnet")),
        "art_inception_weights": str(art_inception_weights),
        "art_lpips_weights": str(torchvision_weights("alexnet")),
        "art_resize": 75,
    }
    ddp_dir = tmp_path / "ddp"
    ddp_dir.mkdir()
    fit(
        kwargs,
        str(ddp_dir),
        n_val=7,
        batch_size=2,
        max_epochs=2,
        devices=2,
        strategy="ddp_spawn",
        record_to=str(ddp_dir),
        module=StyleModule,
    )
    ranks = [json.loads((ddp_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]  # every process logs the same keys and values
    # rank 0 holds samples 0, 2, 4, 6 and rank 1 samples 1, 3, 5 plus a repeat of 0 that is not counted;
    # the second epoch reuses the cached real statistics on both
    assert [r["real_forwarded"] for r in ranks] == [{"0": 4, "1": 4}, {"0": 3, "1": 3}]

    # One process, one thread like each DDP process (float32 convolutions depend on the thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = fit(
            kwargs, str(tmp_path / "single"), n_val=7, batch_size=2, max_epochs=2, module=StyleModule
        )
    finally:
        torch.set_num_threads(threads)

    assert set(single.values) == {0, 1} and single.real_forwarded == {0: 7, 1: 7}
    for epoch, values in single.values.items():
        assert set(values) == set(METRICS)
        for key in METRICS:
            assert ranks[0]["values"][str(epoch)][key] == pytest.approx(values[key], rel=1e-6, abs=1e-9), key
