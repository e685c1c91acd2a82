"""Distribution metrics on feature vectors: PRDC against the ``prdc`` package, CMMD against its formula.

The features are synthetic (no network runs): float32 points near a curved 16-dimensional manifold in
``D`` dimensions, the generated set drawn with a shifted latent, so that precision, recall, density and
coverage are neither 0 nor 1 (in high dimensions, isotropic Gaussian sets give all-or-nothing values).
For CMMD they are L2-normalised, as CLIP embeddings are.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.config import Config
from benchmarks.harness import OURS, PEER, Bench, Contender, Env, Target

PRDC_TARGET = 0.5  # ours / the fastest compute_prdc, wall-time medians
PRDC_K = 5


def manifold_features(samples: int, dim: int, seed: int, shift: float = 0.0) -> Tensor:
    """``samples`` float32 points ``tanh(z W) + 0.05 noise``, ``z`` 16-d standard normal with ``z_0 += shift``."""
    mixing = torch.randn(16, dim, generator=torch.Generator().manual_seed(0)) / 4.0
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(samples, 16, generator=generator)
    latent[:, 0] += shift
    return (latent @ mixing).tanh() + 0.05 * torch.randn(samples, dim, generator=generator)


def _prdc_values(precision: object, recall: object, density: object, coverage: object) -> list[Tensor]:
    """The four PRDC values as one float64 tensor (what the harness compares)."""
    values = (precision, recall, density, coverage)
    return [torch.tensor([float(v) for v in values], dtype=torch.float64)]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- PRDC


def build_prdc(samples: int, dim: int, *, peers: bool) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.functional import prdc

        real = manifold_features(samples, dim, 1)
        fake = manifold_features(samples, dim, 2, shift=0.5)
        real_dev, fake_dev = real.to(env.device), fake.to(env.device)
        last: dict[str, list[Tensor]] = {}

        def ours() -> None:
            last["ours"] = _prdc_values(*prdc(real_dev, fake_dev, k=PRDC_K))

        contenders = [Contender("percep_lightning prdc", OURS, ours, lambda: last["ours"])]
        if not peers:
            return contenders
        from prdc import compute_prdc

        for label, (r, f) in {
            "float32": (real.numpy(), fake.numpy()),  # the dtype prdc documents
            "float64": (real.double().numpy(), fake.double().numpy()),
        }.items():

            def peer(r=r, f=f, label=label) -> None:
                with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
                    last[label] = _prdc_values(**compute_prdc(r, f, nearest_k=PRDC_K))

            name = f"prdc 0.2 compute_prdc ({label} features)"
            contenders.append(Contender(name, PEER, peer, lambda label=label: last[label]))
        return contenders

    return build


# ----------------------------------------------------------------------------------------------- CMMD


def reference_cmmd(x: Tensor, y: Tensor, sigma: float = 10.0, scale: float = 1000.0) -> Tensor:
    """The reference ``distance.mmd`` written out in torch: three full float64 kernel matrices."""
    x, y = x.double(), y.double()
    x_sq, y_sq = torch.diag(x @ x.T), torch.diag(y @ y.T)
    gamma = 1 / (2 * sigma**2)
    k_xx = torch.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])).mean()
    k_xy = torch.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])).mean()
    k_yy = torch.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])).mean()
    return scale * (k_xx + k_yy - 2 * k_xy)


def build_cmmd(samples: int, dim: int, *, peers: bool) -> Callable[[Env], list[Contender]]:
    def build(env: Env) -> list[Contender]:
        from percep_lightning.functional import cmmd

        def embeddings(seed: int, shift: float = 0.0) -> Tensor:
            x = manifold_features(samples, dim, seed, shift)
            return torch.nn.functional.normalize(x, dim=1).to(env.device)

        x, y = embeddings(1), embeddings(2, shift=0.5)
        last: dict[str, list[Tensor]] = {}

        def ours() -> None:
            last["ours"] = [cmmd(x, y)]

        def full() -> None:
            last["full"] = [reference_cmmd(x, y)]

        contenders = [Contender("percep_lightning cmmd", OURS, ours, lambda: last["ours"])]
        if peers:
            name = "reference formula, full float64 matrices (torch)"
            contenders.append(Contender(name, PEER, full, lambda: last["full"]))
        return contenders

    return build


def distribution_benches(cfg: Config) -> list[Bench]:
    n, d, big = cfg.prdc_samples, cfg.prdc_dim, cfg.prdc_large
    m, e, large = cfg.cmmd_samples, cfg.cmmd_dim, cfg.cmmd_large
    return [
        Bench(
            "prdc", f"PRDC, {d}-d", f"{n} real + {n} generated float32 features, k={PRDC_K}",
            build_prdc(n, d, peers=True), reps=cfg.reps_heavy, warmup=0, rtol=(1e-3,), memory=True, variants=False,
            targets=(Target(f"PRDC <= {PRDC_TARGET}x fastest compute_prdc", "fastest peer", PRDC_TARGET),),
        ),
        Bench(
            "prdc_large", f"PRDC, {d}-d, large", f"{big} real + {big} generated float32 features, k={PRDC_K} "
            f"(ours only: compute_prdc would hold three {big}x{big} distance matrices, {big * big * 4 / 2**30:.1f} "
            "GiB each in float32)", build_prdc(big, d, peers=False), reps=1,
            warmup=0, memory=True, check=False, variants=False,
        ),
        Bench(
            "cmmd", f"CMMD, {e}-d", f"{m} + {m} L2-normalised float32 embeddings, sigma 10, scale 1000",
            build_cmmd(m, e, peers=True), reps=cfg.reps_heavy, warmup=0, rtol=(1e-6,), memory=True, variants=False,
        ),
        Bench(
            "cmmd_large", f"CMMD, {e}-d, large", f"{large} + {large} L2-normalised float32 embeddings (ours only: "
            f"the full-matrix formula holds {large}x{large} float64 matrices, {large * large * 8 / 2**30:.1f} GiB "
            "each)", build_cmmd(large, e, peers=False), reps=1,
            warmup=0, memory=True, check=False, variants=False,
        ),
    ]  # fmt: skip
