"""Two CPU processes (DDP, gloo) log exactly what one process logs, although DistributedSampler pads."""

from __future__ import annotations

import json

import pytest
import torch
from _ddp_module import StyleModule, fit

METRICS = (
    "val/fid", "val/is", "val/is_std", "val/kid", "val/kid_std", "val/cfsd", "val/psnr", "val/ssim",
    "val/lpips", "val/artfid", "val/fid_art", "val/lpips_content",
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
        "keys": {"content": "content", "style": "style"},
        "options": {
            "is": {"splits": 3},
            "kid": {"subsets": 20, "subset_size": 4},
            "lpips_content": {"resize": 75},
            "fid_art": {"resize": 75},
        },
        "weights": {
            "inception": str(inception_weights),
            "vgg19": str(torchvision_weights("vgg19")),
            "alexnet": str(torchvision_weights("alexnet")),  # LPIPS and ArtFID's lpips_content
            "art_inception": str(art_inception_weights),
        },
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
    # rank 0 holds samples 0, 2, 4, 6 and rank 1 samples 1, 3, 5 plus a repeat of 0 that is not counted. Real
    # images forwarded (cumulative): in epoch 0 the target images through the FID Inception (FID, KID) and the
    # style images through the art Inception (fid_art); the second epoch reuses the cached real statistics
    # and features of FID and KID on both, and forwards the style images again (fid_art has no cache)
    assert [r["real_forwarded"] for r in ranks] == [{"0": 4 + 4, "1": 8 + 4}, {"0": 3 + 3, "1": 6 + 3}]

    # One process, one thread like each DDP process (float32 convolutions depend on the thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = fit(
            kwargs, str(tmp_path / "single"), n_val=7, batch_size=2, max_epochs=2, module=StyleModule
        )
    finally:
        torch.set_num_threads(threads)

    assert set(single.values) == {0, 1} and single.real_forwarded == {0: 7 + 7, 1: 14 + 7}
    for epoch, values in single.values.items():
        assert set(values) == set(METRICS)
        for key in METRICS:
            assert ranks[0]["values"][str(epoch)][key] == pytest.approx(values[key], rel=1e-6, abs=1e-9), key
