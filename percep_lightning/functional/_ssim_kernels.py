"""The SSIM kernels: separable Gaussian filtering in the channels-last layout, the five local statistics,
and the closed-form gradient of the SSIM and contrast-structure maps (a custom autograd function whose double
backward recomputes the forward with differentiable operations). Used by :mod:`percep_lightning.functional.ssim`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------------------------------------
# Filtering. A depthwise convolution in channels-last layout vectorises over channels and is several times
# faster on the CPU than in the default layout; the result is returned in the default layout, where the
# element-wise maths on its channel slices runs over contiguous rows.


def _filter_valid(x: Tensor, window: Tensor) -> Tensor:
    """Separable "valid" Gaussian filtering of every channel: ``(N, C, H, W) -> (N, C, H-k+1, W-k+1)``."""
    return _separable_conv(x, window.to(dtype=x.dtype), padding=0)


def _filter_adjoint(x: Tensor, window: Tensor) -> Tensor:
    """The adjoint of :func:`_filter_valid` ("full" correlation with the flipped window), for gradients."""
    return _separable_conv(x, window.to(dtype=x.dtype).flip(0), padding=window.numel() - 1)


def _separable_conv(x: Tensor, w: Tensor, padding: int) -> Tensor:
    """Correlate every channel of ``x`` with ``w`` along the width, then along the height."""
    batch, channels, height, width = x.shape
    k = w.numel()
    if x.dtype == torch.float64:
        # no oneDNN kernel for float64: one single-channel convolution over all maps beats a grouped one,
        # which the CPU backend runs group by group
        out = F.conv2d(
            x.reshape(batch * channels, 1, height, width), w.view(1, 1, 1, k), padding=(0, padding)
        )
        out = F.conv2d(out, w.view(1, 1, k, 1), padding=(padding, 0))
        return out.view(batch, channels, *out.shape[-2:])
    weight = w.view(1, 1, 1, k).expand(channels, 1, 1, k).contiguous()
    out = F.conv2d(
        x.contiguous(memory_format=torch.channels_last), weight, groups=channels, padding=(0, padding)
    )
    out = F.conv2d(out, weight.view(channels, 1, k, 1), groups=channels, padding=(padding, 0))
    return out.contiguous()


# ---------------------------------------------------------------------------------------------------------
# SSIM and contrast-structure per channel.


def _ssim_maps(preds: Tensor, target: Tensor, window: Tensor, c1: float, c2: float) -> tuple[Tensor, ...]:
    """The local statistics and the SSIM factors, without autograd bookkeeping.

    Returns ``(mu1, mu2, luminance, cs, b1, b2)`` where ``luminance = a1 / b1`` and ``cs = a2 / b2`` with
    ``a1 = 2 mu1 mu2 + c1``, ``b1 = mu1^2 + mu2^2 + c1``, ``a2 = 2 sigma12 + c2``,
    ``b2 = sigma1^2 + sigma2^2 + c2``; all maps are ``(N, C, H', W')``.
    """
    channels = preds.shape[1]
    stats = _filter_valid(
        torch.cat((preds, target, preds * preds, target * target, preds * target), dim=1), window
    )
    mu1, mu2, e11, e22, e12 = stats.split(channels, dim=1)
    mu12 = mu1 * mu2
    mu_sq = torch.addcmul(mu1 * mu1, mu2, mu2)  # mu1^2 + mu2^2
    b1 = mu_sq + c1
    luminance = torch.add(mu12, c1 / 2).mul_(2).div_(b1)  # (2 mu1 mu2 + c1) / b1
    b2 = (e11 + e22).sub_(mu_sq).add_(c2)
    cs = (e12 - mu12).mul_(2).add_(c2).div_(b2)
    return mu1, mu2, luminance, cs, b1, b2


class SSIMFunction(torch.autograd.Function):
    """Per-channel SSIM and contrast-structure means, ``(N, C)`` each, with a closed-form gradient.

    With ``w_s`` and ``w_c`` the incoming gradients divided by the map size, ``L`` the luminance map,
    ``S = L * CS`` and ``G^T`` the adjoint filter, the gradients of the filtered statistics are
    ``q = (w_s L + w_c) / b2``, ``d e12 = 2 q``, ``d e11 = d e22 = -CS q``,
    ``d mu1 = 2 w_s CS (mu2 - L mu1) / b1 + 2 q (CS mu1 - mu2)`` (and symmetrically ``d mu2``), and
    ``d preds = G^T d mu1 + 2 preds G^T d e11 + target G^T d e12``.
    """

    @staticmethod
    def forward(
        ctx, preds: Tensor, target: Tensor, window: Tensor, c1: float, c2: float
    ) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        mu1, mu2, luminance, cs, b1, b2 = _ssim_maps(preds, target, window, c1, c2)
        ssim_per_channel = (luminance * cs).mean(dim=(-2, -1))
        cs_per_channel = cs.mean(dim=(-2, -1))
        ctx.save_for_backward(preds, target, window, mu1, mu2, luminance, cs, b1, b2)
        ctx.constants = (c1, c2)
        ctx.set_materialize_grads(False)
        return ssim_per_channel, cs_per_channel

    @staticmethod
    def backward(ctx, grad_ssim: Tensor | None, grad_cs: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        preds, target, window, mu1, mu2, luminance, cs, b1, b2 = ctx.saved_tensors
        need_preds, need_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_ssim is None and grad_cs is None) or not (need_preds or need_target):
            return None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain implementation instead
            return _double_backward(ctx, grad_ssim, grad_cs)

        size = mu1.shape[-2] * mu1.shape[-1]
        w_ssim = None if grad_ssim is None else (grad_ssim / size)[..., None, None]
        w_cs = None if grad_cs is None else (grad_cs / size)[..., None, None]
        # q = (w_s L + w_c) / b2
        if w_ssim is None:
            q = w_cs / b2
        else:
            q = luminance * w_ssim
            if w_cs is not None:
                q.add_(w_cs)
            q.div_(b2)
        # gradient maps of the filtered statistics, stacked for one adjoint filtering pass
        channels = preds.shape[1]
        n_maps = 3 + int(need_target)
        grads = mu1.new_empty((mu1.shape[0], n_maps * channels, *mu1.shape[-2:]))
        g_mu1, g_e, g_e12 = (
            grads[:, :channels],
            grads[:, channels : 2 * channels],
            grads[:, 2 * channels : 3 * channels],
        )
        torch.mul(q, 2.0, out=g_e12)
        torch.mul(cs, q, out=g_e).neg_()
        qcs = cs * q
        torch.mul(qcs, mu1, out=g_mu1).sub_(q * mu2)  # q (CS mu1 - mu2)
        if need_target:
            g_mu2 = grads[:, 3 * channels :]
            torch.mul(qcs, mu2, out=g_mu2).sub_(q * mu1)
        if w_ssim is not None:
            t1 = (cs * w_ssim).div_(b1)  # w_s CS / b1
            g_mu1.addcmul_(t1, torch.addcmul(mu2, luminance, mu1, value=-1.0))
            if need_target:
                g_mu2.addcmul_(t1, torch.addcmul(mu1, luminance, mu2, value=-1.0))
        g_mu1.mul_(2.0)
        if need_target:
            g_mu2.mul_(2.0)

        back = _filter_adjoint(grads, window).split(channels, dim=1)
        grad_preds = grad_target = None
        if need_preds:  # G^T d mu1 + 2 preds G^T d e11 + target G^T d e12
            grad_preds = torch.addcmul(back[0], preds, back[1], value=2.0).addcmul_(target, back[2])
        if need_target:
            grad_target = torch.addcmul(back[3], target, back[1], value=2.0).addcmul_(preds, back[2])
        return grad_preds, grad_target, None, None, None


def ssim_and_cs_reference(
    preds: Tensor, target: Tensor, window: Tensor, c1: float, c2: float
) -> tuple[Tensor, Tensor]:
    """The same values as :class:`SSIMFunction`, through ordinary differentiable operations."""
    ssim_map, cs = ssim_and_cs_maps(preds, target, window, c1, c2)
    return ssim_map.mean(dim=(-2, -1)), cs.mean(dim=(-2, -1))


def ssim_and_cs_maps(
    preds: Tensor, target: Tensor, window: Tensor, c1: float, c2: float
) -> tuple[Tensor, Tensor]:
    """The SSIM and contrast-structure maps ``(N, C, H', W')``, through ordinary differentiable operations."""
    channels = preds.shape[1]
    stats = _filter_valid(
        torch.cat((preds, target, preds * preds, target * target, preds * target), dim=1), window
    )
    mu1, mu2, e11, e22, e12 = stats.split(channels, dim=1)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    cs = (2 * (e12 - mu12) + c2) / (e11 - mu11 + e22 - mu22 + c2)
    luminance = (2 * mu12 + c1) / (mu11 + mu22 + c1)
    return luminance * cs, cs


def _double_backward(ctx, grad_ssim: Tensor | None, grad_cs: Tensor | None) -> tuple[Tensor | None, ...]:
    """Backward with ``create_graph=True``: differentiate the plain implementation, keeping the graph."""
    preds, target, window = ctx.saved_tensors[:3]
    wrt = [t for t, need in zip((preds, target), ctx.needs_input_grad[:2], strict=True) if need]
    with torch.enable_grad():
        outputs = ssim_and_cs_reference(preds, target, window, *ctx.constants)
        pairs = [
            (out, grad) for out, grad in zip(outputs, (grad_ssim, grad_cs), strict=True) if grad is not None
        ]
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in pairs], wrt, [g for _, g in pairs], create_graph=True, allow_unused=True
            )
        )
    grad_preds = next(grads) if ctx.needs_input_grad[0] else None
    grad_target = next(grads) if ctx.needs_input_grad[1] else None
    return grad_preds, grad_target, None, None, None
