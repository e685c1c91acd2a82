"""The DINOv2 / CLIP-era names through ImageMetricsCallback: ``fd_dinov2``, ``kd_dinov2``, ``cmmd`` and ``prdc``
log what the functional forms give on the features of the validation images, on one process and on two (DDP,
gloo, where DistributedSampler pads the last batch). The networks are 64-d stubs handed in as ``weights``: the
callback builds no DINOv2 or CLIP and only feeds them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _ddp_module import fit, validation_outputs
from _stub_extractor import StubExtractor

from percep_lightning.backbones import ModuleExtractor
from percep_lightning.functional import cmmd, frechet_distance, prdc

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers.*", "ignore:FD statistics")

N_VAL = 7
NAMES = ("fd_dinov2", "cmmd", "precision", "recall", "density", "coverage")


def _kwargs() -> dict[str, object]:
    return {
        "metrics": ["fd_dinov2", "cmmd", "prdc"],
        "options": {"prdc": {"k": 2}},
        "weights": {
            "dinov2_vitl14": ModuleExtractor(StubExtractor(seed=0)),
            "clip_vit_l14_336": ModuleExtractor(StubExtractor(seed=1)),
        },
    }


def _expected(n_val: int) -> dict[str, float]:
    images = validation_outputs(n_val)
    with torch.no_grad():
        dino = {role: StubExtractor(seed=0)(images[role]) for role in ("preds", "target")}
        clip = {role: StubExtractor(seed=1)(images[role]) for role in ("preds", "target")}

    def statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x64 = x.double().numpy()
        return torch.from_numpy(x64.mean(axis=0)), torch.from_numpy(np.cov(x64, rowvar=False))

    values = prdc(real_features=dino["target"], fake_features=dino["preds"], k=2)
    return {
        "fd_dinov2": float(frechet_distance(*statistics(dino["target"]), *statistics(dino["preds"]))),
        "cmmd": float(cmmd(clip["target"], clip["preds"])),
        **{name: float(value) for name, value in zip(values._fields, values, strict=True)},
    }


def test_the_new_names_log_their_values(tmp_path):
    recorder = fit(_kwargs(), str(tmp_path), n_val=N_VAL, max_epochs=1)
    expected = _expected(N_VAL)
    assert set(recorder.values[0]) == {f"val/{name}" for name in NAMES}
    for name in NAMES:  # the callback logs float32 values
        assert recorder.values[0][f"val/{name}"] == pytest.approx(expected[name], rel=1e-6, abs=1e-7)


@pytest.mark.slow
def test_two_processes_log_what_one_does(tmp_path):
    fit(_kwargs(), str(tmp_path), n_val=N_VAL, devices=2, strategy="ddp_spawn", record_to=str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]
    expected = _expected(N_VAL)
    for name in NAMES:  # the padding repeat is dropped: the same values as one process
        assert ranks[0]["values"]["0"][f"val/{name}"] == pytest.approx(expected[name], rel=1e-6, abs=1e-7)
