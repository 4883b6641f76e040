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


def test_a_header_length_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    model = build_model()
    for n in range(300):  # a version string that makes the header length 0x80 modulo 256
        path = save_checkpoint(model, ModelMeta(version="v" * n), tmp_path / "m.safetensors")
        data = (tmp_path / "m.safetensors").read_bytes()
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    assert load_checkpoint(path)[1].version == "v" * n
