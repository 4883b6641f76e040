"""The application's wiring: `build_app` is the `import_path` of `serve_config.yaml`.

Deployment options and `user_config` live in `serve_config.yaml`; this file only says which
deployment talks to which. The Shadow is a second binding of the Classifier.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from ray.serve import Application

from deployments.classifier import Classifier
from deployments.drift import DriftMonitor
from deployments.explainer import Explainer
from deployments.ingress import Ingress
from deployments.preprocessor import Preprocessor
from deployments.rate_limit import RateLimiter

__all__ = ["AppArgs", "build_app"]


class AppArgs(BaseModel):
    """The `args` of `serve_config.yaml` (none yet; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")


def build_app(args: AppArgs) -> Application:
    return Ingress.bind(
        preprocessor=Preprocessor.bind(),
        classifier=Classifier.bind(role="primary"),
        shadow=Classifier.options(name="Shadow").bind(role="shadow"),
        explainer=Explainer.bind(),
        drift_monitor=DriftMonitor.bind(),
        rate_limiter=RateLimiter.bind(),
    )
