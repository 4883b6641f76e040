from pathlib import Path

from PIL import Image

from tests.train.conftest import TINY_DEMO
from train.demo_data import DemoConfig, build_demo_dataset


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_is_cifake_with_requested_counts(tiny_demo):
    for split, count in (("train", TINY_DEMO.train_per_class), ("test", TINY_DEMO.test_per_class)):
        for class_dir in ("REAL", "FAKE"):
            files = sorted((tiny_demo / split / class_dir).glob("*.png"))
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.size == (TINY_DEMO.size, TINY_DEMO.size)
                assert image.mode == "RGB"
    assert (tiny_demo / "demo_manifest.json").is_file()


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tiny_demo, tmp_path):
    again = tmp_path / "again"
    build_demo_dataset(again, TINY_DEMO)
    assert _files(again) == _files(tiny_demo)

    other = tmp_path / "other"
    build_demo_dataset(other, DemoConfig(**{**TINY_DEMO.__dict__, "seed": TINY_DEMO.seed + 1}))
    assert _files(other) != _files(tiny_demo)
