"""The Classifier's and the Explainer's `user_config` models: strict types, ranges, unknown keys,
each refusal naming its key (what `serve deploy` reports)."""

import pydantic
import pytest

from deployments.classifier import ClassifierConfig
from deployments.explainer import ExplainerConfig


@pytest.mark.parametrize(
    ("config_class", "raw", "key"),
    [
        (ClassifierConfig, {"max_batch_size": "16"}, "max_batch_size"),  # a str is not an int
        (ClassifierConfig, {"max_batch_size": 16.0}, "max_batch_size"),  # nor is a float
        (ClassifierConfig, {"inject_failure": "false"}, "inject_failure"),  # nor a str a bool
        (ClassifierConfig, {"inject_failure": 0}, "inject_failure"),
        (ClassifierConfig, {"batch_wait_timeout_s": "0.01"}, "batch_wait_timeout_s"),
        (ClassifierConfig, {"model_uri": 3}, "model_uri"),
        (ClassifierConfig, {"max_batch_size": 0}, "max_batch_size"),
        (ClassifierConfig, {"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s"),
        (ClassifierConfig, {"threshold": 1.0}, "threshold"),
        (ClassifierConfig, {"threshold": 0}, "threshold"),
        (ClassifierConfig, {"max_batch_sise": 8}, "max_batch_sise"),  # a typo is refused
        (ExplainerConfig, {"jpeg_quality": "85"}, "jpeg_quality"),
        (ExplainerConfig, {"jpeg_quality": 101}, "jpeg_quality"),
        (ExplainerConfig, {"heatmap_opacity": 1.5}, "heatmap_opacity"),
        (ExplainerConfig, {"overlay_max_side": 8}, "overlay_max_side"),
        (ExplainerConfig, {"colormap": "no-such-map"}, "colormap"),
        (ExplainerConfig, {"colour_map": "jet"}, "colour_map"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_key(config_class, raw, key):
    with pytest.raises(pydantic.ValidationError) as error:
        config_class.model_validate(raw)
    (problem,) = error.value.errors()
    assert problem["loc"] == (key,)
    assert key in str(error.value)


def test_yaml_ints_are_accepted_for_floats():
    # YAML writes `batch_wait_timeout_s: 0` and `heatmap_opacity: 1` as ints
    config = ClassifierConfig.model_validate({"batch_wait_timeout_s": 0, "threshold": None})
    assert config.batch_wait_timeout_s == 0.0 and isinstance(config.batch_wait_timeout_s, float)
    assert ExplainerConfig.model_validate({"heatmap_opacity": 1}).heatmap_opacity == 1.0


def test_configs_are_frozen_and_default_when_empty():
    config = ClassifierConfig.model_validate({})
    assert config == ClassifierConfig()
    assert (config.max_batch_size, config.threshold, config.model_uri) == (16, None, None)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.max_batch_size = 4
    assert ExplainerConfig.model_validate({}).colormap == "jet"
