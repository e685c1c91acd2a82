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


def test_the_new_names_log_their_values_and_reuse_the_real_side(tmp_path):
    recorder = fit(_kwargs(), str(tmp_path), n_val=N_VAL, max_epochs=2)
    expected = _expected(N_VAL)
    for epoch in (0, 1):
        assert set(recorder.values[epoch]) == {f"val/{name}" for name in NAMES}
        for name in NAMES:  # the callback logs float32 values
            assert recorder.values[epoch][f"val/{name}"] == pytest.approx(expected[name], rel=1e-6, abs=1e-7)
    # epoch 0 runs the real images through both networks; epoch 1 takes them from each network's store
    assert recorder.real_forwarded == {0: 2 * N_VAL, 1: 2 * N_VAL}


@pytest.mark.slow
def test_two_processes_log_what_one_does(tmp_path):
    fit(_kwargs(), str(tmp_path), n_val=N_VAL, devices=2, strategy="ddp_spawn", record_to=str(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["values"] == ranks[1]["values"]
    expected = _expected(N_VAL)
    for name in NAMES:  # the padding repeat is dropped: the same values as one process
        assert ranks[0]["values"]["0"][f"val/{name}"] == pytest.approx(expected[name], rel=1e-6, abs=1e-7)


def test_a_resumed_run_reads_each_networks_statistics(tmp_path):
    """Stopped after epoch 0 and resumed: the DINOv2 and CLIP stores come back from the checkpoint's files, no real
    image runs through either network, and epoch 1 logs what an uninterrupted run logs."""
    from _ddp_module import Recorder, TinyModule, loaders
    from lightning.pytorch import Trainer

    from percep_lightning.callbacks import ImageMetricsCallback

    def trainer(root, callbacks, epochs):
        return Trainer(
            accelerator="cpu", devices=1, max_epochs=epochs, limit_train_batches=1, num_sanity_val_steps=0,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=root, callbacks=callbacks,
        )  # fmt: skip

    train, val = loaders(N_VAL)
    uninterrupted = Recorder()
    trainer(tmp_path / "a", [ImageMetricsCallback(**_kwargs()), uninterrupted], 2).fit(
        TinyModule(), train, val
    )

    first_callback = ImageMetricsCallback(**_kwargs())
    first = trainer(tmp_path / "b", [first_callback], 1)
    first.fit(TinyModule(), train, val)
    state = first_callback.state_dict()
    assert set(state["networks"]) == {"dinov2_vitl14", "clip_vit_l14_336"}
    ckpt = tmp_path / "epoch0.ckpt"
    first.save_checkpoint(ckpt)
    assert len(list((tmp_path / "b" / "real_stats").glob("*.npz"))) == 2  # one file per network

    resumed_callback, resumed = ImageMetricsCallback(**_kwargs()), Recorder()
    trainer(tmp_path / "c", [resumed_callback, resumed], 2).fit(TinyModule(), train, val, ckpt_path=ckpt)
    assert resumed_callback.real_images_forwarded == 0
    assert resumed.values[1] == uninterrupted.values[1]
