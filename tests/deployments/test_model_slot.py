"""The model replicas' health check (`ModelSlot.check_forward`) on a real checkpoint, and which
`model_uri` a replica serves when the environment overrides it."""

import asyncio
import logging

import pytest
import torch

from deployments.model_slot import ModelSlot, ModelUnhealthy, resolve_model_uri
from tests.conftest import make_checkpoint


@pytest.fixture
def slot(tmp_path) -> ModelSlot:
    slot = ModelSlot("primary", "cpu")
    path = make_checkpoint(tmp_path / "m.safetensors", "slot-test", seed=5)
    assert asyncio.run(slot.load(str(path)))
    return slot


def test_a_working_model_passes_and_a_slot_without_one_is_healthy(slot):
    asyncio.run(slot.check_forward())
    empty = ModelSlot("shadow", "cpu")  # a Shadow without model_uri
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


def test_the_environment_override_wins_and_says_what_it_ignores(caplog):
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        assert resolve_model_uri("primary", "a.safetensors", None) == "a.safetensors"
        assert resolve_model_uri("primary", "a.safetensors", "env.safetensors") == "env.safetensors"
        assert resolve_model_uri("shadow", None, None) is None
    messages = [record.getMessage() for record in caplog.records]
    assert "primary model_uri from user_config: a.safetensors" in messages
    assert (
        "primary model_uri from the environment: env.safetensors "
        "(user_config's a.safetensors is ignored)"
    ) in messages
    assert caplog.records[1].levelno == logging.WARNING


def test_a_gpu_that_torch_cannot_use_serves_on_the_cpu_and_says_so(tmp_path, caplog):
    """Ray gives a replica a GPU from the resources a node declares; where torch finds no CUDA
    (this machine has none) the model is loaded on the CPU instead of failing the replica."""
    assert not torch.cuda.is_available()
    slot = ModelSlot("primary", "cuda")
    path = make_checkpoint(tmp_path / "m.safetensors", "no-cuda", seed=6)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert asyncio.run(slot.load(str(path)))
    assert slot.current.device == slot.device == "cpu"
    assert "torch finds no CUDA" in caplog.text
    asyncio.run(slot.check_forward())
    caplog.clear()  # a reload stays on the CPU without asking CUDA again
    other = make_checkpoint(tmp_path / "n.safetensors", "no-cuda-2", seed=7)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert asyncio.run(slot.load(str(other)))
    assert slot.current.device == "cpu" and "torch finds no CUDA" not in caplog.text
