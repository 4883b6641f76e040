from pathlib import Path

import pytest

from train.demo_data import DemoConfig, build_demo_dataset

TINY_DEMO = DemoConfig(seed=3, size=32, train_per_class=12, test_per_class=6, generator_steps=5)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo data set in CIFAKE layout (real crops vs generator output)."""
    out = tmp_path_factory.mktemp("data") / "demo"
    build_demo_dataset(out, TINY_DEMO)
    return out
