import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from train.download import EXIT_SOURCE_UNAVAILABLE, download_cifake, main, write_hf_dataset

datasets = pytest.importorskip("datasets", reason="the hf extra is not installed")


def _images(root: Path, class_dir: str) -> set[bytes]:
    return {p.read_bytes() for p in root.glob(f"*/{class_dir}/*") if p.is_file()}


def test_cifake_is_unpacked_from_its_archive_into_the_cifake_layout(tiny_demo, tmp_path):
    archive = tmp_path / "cifake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tiny_demo.rglob("*.png")):
            zf.write(path, f"cifake/{path.relative_to(tiny_demo)}")  # one level down
    out = tmp_path / "cifake"

    counts = download_cifake(str(out), archive.as_uri())

    assert counts == {"train/REAL": 12, "train/FAKE": 12, "test/REAL": 6, "test/FAKE": 6}
    assert _images(out, "FAKE") == _images(tiny_demo, "FAKE")


def test_an_unreachable_cifake_url_exits_5_and_says_what_to_do(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/cifake.zip"  # nothing listens there
    code = main(["--source", "cifake", "--url", url, "--out", str(tmp_path / "cifake")])

    assert code == EXIT_SOURCE_UNAVAILABLE == 5
    err = capsys.readouterr().err
    assert f"cannot download CIFAKE from {url}" in err
    assert "--source demo" in err
    assert not (tmp_path / "cifake").exists()


def test_hf_labels_are_read_from_the_data_set_not_assumed(tiny_demo, tmp_path):
    # index 0 is "fake" here, the reverse of our REAL=0 / FAKE=1 folders
    rows = [(p.read_bytes(), 1) for p in sorted(tiny_demo.glob("*/REAL/*.png"))]
    rows += [(p.read_bytes(), 0) for p in sorted(tiny_demo.glob("*/FAKE/*.png"))]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["fake", "real"])}
    )
    train = datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b, _ in rows], "label": [y for _, y in rows]},
        features=features,
    )
    out = tmp_path / "hf"

    counts = write_hf_dataset(datasets.DatasetDict({"train": train}), str(out), 0.25, seed=0)

    # no test split in the source: a stratified quarter of train became test
    assert sum(counts.values()) == 36
    assert counts["test/REAL"] + counts["test/FAKE"] == 9
    assert abs(counts["test/REAL"] - counts["test/FAKE"]) <= 1
    assert _images(out, "REAL") == _images(tiny_demo, "REAL")
    assert _images(out, "FAKE") == _images(tiny_demo, "FAKE")
    assert all(p.suffix == ".png" for p in out.rglob("*.*"))


def test_hf_label_names_that_say_neither_real_nor_fake_are_refused(tmp_path):
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cats", "dogs"])}
    )
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    with pytest.raises(ValueError, match=r"label 'cats'.*\['cats', 'dogs'\]"):
        write_hf_dataset(datasets.DatasetDict({"train": empty}), str(tmp_path / "hf"))


def test_the_hf_source_offline_exits_5_naming_the_data_set(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "train.download", "--source", "hf", "--out", str(tmp_path / "o")],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == EXIT_SOURCE_UNAVAILABLE, done.stderr
    assert "cannot load the Hugging Face data set 'date3k2/raw_real_fake_images'" in done.stderr
