"""CompositeLoss: weighted total, skipped zero-weight terms, parts, logging, routing, errors."""

from __future__ import annotations

import functools

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from percep_lightning.losses.composite import CompositeLoss


class CountingLoss(nn.Module):
    """A term that counts its calls and returns ``scale * mean|preds - target|``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.calls = 0
        self.register_buffer("anchor", torch.zeros(()))

    def forward(self, preds, target):
        self.calls += 1
        return self.scale * (preds - target).abs().mean()


def _pair():
    preds = torch.zeros(2, 3, 4, 4, requires_grad=True)
    return preds, torch.ones(2, 3, 4, 4)


def test_total_is_weighted_sum_and_parts_are_unweighted():
    a, b = CountingLoss(1.0), CountingLoss(3.0)
    loss = CompositeLoss({"a": a, "b": b}, weights={"a": 0.5, "b": 2.0})
    preds, target = _pair()
    total = loss(preds, target)
    torch.testing.assert_close(total, torch.tensor(0.5 * 1.0 + 2.0 * 3.0))
    assert {k: float(v) for k, v in loss.parts.items()} == {"a": 1.0, "b": 3.0}
    assert all(not v.requires_grad for v in loss.parts.values()) and not loss.total.requires_grad
    total.backward()
    torch.testing.assert_close(preds.grad, torch.full_like(preds, -(0.5 + 6.0) / preds.numel()))


def test_zero_weight_terms_are_not_computed_and_missing_weights_default_to_one():
    a, b, c = CountingLoss(), CountingLoss(), CountingLoss(2.0)
    loss = CompositeLoss({"a": a, "b": b, "c": c}, weights={"b": 0.0})
    total = loss(*_pair())
    assert (a.calls, b.calls, c.calls) == (1, 0, 1)
    assert set(loss.parts) == {"a", "c"}
    torch.testing.assert_close(total, torch.tensor(3.0))
    loss.weights["b"] = 1.0  # weights can change between steps
    loss(*_pair())
    assert b.calls == 1


class Built:
    """Records the terms a factory built."""

    names: list[str] = []

    @classmethod
    def factory(cls, name: str, scale: float = 1.0) -> nn.Module:
        cls.names.append(name)
        return CountingLoss(scale)


@pytest.fixture
def built():
    Built.names = []
    return Built.names


@pytest.mark.parametrize("form", ["factory", "config"])
def test_zero_weight_terms_given_as_factories_or_configs_are_never_built(form, built):
    def spec(name, scale=1.0):
        if form == "factory":
            return functools.partial(Built.factory, name, scale)
        return OmegaConf.create({"_target_": f"{__name__}.Built.factory", "name": name, "scale": scale})

    loss = CompositeLoss({"a": spec("a"), "b": spec("b", 2.0), "c": spec("c")}, weights={"b": 0})
    assert built == ["a", "c"] and list(loss.terms) == ["a", "c"]
    assert "not built (weight 0): ['b']" in repr(loss)
    preds, target = _pair()
    torch.testing.assert_close(loss(preds, target), torch.tensor(2.0))
    assert set(loss.parts) == {"a", "c"}
    loss.weights["b"] = 0.5  # raised later: built at the next forward, in the order of the terms
    torch.testing.assert_close(loss(preds.double(), target.double()), torch.tensor(3.0, dtype=torch.float64))
    assert built == ["a", "c", "b"] and list(loss.parts) == ["a", "b", "c"]
    assert "not built" not in repr(loss)


def test_a_hydra_config_with_recursive_false_builds_only_nonzero_terms(built):
    from hydra.utils import instantiate

    cfg = OmegaConf.create(
        {
            "_target_": "percep_lightning.losses.CompositeLoss",
            "_recursive_": False,
            "terms": {
                "a": {"_target_": f"{__name__}.Built.factory", "name": "a"},
                "b": {"_target_": f"{__name__}.Built.factory", "name": "b"},
            },
            "weights": {"a": 1.0, "b": 0.0},
        }
    )
    loss = instantiate(cfg)
    assert built == ["a"] and isinstance(loss.terms["a"], CountingLoss)
    cfg._recursive_ = True  # a user config without the flag still works, building every term
    assert set(instantiate(cfg).terms) == {"a", "b"}


def test_unknown_weight_names_list_unbuilt_terms_too():
    with pytest.raises(ValueError, match=r"the terms are: a, b"):
        CompositeLoss({"a": nn.L1Loss(), "b": functools.partial(nn.MSELoss)}, {"b": 0, "c": 1})


def test_terms_are_submodules():
    loss = CompositeLoss({"a": CountingLoss(), "b": nn.L1Loss()})
    assert isinstance(loss.terms, nn.ModuleDict) and loss.terms["a"] is loss._modules["terms"]["a"]
    assert "terms.a.anchor" in loss.state_dict()
    loss.double()
    assert loss.terms["a"].anchor.dtype == torch.float64


def test_accepts_hydra_dictconfigs():
    term = CountingLoss()
    terms = OmegaConf.create({"a": term}, flags={"allow_objects": True})
    loss = CompositeLoss(terms, OmegaConf.create({"a": 2}))
    assert loss.terms["a"] is term and loss.weights == {"a": 2.0}


def test_routed_targets():
    content, style = CountingLoss(), CountingLoss()
    loss = CompositeLoss({"content": content, "style": style}, targets={"style": "style"})
    preds, target = _pair()
    loss(preds, target, style=torch.full_like(target, 3.0))
    assert {k: float(v) for k, v in loss.parts.items()} == {"content": 1.0, "style": 3.0}
    with pytest.raises(
        ValueError,
        match=r"Term 'style' compares with the keyword argument `style`, but the call did not pass it",
    ):
        loss(preds, target)
    with pytest.raises(ValueError, match=r"Got the target keyword\(s\) \['stlye'\], which no term uses"):
        loss(preds, target, style=target, stlye=target)


class _TinyModule(pl.LightningModule):
    def __init__(self, loss):
        super().__init__()
        self.net = nn.Conv2d(3, 3, 1)
        self.loss = loss
        self.logged = {}

    def log(self, name, value, **kwargs):  # record what would reach the logger
        self.logged[name] = (float(value), kwargs)

    def training_step(self, batch, batch_idx):
        preds = self.net(batch)
        total = self.loss(preds, batch)
        self.loss.log_parts(self, prefix="train/loss", batch_size=len(batch), on_step=True)
        return total


def test_log_parts_from_a_lightning_module():
    loss = CompositeLoss({"a": CountingLoss(), "b": CountingLoss(2.0), "off": CountingLoss()}, {"off": 0})
    with pytest.raises(RuntimeError, match=r"`log_parts` needs the values of a forward pass"):
        loss.log_parts(_TinyModule(loss))
    module = _TinyModule(loss)
    total = module.training_step(torch.rand(2, 3, 4, 4), 0)
    assert set(module.logged) == {"train/loss/a", "train/loss/b", "train/loss/total"}
    assert module.logged["train/loss/total"][0] == pytest.approx(float(total.detach()))
    assert module.logged["train/loss/b"][0] == pytest.approx(2 * module.logged["train/loss/a"][0])
    assert module.logged["train/loss/a"][1] == {"batch_size": 2, "on_step": True}


def test_log_parts_logs_per_image_values_as_their_mean():
    class PerImage(nn.Module):
        def forward(self, preds, target):
            return (preds - target).abs().flatten(1).mean(1)

    loss = CompositeLoss({"a": PerImage()})
    module = _TinyModule(loss)
    preds = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    assert loss(preds, torch.zeros_like(preds)).shape == (2,)
    loss.log_parts(module)
    assert module.logged["loss/a"][0] == 0.5 and module.logged["loss/total"][0] == 0.5


def test_log_parts_through_a_real_trainer(tmp_path):
    class Module(_TinyModule):
        log = pl.LightningModule.log

        def configure_optimizers(self):
            return torch.optim.SGD(self.net.parameters(), lr=0.1)

    loss = CompositeLoss({"a": CountingLoss(), "b": nn.MSELoss()})
    module = Module(loss)
    trainer = pl.Trainer(
        default_root_dir=tmp_path, max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(torch.rand(2, 3, 4, 4), batch_size=2))
    assert {"train/loss/a", "train/loss/b", "train/loss/total"} <= set(trainer.callback_metrics)


def test_errors():
    with pytest.raises(
        ValueError,
        match=r"`weights` names \['pecreptual'\], which are not terms of this loss; the terms are: pixel, percep",
    ):
        CompositeLoss({"pixel": nn.L1Loss(), "perceptual": nn.MSELoss()}, {"pecreptual": 0.1})
    with pytest.raises(ValueError, match=r"`targets` names \['x'\], which are not terms"):
        CompositeLoss({"a": nn.L1Loss()}, targets={"x": "style"})
    with pytest.raises(ValueError, match=r"Expected the target of 'a' to be a keyword name other than"):
        CompositeLoss({"a": nn.L1Loss()}, targets={"a": "target"})
    with pytest.raises(ValueError, match=r"Expected `terms` to be a non-empty mapping"):
        CompositeLoss({})
    with pytest.raises(
        TypeError, match=r"Expected term 'a' to be an nn.Module, a config with `_target_` or a factory of one"
    ):
        CompositeLoss({"a": torch.nn.functional.l1_loss})
    with pytest.raises(
        ValueError, match=r"Expected the config of term 'a' to name its class with `_target_`"
    ):
        CompositeLoss({"a": {"kind": "l1"}})
    with pytest.raises(TypeError, match=r"Expected term 'a' built from its factory to be an nn.Module"):
        CompositeLoss({"a": functools.partial(torch.zeros, 1)})
    with pytest.raises(TypeError, match=r"Expected term 'a' built from its config to be an nn.Module"):
        CompositeLoss({"a": {"_target_": "builtins.dict", "kind": "l1"}})
    with pytest.raises(ValueError, match=r"Expected term names without '.', but got 'a.b'"):
        CompositeLoss({"a.b": nn.L1Loss()})
    with pytest.raises(TypeError, match=r"Expected the weight of 'a' to be a number, but got '1'"):
        CompositeLoss({"a": nn.L1Loss()}, {"a": "1"})
    with pytest.raises(ValueError, match=r"Expected the weight of 'a' to be finite, but got nan"):
        CompositeLoss({"a": nn.L1Loss()}, {"a": float("nan")})
    loss = CompositeLoss({"a": nn.L1Loss()}, {"a": 1.0})
    loss.weights["a"] = 0.0  # switched off between steps: the next forward has nothing to compute
    with pytest.raises(ValueError, match=r"Every term has weight 0, nothing to compute"):
        loss(*_pair())


def test_weights_are_checked_when_the_loss_is_built():
    with pytest.raises(
        ValueError, match=r"Expected the weight of 'b' to be >= 0 \(0 switches the term off\), but got -0.5"
    ):
        CompositeLoss({"a": nn.L1Loss(), "b": nn.MSELoss()}, {"b": -0.5})
    with pytest.raises(
        ValueError,
        match=r"Expected at least one term with a non-zero weight, but every weight is 0: \{'a': 0.0, 'b': 0.0\}",
    ):
        CompositeLoss({"a": nn.L1Loss(), "b": {"_target_": "torch.nn.MSELoss"}}, {"a": 0, "b": 0.0})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.weights.perceptual=-1"], r"Expected the weight of 'perceptual' to be >= 0"),
        (["loss.weights.perceptual=0", "loss.weights.pixel=0"], r"every weight is 0"),
    ],
)
def test_weights_from_a_hydra_preset_are_checked_when_it_is_instantiated(overrides, message):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    presets = Path(__file__).resolve().parents[2] / "percep_lightning" / "conf"
    with initialize_config_dir(config_dir=str(presets), version_base="1.3"):
        config = compose("loss/sr_perceptual", overrides=overrides).loss
    with pytest.raises(Exception, match=message) as info:  # Hydra wraps the error with the target's name
        instantiate(config)  # before any VGG19 is built or fetched
    assert isinstance(info.value, ValueError) or isinstance(info.value.__cause__, ValueError)
