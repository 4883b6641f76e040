"""TrainConfig lives apart from the Ray Train loop: evaluation and export import no Ray Train."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("module", ["train.config", "train.evaluate", "train.export"])
def test_module_imports_no_ray_train(module):
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith(('ray.train', 'ray.tune')))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []
