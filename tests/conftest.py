"""Shared fixtures. Real data comes from ../shared/datasets beside the checkout when present."""
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# The scripts' default network backend, 'auto', exports the refiner to ONNX (about 3 s) in every
# run that builds a predictor; the tests pin PyTorch and test 'auto' where they name it
# (tests/test_onnx.py).
os.environ.setdefault("IGLR_BACKEND", "torch")

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("IGLR_TEST_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _shared(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path} (the shared datasets folder beside the "
                    f"checkout; set IGLR_TEST_DATASETS to point elsewhere)")
    return path


@pytest.fixture
def grabcut_root() -> Path:
    return _shared("GrabCut")


@pytest.fixture
def coco_mval_root() -> Path:
    return _shared("COCO_MVal")


@pytest.fixture
def exps(tmp_path, monkeypatch) -> Path:
    """A fresh EXPS_PATH under the test's temporary folder (test files may override it)."""
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    return tmp_path / "exps"


def write_config_module(tmp_path: Path, name: str, text: str) -> Path:
    """A config module `models/fam/<name>` under `tmp_path` with the given source."""
    path = tmp_path / "models" / "fam" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
