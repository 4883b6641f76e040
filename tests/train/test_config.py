"""TrainConfig lives apart from the Ray Train loop: evaluation and export import no Ray Train."""

import json
import subprocess
import sys

from tests.conftest import ROOT

MODULES = ("train.config", "train.evaluate", "train.export")


def test_config_evaluation_and_export_import_no_ray_train():
    # One fresh interpreter for the three (each costs seconds of torch import): what none of
    # them pulls in, their union does not either.
    code = (
        f"import json, sys; import {', '.join(MODULES)}; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.startswith(('ray.train', 'ray.tune')))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == []
