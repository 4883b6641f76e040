"""The checkpoint format: one safetensors file whose header carries the model's metadata.

Training writes it, serving reads it. A checkpoint is addressed by a URI: a local path, `gs://…`
(through gcsfs), or an MLflow model URI (`models:/name/version`, `runs:/id/path`). Loading parses
the safetensors header itself and never unpickles anything: a `torch.save` pickle is refused.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from common.calibration import check as check_calibration
from common.model import ARCHITECTURE, HEAD_DROPOUT, HEAD_HIDDEN, PhotoClassifier, build_model
from common.rules import DEFAULT_THRESHOLD

__all__ = [
    "CHECKPOINT_FILENAME",
    "CheckpointError",
    "ModelMeta",
    "load_checkpoint",
    "read_checkpoint_bytes",
    "save_checkpoint",
]

CHECKPOINT_FILENAME = "model.safetensors"
_META_KEY = "product_photo_detector"  # key of our JSON in the safetensors __metadata__
_MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own cap on the JSON header


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, is not safetensors, or does not fit the model."""


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild, feed and judge the model (timm's PretrainedCfg idea)."""

    architecture: str = ARCHITECTURE
    image_size: int = 224  # px, square input side
    mean: tuple[float, float, float] = IMAGENET_DEFAULT_MEAN
    std: tuple[float, float, float] = IMAGENET_DEFAULT_STD
    head_hidden: int = HEAD_HIDDEN
    dropout: float = HEAD_DROPOUT
    threshold: float = DEFAULT_THRESHOLD  # decision threshold on P(AI-generated)
    version: str = "untrained"
    data_fingerprint: str = ""  # hash of the training data's file list and contents
    metrics: dict[str, float] = field(default_factory=dict)  # held-out: clean and robustness
    # how logits become probabilities (common.calibration); empty: identity, sigmoid(logit)
    calibration: dict[str, Any] = field(default_factory=dict)
    drift_baseline: dict[str, float] = field(default_factory=dict)  # for the DriftMonitor
    train_config: dict[str, Any] = field(default_factory=dict)  # the resolved training config
    # where the backbone's starting weights came from (common.pretrained): spec, source, sha256
    pretrained: dict[str, str] = field(default_factory=dict)
    created_at: str = ""  # ISO 8601, UTC

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise CheckpointError(f"unknown checkpoint metadata keys: {unknown}")
        for key in ("mean", "std"):
            if key in raw:
                raw[key] = tuple(raw[key])
        try:
            check_calibration(raw.get("calibration") or {})
        except ValueError as exc:
            raise CheckpointError(f"checkpoint metadata: {exc}") from None
        return cls(**raw)


def save_checkpoint(model: PhotoClassifier, meta: ModelMeta, uri: str | Path) -> str:
    """Write weights and metadata to `uri` (a local path or `gs://…`); returns the URI."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = save_tensors(state, metadata={"format": "pt", _META_KEY: meta.to_json()})
    uri = str(uri)
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    with fsspec.open(uri, "wb") as f:
        f.write(payload)
    return uri


def load_checkpoint(
    uri: str | Path, device: torch.device | str = "cpu"
) -> tuple[PhotoClassifier, ModelMeta]:
    """The model (in eval mode, on `device`) and its metadata from a checkpoint URI."""
    data = read_checkpoint_bytes(str(uri))
    meta = _read_meta(data)
    model = build_model(meta.architecture, hidden=meta.head_hidden, dropout=meta.dropout)
    try:
        model.load_state_dict(load_tensors(data), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{uri}: weights do not fit {meta.architecture}: {exc}") from None
    return model.to(device).eval(), meta


def read_checkpoint_bytes(uri: str) -> bytes:
    """The raw safetensors bytes behind a URI, checked to be safetensors before anything else."""
    if uri.startswith(_MLFLOW_SCHEMES):
        data = _read_mlflow(uri)
    else:
        path = uri if "://" in uri else str(Path(uri).expanduser())
        fs, fs_path = fsspec.core.url_to_fs(path)
        if fs.isdir(fs_path):
            fs_path = f"{fs_path.rstrip('/')}/{CHECKPOINT_FILENAME}"
        if not fs.exists(fs_path):
            raise CheckpointError(f"no checkpoint at {uri}")
        with fs.open(fs_path, "rb") as f:
            data = f.read()
    _check_safetensors(data, uri)
    return data


def _read_mlflow(uri: str) -> bytes:
    import mlflow  # imported here: only MLflow URIs need it, and it is slow to import

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as exc:  # MLflow raises several unrelated types for "not found"
            raise CheckpointError(f"cannot fetch {uri} from MLflow: {exc}") from None
        files = [local] if local.is_file() else sorted(local.rglob("*.safetensors"))
        if len(files) != 1:
            raise CheckpointError(f"{uri} holds {len(files)} .safetensors files; expected one")
        return files[0].read_bytes()


def _check_safetensors(data: bytes, uri: str) -> None:
    # The structure decides, not a magic byte: a safetensors header of 0x..80 bytes starts with
    # 0x80 like a pickle, and one of 0x..4b50 bytes with "PK" like a torch.save zip.
    header_len = struct.unpack("<Q", data[:8])[0] if len(data) >= 10 else -1
    if 0 < header_len <= min(_MAX_HEADER_BYTES, len(data) - 8) and data[8:9] == b"{":
        return
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise CheckpointError(
            f"{uri} is a pickled (torch.save) checkpoint; only safetensors files are loaded"
        )
    if len(data) < 10:
        raise CheckpointError(f"{uri} is not a safetensors file (too short)")
    raise CheckpointError(f"{uri} is not a safetensors file")


def _read_meta(data: bytes) -> ModelMeta:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    text = header.get("__metadata__", {}).get(_META_KEY)
    if text is None:
        raise CheckpointError("the safetensors file carries no Product Photo Detector metadata")
    return ModelMeta.from_json(text)
