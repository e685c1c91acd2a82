"""Resolving the ``weights`` argument of every module that owns a pretrained backbone.

Every loss and metric that runs a pretrained network takes the same argument:

* ``"default"``: the official pretrained file, read from the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``, the directory torchvision itself uses) or downloaded there once,
  with a progress bar. Offline and not cached, a :class:`WeightsUnavailableError` says which file is
  expected where, and the two ways out.
* a path to a local file in exactly the format of the official download (a torchvision model
  ``state_dict`` such as ``vgg19-dcbb9e9d.pth``, or the pytorch-fid / torch-fidelity Inception file),
  checked key by key and shape by shape; a ``*.safetensors`` file is read with safetensors.
* ``None``: random initialisation, with one warning that the numbers are not comparable to
  published ones.

Nothing is downloaded at import time; only building a module that needs a file fetches it.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from percep_lightning._atomic import create_temp

WeightsArg = str | os.PathLike | Mapping[str, Tensor] | None
"""What a ``weights`` argument accepts: ``"default"``, a file path, a state dict, or ``None``."""

_ENV_TIMEOUT = "PERCEP_LIGHTNING_DOWNLOAD_TIMEOUT"
_DEFAULT_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class WeightsSpec:
    """One official pretrained file.

    Attributes:
        name: the short name used by the CLI (``percep-lightning weights download NAME``).
        filename: the file's name in the cache: the official download's own name, or a distinctive one
            where that name is generic (``pytorch_model.bin``).
        url: where the official file is published.
        sha256_prefix: the leading hex digits of the file's SHA-256 (the suffix of ``filename``); empty
            when the publisher gives no digest, and then the download is not checked.
        description: what the weights are, for ``percep-lightning weights list``.
    """

    name: str
    filename: str
    url: str
    sha256_prefix: str
    description: str

    @property
    def cache_path(self) -> Path:
        """Where ``"default"`` looks for this file: torchvision's own checkpoint cache."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename


WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "dcbb9e9d",
            "torchvision VGG19 IMAGENET1K_V1 (VGG perceptual/style loss, CFSD)",
        ),
        WeightsSpec(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "397923af",
            "torchvision VGG16 IMAGENET1K_V1 (LPIPS net='vgg', DISTS, VGG perceptual arch='vgg16')",
        ),
        WeightsSpec(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "7be5be79",
            "torchvision AlexNet IMAGENET1K_V1 (LPIPS net='alex')",
        ),
        WeightsSpec(
            "squeezenet1_1",
            "squeezenet1_1-b8a52dc0.pth",
            "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
            "b8a52dc0",
            "torchvision SqueezeNet 1.1 IMAGENET1K_V1 (LPIPS net='squeeze')",
        ),
        WeightsSpec(
            "inception_fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "6726825d",
            "TensorFlow Inception 2015-12-05 ported to PyTorch (FID and Inception Score)",
        ),
        WeightsSpec(
            "dinov2_vits14",
            "dinov2_vits14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth",
            "",
            "DINOv2 ViT-S/14 backbone, LVD-142M",
        ),
        WeightsSpec(
            "dinov2_vitb14",
            "dinov2_vitb14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_pretrain.pth",
            "",
            "DINOv2 ViT-B/14 backbone, LVD-142M",
        ),
        WeightsSpec(
            "dinov2_vitl14",
            "dinov2_vitl14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
            "",
            "DINOv2 ViT-L/14 backbone, LVD-142M (FD-DINOv2, dgm-eval's default)",
        ),
        WeightsSpec(
            "dinov2_vitg14",
            "dinov2_vitg14_pretrain.pth",
            "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/dinov2_vitg14_pretrain.pth",
            "",
            "DINOv2 ViT-g/14 backbone, LVD-142M",
        ),
        WeightsSpec(
            "art_inception",
            "art_inception.pth",
            "https://huggingface.co/matthias-wright/art_inception/resolve/main/art_inception.pth",
            "",
            "Inception v3 trained on art (Wright & Ommer 2022; ArtFID, as StyleID evaluates it)",
        ),
        WeightsSpec(
            "clip_vit_l14_336",
            "clip-vit-large-patch14-336.bin",
            "https://huggingface.co/openai/clip-vit-large-patch14-336/resolve/main/pytorch_model.bin",
            "",
            "OpenAI CLIP ViT-L/14 at 336 px, transformers format, 1.7 GB (CMMD; the image tower is used)",
        ),
    )
}


class WeightsUnavailableError(RuntimeError):
    """The official pretrained file is neither cached nor downloadable."""


class MissingWeightsError(WeightsUnavailableError):
    """Several weights files a run needs are unavailable; :func:`fetch_all` lists every one in the message.

    Attributes:
        names: the names of the unavailable files, in the order they were asked for.
    """

    def __init__(self, message: str, names: Iterable[str]) -> None:
        super().__init__(message)
        self.names = tuple(names)


def _download(spec: WeightsSpec, destination: Path, timeout: float) -> None:
    """Stream ``spec.url`` into ``destination`` atomically, checking the SHA-256 prefix."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm  # a dependency of lightning and torchmetrics

    with urllib.request.urlopen(spec.url, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        total = int(response.headers.get("Content-Length") or 0) or None
        digest = hashlib.sha256()
        fd, tmp_name = create_temp(destination.parent, prefix=f".{spec.filename}.", suffix=".part")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=spec.filename) as bar,
            ):
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if not digest.hexdigest().startswith(spec.sha256_prefix):
                raise RuntimeError(
                    f"Downloaded {spec.url} but its SHA-256 {digest.hexdigest()[:16]}... does not start with "
                    f"{spec.sha256_prefix}; the file was discarded."
                )
            os.replace(tmp_name, destination)
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)


def fetch(name: str, *, timeout: float | None = None) -> Path:
    """Return the cached path of the official file ``name``, downloading it first if needed.

    Args:
        name: a key of :data:`WEIGHTS`.
        timeout: seconds to wait for the server; defaults to ``$PERCEP_LIGHTNING_DOWNLOAD_TIMEOUT`` or 20.

    Returns:
        The path of the file in the torch hub checkpoint cache.

    Raises:
        ValueError: if ``name`` is not a known weights name.
        WeightsUnavailableError: if the file is not cached and cannot be downloaded.
    """
    spec = get_spec(name)
    path = spec.cache_path
    err = _download_error(spec, timeout)
    if err is not None:
        raise WeightsUnavailableError(
            f"The pretrained weights '{name}' ({spec.filename}) are not in the cache and could not be "
            f"downloaded ({err}).\n"
            f"  expected file: {path}\n"
            f"  download URL:  {spec.url}\n"
            "Either fetch them once on a machine with network access with "
            f"`percep-lightning weights download {name}` (set TORCH_HOME to choose the cache) or copy the "
            f"file to the path above, or pass the path of a local copy as `weights=...`."
        ) from err
    return path


def _download_error(spec: WeightsSpec, timeout: float | None) -> Exception | None:
    """Make sure ``spec``'s file is in the cache (downloading it if needed); the error if that failed."""
    if spec.cache_path.is_file():
        return None
    if timeout is None:
        timeout = float(os.environ.get(_ENV_TIMEOUT, _DEFAULT_TIMEOUT_S))
    try:
        _download(spec, spec.cache_path, timeout)
    except (urllib.error.URLError, OSError, TimeoutError, RuntimeError) as err:
        return err
    return None


def fetch_all(
    names: Iterable[str],
    overrides: Mapping[str, str | os.PathLike[str] | None] | None = None,
    *,
    timeout: float | None = None,
    command_line: bool = False,
) -> dict[str, Path | None]:
    """Resolve every weights file a run needs, reporting all the unavailable ones in one error.

    A name with an entry in ``overrides`` uses that local file (``None``: random weights, nothing to
    fetch); any other name is the official file, from the cache or downloaded into it (as :func:`fetch`).
    Every name is tried before anything is raised, so an offline machine learns in one run which files
    it lacks.

    Args:
        names: keys of :data:`WEIGHTS` (repeats are resolved once).
        overrides: ``{name: path or None}`` for the files that do not come from the cache.
        timeout: seconds to wait for the server per file, as :func:`fetch`.
        command_line: word the message for ``percep-lightning`` (local copies as ``--weights NAME=PATH``)
            instead of the Python API (a module's ``weights=...`` argument).

    Returns:
        ``{name: path}`` for every name, ``None`` for random weights.

    Raises:
        ValueError: if a name (or a key of ``overrides``) is not a key of :data:`WEIGHTS`.
        MissingWeightsError: if any file is neither cached nor downloadable, or an override names no
            file; the message has one entry per file: its name, expected path and download URL (or the
            missing local path).

    Example:
        >>> fetch_all(["vgg19", "alexnet"], {"vgg19": None, "alexnet": None})
        {'vgg19': None, 'alexnet': None}
    """
    overrides = dict(overrides or {})
    wanted = list(dict.fromkeys(names))
    for name in (*wanted, *overrides):
        get_spec(name)
    resolved: dict[str, Path | None] = {}
    missing: dict[str, str] = {}
    for name in wanted:
        if name in overrides:
            local = overrides[name]
            resolved[name] = None if local is None else Path(local).expanduser()
            if resolved[name] is not None and not resolved[name].is_file():  # type: ignore[union-attr]
                missing[name] = f"  {name}: no file at {str(resolved[name])!r} (given as its local copy)"
            continue
        spec = WEIGHTS[name]
        err = _download_error(spec, timeout)
        resolved[name] = spec.cache_path
        if err is not None:
            missing[name] = (
                f"  {name}: expected at {spec.cache_path}\n"
                f"  {' ' * len(name)}  download: {spec.url} (failed: {err})"
            )
    if missing:
        raise MissingWeightsError(_missing_message(missing, overrides, command_line), missing)
    return resolved


def _missing_message(missing: Mapping[str, str], overrides: Mapping[str, object], command_line: bool) -> str:
    """The text of :class:`MissingWeightsError`: one entry per file, then the ways out, once."""
    official = [name for name in missing if name not in overrides]
    count = f"{len(missing)} weights file{'s' if len(missing) > 1 else ''}"
    lines = [
        f"{count} needed by this run {'are' if len(missing) > 1 else 'is'} unavailable:",
        *missing.values(),
    ]
    ways = []
    if official:
        ways.append(
            f"fetch the official files once on a machine with network access with `percep-lightning weights "
            f"download {' '.join(official)}` (TORCH_HOME chooses the cache) and copy them to the paths above"
        )
    if command_line:
        pairs = " ".join(f"{name}=PATH" for name in missing)
        ways.append(
            f"pass local copies as `--weights {pairs}` (or `NAME=random` for random weights, whose values "
            "are not comparable to published ones)"
        )
    else:
        ways.append("pass the path of a local copy as the module's `weights=...`")
    lines.append("Either " + ", or ".join(ways) + ".")
    lines.append("`percep-lightning weights list` shows which files the cache holds.")
    return "\n".join(lines)


def get_spec(name: str) -> WeightsSpec:
    """Return the :class:`WeightsSpec` called ``name``.

    Raises:
        ValueError: if ``name`` is unknown; the message lists the known names.
    """
    try:
        return WEIGHTS[name]
    except KeyError:
        raise ValueError(f"Unknown weights name {name!r}; expected one of {sorted(WEIGHTS)}.") from None


_warned_random: set[str] = set()


def resolve_state_dict(
    name: str | None, weights: WeightsArg, *, label: str | None = None
) -> tuple[dict[str, Tensor] | None, str]:
    """Turn a ``weights`` argument into a state dict for the official network ``name``.

    Args:
        name: the key of :data:`WEIGHTS` describing the network's official file, or ``None`` for a network
            that has none (a non-standard size of an official family): then ``"default"`` is an error.
        weights: ``"default"``, a path, a state dict, or ``None`` (see the module docstring).
        label: how the messages and the random-weights warning name the network (default: ``name``).

    Returns:
        ``(state_dict, source)``: the loaded tensors on CPU (``None`` for random initialisation) and a
        human-readable description of where they came from, used in error messages.

    Raises:
        ValueError: if ``weights`` is a number or a mapping whose values are not all tensors (a loss
            weight given where the backbone's weights belong), or ``"default"`` when ``name`` is ``None``.
        TypeError: if ``weights`` is of an unsupported type.
        FileNotFoundError: if a path is given and no file is there.
        RuntimeError: if the file cannot be read as a state dict.
        WeightsUnavailableError: if ``"default"`` is neither cached nor downloadable.
    """
    if name is not None:
        get_spec(name)
    label = label or name or "network"
    _reject_loss_weights(label, weights)
    if weights is None:
        if label not in _warned_random:
            _warned_random.add(label)
            warnings.warn(
                f"{label} backbone built with random weights (weights=None): its losses and metric values are "
                "not comparable to published numbers.",
                UserWarning,
                stacklevel=3,
            )
        return None, "random initialisation"
    if isinstance(weights, Mapping):
        return dict(weights), "the state dict passed as `weights`"
    if isinstance(weights, str) and weights == "default":
        if name is None:
            raise ValueError(
                f"{label} has no official weights file, so `weights='default'` means nothing for it; pass the "
                "path of a file in the official format, a state dict, or None for random weights."
            )
        path = fetch(name)
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Weights file for {label} not found: {path}")
    else:
        raise TypeError(
            f"Expected `weights` to be 'default', a path, a state dict or None, but got {type(weights).__name__}."
        )
    try:
        state = _read(path)
    except Exception as err:  # noqa: BLE001 (re-raised with the path)
        raise RuntimeError(f"Could not read weights file {path} for {label}: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise RuntimeError(f"Weights file {path} for {label} does not hold a state dict of tensors.")
    return dict(state), str(path)


def _read(path: Path) -> object:
    """The tensors of a weights file: ``torch.load`` (weights only), or safetensors for ``*.safetensors``."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # installed with transformers, whose models use it

        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _reject_loss_weights(name: str, weights: object) -> None:
    """Raise a ValueError when ``weights`` holds numbers: a loss weight put where the backbone's belongs."""
    if isinstance(weights, (bool, int, float)):
        got = f"the number {weights!r}"
    elif isinstance(weights, Mapping) and not all(isinstance(v, Tensor) for v in weights.values()):
        got = (
            "a mapping of "
            + ", ".join(sorted({type(v).__name__ for v in weights.values() if not isinstance(v, Tensor)}))
            + f" values ({_preview([f'{k}={v!r}' for k, v in weights.items()], 3)})"
        )
    else:
        return
    raise ValueError(
        f"Expected `weights` of the {name} backbone to be 'default', a file path, a state dict of tensors "
        f"or None, but got {got}. In a CompositeLoss config a term's loss weight is `weights.<term>`, "
        "its backbone file `terms.<term>.weights`."
    )


def check_state_dict(reference: nn.Module, state: Mapping[str, Tensor], source: str, name: str) -> None:
    """Check that ``state`` has exactly the keys and shapes of ``reference`` (strict loading).

    ``reference`` may live on the meta device: only its keys and shapes are read.

    Raises:
        RuntimeError: naming ``source`` and listing missing, unexpected and mis-shaped keys.
    """
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    check_state_shapes(expected, state, source, f"the official {name} format ({get_spec(name).filename})")


def check_state_shapes(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Tensor], source: str, format_name: str
) -> None:
    """Check that ``state`` has exactly the keys of ``expected``, each of the shape it gives (strict loading).

    Args:
        expected: ``{key: shape}`` of the format.
        state: the tensors to check.
        source: where they come from (a path, or a description), for the message.
        format_name: what the format is, for the message (``"the official vgg19 format (vgg19-dcbb9e9d.pth)"``).

    Raises:
        RuntimeError: naming ``source`` and listing missing, unexpected and mis-shaped keys.

    Example:
        >>> import torch
        >>> check_state_shapes({"w": (2,)}, {"w": torch.zeros(2)}, "memory", "a format")
    """
    got = {k: tuple(v.shape) for k, v in state.items()}
    # BatchNorm's batch counter is absent from files converted from TensorFlow; PyTorch fills it in.
    missing = sorted(k for k in set(expected) - set(got) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != got[k])
    if not (missing or unexpected or shapes):
        return
    lines = [f"Weights from {source} do not match {format_name}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_preview(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
    for key in shapes[:5]:
        lines.append(f"  shape of {key}: expected {tuple(expected[key])}, got {got[key]}")
    raise RuntimeError("\n".join(lines))


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (", ..." if len(keys) > limit else "")
