"""A metric on the user's own feature extractor through ImageMetricsCallback: a Fréchet distance on the 64-d stub
extractor logs what :func:`~percep_lightning.functional.frechet_distance` gives on the stub's features of the
validation images, on one process and on two (DDP, gloo), where DistributedSampler pads the last batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _ddp_module import fit, validation_outputs
from _stub_extractor import StubExtractor

from percep_lightning.functional import frechet_distance
from percep_lightning.metrics import FrechetDistance

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers.*")

N_VAL = 7  # batches of 2: two processes hold 4 images each, one of them a padding repeat


def _expected(n_val: int) -> float:
    """The Fréchet distance of the stub's features of the generated and the target images (float64 numpy)."""
    images = validation_outputs(n_val)
    with torch.no_grad():
        real = StubExtractor()(images["target"]).double().numpy()
        fake = StubExtractor()(images["preds"]).double().numpy()

    def statistics(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(x.mean(axis=0)), torch.from_numpy(np.cov(x, rowvar=False))

    return float(frechet_distance(*statistics(real), *statistics(fake)))


def _kwargs() -> dict[str, object]:
    return {"metrics": {"fd_mine": FrechetDistance(StubExtractor())}}


def test_a_users_extractor_logs_its_frechet_distance(tmp_path):
    recorder = fit(_kwargs(), str(tmp_path), n_val=N_VAL, max_epochs=2)
    expected = _expected(N_VAL)
    assert expected > 0
    for epoch in (0, 1):
        assert set(recorder.values[epoch]) == {"val/fd_mine"}
        # the callback logs float32 values: a relative error of float32 round-off
        assert recorder.values[epoch]["val/fd_mine"] == pytest.approx(expected, rel=1e-6)
    # no real-statistics cache for a user's metric: its real images run through the extractor every epoch
    assert recorder.real_forwarded == {0: N_VAL, 1: 2 * N_VAL}


@pytest.mark.slow
def test_a_users_extractor_on_two_processes(tmp_path):
    """``strategy="ddp_spawn"`` as in test_ddp.py: the callback, with its metric object, is sent to each process."""
    fit(_kwargs(), str(tmp_path), n_val=N_VAL, devices=2, strategy="ddp_spawn", record_to=str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]
    # rank 0 holds samples 0, 2, 4, 6 and rank 1 samples 1, 3, 5 plus a repeat of 0 that is not counted
    assert [r["real_forwarded"] for r in ranks] == [{"0": 4}, {"0": 3}]
    assert ranks[0]["values"]["0"]["val/fd_mine"] == pytest.approx(_expected(N_VAL), rel=1e-6)
