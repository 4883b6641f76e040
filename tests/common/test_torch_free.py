"""What an Ingress replica imports from common/ pulls in no model stack (torch, timm, captum,
matplotlib): checked in a fresh interpreter, where nothing else imported them first."""

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


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_no_model_stack(module):
    code = (
        f"import json, sys; import {module}; "
        f"print(json.dumps(sorted(m for m in {MODEL_STACK!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []
