"""The per-epoch validation: the serving forward pass and the serving rule, with the threshold."""

import dataclasses

import numpy as np
import pytest
import torch

from common.checkpoint import load_checkpoint
from common.image import prepare_image
from common.inference import forward_probabilities
from common.rules import AI_GENERATED, label_for
from tests.conftest import TEST_IMAGE_SIZE, make_checkpoint
from tests.images import image_bytes
from train.config import TrainConfig
from train.loop import EpochContext, lr_scheduler, validate


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("loop") / "m.safetensors", "loop", seed=6)
    return load_checkpoint(path)


def _context(model, meta) -> EpochContext:
    cfg = TrainConfig(image_size=TEST_IMAGE_SIZE, epochs=1, warmup_epochs=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    return EpochContext(
        model=model, optimizer=optimizer, scheduler=lr_scheduler(optimizer, cfg, 1),
        scaler=torch.amp.GradScaler("cuda", enabled=False), loss_fn=torch.nn.BCEWithLogitsLoss(),
        meta=meta, device=torch.device("cpu"), cfg=cfg, state={"step": 0},
    )  # fmt: skip


def test_validation_labels_with_the_serving_rule_at_the_checkpoints_threshold(checkpoint):
    model, meta = checkpoint
    pixels = np.stack([prepare_image(image_bytes(i), TEST_IMAGE_SIZE).pixels for i in range(8)])
    probabilities = sorted(forward_probabilities(model, meta, pixels).tolist())
    assert len(set(probabilities)) == 8
    # a threshold equal to one image's probability (`>=` calls that image AI-generated), and
    # one that judges otherwise than the sign of the logit would
    above_half = sum(p > 0.5 for p in probabilities)
    k = 5 if above_half != 3 else 4
    threshold = probabilities[k]
    meta = dataclasses.replace(meta, threshold=threshold)
    labels = torch.ones(8)  # all AI-generated: accuracy is the share judged AI-generated
    loader = [(torch.from_numpy(pixels), labels)]

    metrics = validate(_context(model, meta), loader)

    judged = sum(label_for(p, threshold) == AI_GENERATED for p in probabilities)
    assert judged == 8 - k != above_half
    assert metrics["val_accuracy"] == pytest.approx(judged / 8)
    assert metrics["val_f1"] == pytest.approx(2 * judged / (2 * judged + 8 - judged))
