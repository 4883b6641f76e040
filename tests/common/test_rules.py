import numpy as np
import pytest
import torch

from common.rules import AI_GENERATED, REAL, confidence_for, is_ai_generated, label_for


@pytest.mark.parametrize(
    ("probability", "threshold", "expected"),
    [
        (0.5, 0.5, AI_GENERATED),
        (0.4999, 0.5, REAL),
        (0.0, 0.5, REAL),
        (1.0, 0.5, AI_GENERATED),
        (0.69, 0.7, REAL),
        (0.7, 0.7, AI_GENERATED),
    ],
)
def test_label_is_ai_generated_at_or_above_threshold(probability, threshold, expected):
    assert label_for(probability, threshold) == expected


def test_the_rule_judges_arrays_and_tensors_elementwise_like_label_for():
    probabilities = [0.0, 0.4999, 0.5, 0.69, 0.7, 1.0]
    for threshold in (0.5, 0.7):
        expected = [label_for(p, threshold) == AI_GENERATED for p in probabilities]
        assert is_ai_generated(np.asarray(probabilities), threshold).tolist() == expected
        as_tensor = torch.tensor(probabilities, dtype=torch.float64)
        assert is_ai_generated(as_tensor, threshold).tolist() == expected


@pytest.mark.parametrize(
    ("probability", "expected"),
    [
        (0.5, "low"),
        (0.69, "low"),
        (0.31, "low"),
        (0.7, "medium"),
        (0.3, "medium"),
        (0.8, "medium"),
        (0.2, "medium"),
        (0.81, "high"),
        (0.19, "high"),
        (0.0, "high"),
        (1.0, "high"),
    ],
)
def test_confidence_bands_by_distance_from_one_half(probability, expected):
    assert confidence_for(probability) == expected
