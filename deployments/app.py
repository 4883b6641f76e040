"""The application's wiring: `build_app` is the `import_path` of `serve_config.yaml`.

Deployment options and `user_config` live in `serve_config.yaml`; this file only says which
deployment talks to which.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from ray.serve import Application

from deployments.classifier import Classifier
from deployments.ingress import Ingress
from deployments.preprocessor import Preprocessor

__all__ = ["AppArgs", "build_app"]


class AppArgs(BaseModel):
    """The `args` of `serve_config.yaml` (none yet; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")


def build_app(args: dict | AppArgs | None = None) -> Application:
    AppArgs.model_validate(args or {}) if not isinstance(args, AppArgs) else args
    return Ingress.bind(Preprocessor.bind(), Classifier.bind())
