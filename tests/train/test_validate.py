import json
import shutil
from pathlib import Path

import pytest

from train.validate import EXIT_INVALID_DATA, main, validate_dataset


@pytest.fixture
def dataset(tiny_demo, tmp_path) -> Path:
    """A private copy of the tiny demo set, to damage."""
    return Path(shutil.copytree(tiny_demo, tmp_path / "data"))


def _first(folder: Path) -> Path:
    return sorted(folder.glob("*.png"))[0]


def test_the_demo_set_passes_every_check(dataset):
    report = validate_dataset(str(dataset))
    assert report["passed"]
    assert report["files_checked"] == 36
    assert report["checks"]["class_balance"]["counts"]["train"] == {"REAL": 12, "FAKE": 12}
    assert report["checks"]["formats"]["counts"] == {"PNG": 36}
    assert report["checks"]["dimensions"]["sizes"] == {"32x32": 36}
    assert report["checks"]["structure"]["ignored"] == []


def test_a_corrupt_file_fails_decoding_and_is_named(dataset):
    victim = _first(dataset / "train" / "FAKE")
    victim.write_bytes(victim.read_bytes()[:60])  # a PNG cut short

    report = validate_dataset(str(dataset))
    assert not report["passed"]
    (failure,) = report["checks"]["decoding"]["failures"]
    assert failure["file"] == f"train/FAKE/{victim.name}"
    assert report["checks"]["duplicates"]["passed"]


def test_a_file_that_is_not_an_image_fails_the_format_check(dataset):
    victim = _first(dataset / "test" / "REAL")
    victim.write_bytes(b"GIF89a" + bytes(100))

    checks = validate_dataset(str(dataset))["checks"]
    assert [f["file"] for f in checks["formats"]["failures"]] == [f"test/REAL/{victim.name}"]


def test_a_test_image_also_in_train_is_a_duplicate_across_splits(dataset):
    source = _first(dataset / "train" / "REAL")
    shutil.copyfile(source, dataset / "test" / "REAL" / "leaked.png")

    duplicates = validate_dataset(str(dataset))["checks"]["duplicates"]
    assert not duplicates["passed"]
    assert duplicates["across_splits"] == [[f"train/REAL/{source.name}", "test/REAL/leaked.png"]]
    assert duplicates["within_split"] == []


def test_the_same_image_under_both_labels_conflicts(dataset):
    source = _first(dataset / "train" / "REAL")
    shutil.copyfile(source, dataset / "train" / "FAKE" / "relabelled.png")

    duplicates = validate_dataset(str(dataset))["checks"]["duplicates"]
    assert duplicates["conflicting_labels"] == [
        [f"train/REAL/{source.name}", "train/FAKE/relabelled.png"]
    ]


def test_an_empty_class_fails_the_balance_check_and_the_cli_exits_3(dataset, tmp_path, capsys):
    for image in (dataset / "test" / "FAKE").glob("*.png"):
        image.unlink()
    report_path = tmp_path / "report.json"

    code = main([str(dataset), "--report", str(report_path)])

    assert code == EXIT_INVALID_DATA == 3
    report = json.loads(report_path.read_text())
    assert not report["passed"]
    assert "test/FAKE has 0 images (needs 1)" in report["checks"]["class_balance"]["failures"]
    assert "FAILED class_balance" in capsys.readouterr().err


def test_a_missing_class_folder_fails_the_structure_check(dataset):
    shutil.rmtree(dataset / "train" / "REAL")
    (dataset / "train" / "notes.txt").write_text("not a class")
    (dataset / "test" / "REAL" / "readme.txt").write_text("not an image")

    structure = validate_dataset(str(dataset))["checks"]["structure"]
    assert structure["missing"] == ["train/REAL"]
    assert structure["ignored"] == ["test/REAL/readme.txt"]


def test_the_cli_exits_0_on_a_valid_set(dataset, tmp_path):
    assert main([str(dataset), "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["passed"]


def test_a_data_set_behind_an_fsspec_url_is_validated_the_same_way(dataset):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.put(str(dataset), "/ppd-validate", recursive=True)
    try:
        report = validate_dataset("memory://ppd-validate")
    finally:
        fs.rm("/ppd-validate", recursive=True)
    assert report["passed"]
    assert report["files_checked"] == 36
