"""What an Ingress replica imports from common/ pulls in no model stack (torch, timm, captum,
matplotlib), and neither does the application build (`serve run` imports deployments.app to bind
the graph) nor a Shadow without a model: checked in a fresh interpreter, where nothing else
imported them first."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

MODEL_STACK = ("torch", "timm", "captum", "matplotlib", "torchvision")
# the common/ modules the Ingress, the Preprocessor and the small deployments use
TORCH_FREE = (
    "common.answers", "common.image", "common.rules", "common.drift", "common.config",
    "common.settings",
)  # fmt: skip


def _model_stack_after(code: str) -> list[str]:
    code += f"; print(json.dumps(sorted(m for m in {MODEL_STACK!r} if m in sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", f"import json, sys; {code}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_no_model_stack(module):
    assert _model_stack_after(f"import {module}") == []


def test_the_app_build_and_a_slot_without_a_model_import_no_model_stack():
    # the build was 12 s of imports here (torch, timm, captum) before the replicas could start
    build = "from deployments.app import AppArgs, build_app; build_app(AppArgs())"
    shadow = (
        "import asyncio; from deployments.model_slot import ModelSlot; "
        "slot = ModelSlot('shadow', 'cpu'); asyncio.run(slot.load(None)); "
        "asyncio.run(slot.check_forward())"
    )
    assert _model_stack_after(f"{build}; {shadow}") == []
