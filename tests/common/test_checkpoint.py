import json
import pickle

import pytest
import torch

from common.calibration import calibrated_probabilities
from common.checkpoint import CheckpointError, ModelMeta, load_checkpoint, save_checkpoint
from common.model import build_model


def _meta(**overrides) -> ModelMeta:
    return ModelMeta(
        image_size=48,
        threshold=0.42,
        version="v-test",
        data_fingerprint="abc",
        metrics={"accuracy": 0.9},
        **overrides,
    )


def test_round_trip_keeps_weights_and_metadata(tmp_path):
    model = build_model().eval()
    uri = save_checkpoint(model, _meta(), tmp_path / "m.safetensors")

    loaded, meta = load_checkpoint(uri)
    assert meta == _meta()
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not loaded.training


@pytest.mark.parametrize("first_bytes", [b"\x80", b"PK"])
def test_a_header_whose_length_looks_like_a_pickle_still_loads(tmp_path, first_bytes):
    """The header length is little-endian: 0x..80 bytes starts with the pickle opcode 0x80,
    0x..4b50 with a zip's "PK". Pad the metadata until the file starts that way."""
    path = tmp_path / "m.safetensors"
    model = build_model().eval()
    modulus = 256 ** len(first_bytes)
    target = int.from_bytes(first_bytes, "little")
    pad = 0
    for _ in range(8):  # safetensors pads its header to 8 bytes: a step or two more at most
        save_checkpoint(model, _meta(train_config={"pad": "x" * pad}), path)
        length = int.from_bytes(path.read_bytes()[:8], "little")
        if length % modulus == target:
            break
        pad += (target - length) % modulus
    assert path.read_bytes().startswith(first_bytes)
    _, meta = load_checkpoint(path)
    assert meta.train_config["pad"] == "x" * pad


def test_a_directory_uri_means_its_model_safetensors(tmp_path):
    save_checkpoint(build_model(), _meta(), tmp_path / "model.safetensors")
    _, meta = load_checkpoint(tmp_path)
    assert meta.version == "v-test"


def test_fsspec_uris_round_trip():
    # gs:// goes through the same fsspec calls (gcsfs); memory:// exercises them offline.
    uri = save_checkpoint(build_model(), _meta(), "memory://ckpt/model.safetensors")
    _, meta = load_checkpoint(uri)
    assert meta.image_size == 48


def test_a_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)


def test_a_raw_pickle_is_refused_without_being_unpickled(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)


def test_missing_and_foreign_files_get_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(junk)


def test_metadata_without_calibration_means_identity():
    old = json.loads(ModelMeta(version="old").to_json())
    del old["calibration"]  # written before the field existed
    meta = ModelMeta.from_json(json.dumps(old))
    assert meta.calibration == {}
    logits = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.equal(calibrated_probabilities(logits, meta), torch.sigmoid(logits))


def test_a_stored_temperature_divides_the_logits():
    meta = ModelMeta.from_json(
        ModelMeta(calibration={"method": "temperature", "temperature": 2.0}).to_json()
    )
    logits = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(calibrated_probabilities(logits, meta), torch.sigmoid(logits / 2))


@pytest.mark.parametrize(
    ("calibration", "message"),
    [({"method": "isotonic"}, "unknown calibration method 'isotonic'"),
     ({"method": "temperature", "temperature": 0}, "temperature must be a positive number")],
)  # fmt: skip
def test_an_unusable_calibration_is_refused_at_load(calibration, message):
    text = ModelMeta(calibration=calibration).to_json()
    with pytest.raises(CheckpointError, match=message):
        ModelMeta.from_json(text)
