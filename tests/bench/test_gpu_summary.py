"""bench.gpu_summary's tables from a GPU run's JSON files, without a GPU."""

import json

from bench.gpu_summary import summarise


def _limit_table(markdown: str) -> list[str]:
    start = markdown.index("| limit part")
    return markdown[start:].split("\n\n")[0].splitlines()


def test_the_limit_table_has_a_column_per_precision_measured(tmp_path):
    # a T4's run: its policy is fp16 (common.inference.cuda_autocast_dtype), so bf16 is absent
    limit = {
        "images_per_s": 100.0,
        "bound_by": "decode",
        "decode": {"processes": 3, "images_per_s": 100.0},
        "forward": {"fp16": {"1": 50.0, "8": 400.0}, "fp32": {"1": 40.0, "8": 300.0}},
        "served_precision": "fp16",
        "best_batch_size": 8,
        "forward_images_per_s": 400.0,
    }
    (tmp_path / "limit.json").write_text(json.dumps(limit))
    table = _limit_table(summarise(tmp_path)["markdown"])
    assert table[0] == "| limit part | batch | fp16 images/s | fp32 images/s |"
    assert "| forward | 8 | 400.0 | 300.0 |" in table
    assert table[-1] == "| **limit** (decode-bound, fp16) | 8 | **100.0** | |"
    assert all(row.count("|") == 5 for row in table)  # every row has the header's four cells


def test_an_unmeasured_limit_keeps_the_table_shape(tmp_path):
    table = _limit_table(summarise(tmp_path)["markdown"])
    assert table[0] == "| limit part | batch | bf16 images/s | fp32 images/s |"
    assert table[-1] == "| not measured | | | |"
