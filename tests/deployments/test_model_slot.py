"""The model replicas' health check (`ModelSlot.check_forward`) on a real checkpoint."""

import asyncio

import pytest
import torch

from deployments.model_slot import ModelSlot, ModelUnhealthy
from tests.conftest import make_checkpoint


@pytest.fixture
def slot(tmp_path) -> ModelSlot:
    slot = ModelSlot("primary", torch.device("cpu"))
    path = make_checkpoint(tmp_path / "m.safetensors", "slot-test", seed=5)
    assert asyncio.run(slot.load(str(path)))
    return slot


def test_a_working_model_passes_and_a_slot_without_one_is_healthy(slot):
    asyncio.run(slot.check_forward())
    empty = ModelSlot("shadow", torch.device("cpu"))  # a Shadow without model_uri
    asyncio.run(empty.check_forward())


def test_a_model_that_cannot_run_a_forward_pass_fails_the_check(slot):
    head = slot.current.model.head[0]
    head.weight = torch.nn.Parameter(torch.zeros(3, 3))  # wrong shape: the forward raises
    with pytest.raises(ModelUnhealthy, match="slot-test cannot run a forward pass"):
        asyncio.run(slot.check_forward())


def test_a_model_answering_nan_fails_the_check(slot):
    with torch.no_grad():
        slot.current.model.head[-1].bias.fill_(float("nan"))
    with pytest.raises(ModelUnhealthy, match="answers p=nan"):
        asyncio.run(slot.check_forward())
