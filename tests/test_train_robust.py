"""Training on bad input stops with one line and leaves nothing half-done (issue 16).

Each test writes real files (images, checkpoints, config modules) to tmp_path and runs the real
launcher; stderr is captured at the file-descriptor level, so lines printed by DataLoader
workers and spawned processes are seen too.
"""
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.engine import launch
from isegm.engine.launch import LaunchError, make_run_config
from tests.conftest import write_config_module

REPO = Path(__file__).resolve().parents[1]
TINY_FIXED = REPO / "tests" / "test_train_configs" / "tiny_fixed.py"


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "(ERROR)" in line]


def _images_dir(root: Path, n: int = 2, size: int = 72) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image = np.full((size, size, 3), 40 + 30 * i, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[16:56, 20:50] = 255
        image[mask > 0] = 200
        cv2.imwrite(str(root / "images" / f"im{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"im{i}.png"), mask)
    return root


IMAGES_DIR_MODULE = (
    "from isegm.engine import recipe\n"
    "RECIPE = recipe.SYNTHETIC_CPU.replace(train_dataset='ImagesDir', train_dataset_kwargs={},\n"
    "    val_dataset='', crop_size=(48, 48), num_max_points=4, min_object_area=10,\n"
    "    model_kwargs={'refine_size': 16, 'drop_path_rate': 0.0}, batch_size=2, epoch_len=-1,\n"
    "    epochs=1, image_dump_interval=0, checkpoint_interval=0)\n"
    "BATCH_SIZE = RECIPE.batch_size\n"
    "init_model, train, main = recipe.entry_points(RECIPE)\n")


def _garbage(path):
    path.write_bytes(b"not a png at all")
    return "the file is empty, corrupt or not an image"


def _truncated_png(path):
    """A real PNG cut inside its image data (libpng printed an error line of its own)."""
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"IDAT") + 40])
    return "the PNG data is truncated (no IEND chunk)"


def _truncated_jpeg(path):
    """A real JPEG cut inside its scan: libjpeg decoded it gray, with a warning only."""
    image = cv2.imread(str(path))
    path.unlink()
    path = path.with_suffix(".jpg")
    cv2.imwrite(str(path), image)
    data = path.read_bytes()
    path.write_bytes(data[:data.index(b"\xff\xda") + 40])
    return "the JPEG data is truncated (no end-of-image marker after its last scan)"


@pytest.mark.parametrize("damage", [_garbage, _truncated_png, _truncated_jpeg])
def test_corrupt_image_in_a_loader_worker_stops_with_one_line(tmp_path, exps, monkeypatch, capfd,
                                                              damage):
    root = _images_dir(tmp_path / "data")
    bad = root / "images" / "im1.png"
    reason = damage(bad)
    bad = bad if bad.exists() else bad.with_suffix(".jpg")
    monkeypatch.setenv("IMAGES_DIR_PATH", str(root))
    module = write_config_module(tmp_path, "images_dir.py", IMAGES_DIR_MODULE)
    assert launch.main([str(module), "--cpu", "--workers=1"]) == 2
    err = capfd.readouterr().err
    errors = _error_lines(err)
    assert len(errors) == 1, err
    assert f"DatasetError: cannot decode '{bad}': {reason} (in a data-loading worker)" \
        in errors[0]
    assert "Traceback" not in err and "Original" not in err
    assert "libpng" not in err and "JPEG" not in err.replace(reason, "")


def _checkpoint_of_tiny_fixed(tmp_path):
    """The state of the model tiny_fixed.py builds, saved as an IGLR checkpoint, as a dict."""
    from isegm.engine.checkpoint import read_checkpoint, save_checkpoint
    cfg, module = make_run_config([str(TINY_FIXED), "--cpu"])
    model, _ = module.init_model(cfg)
    save_checkpoint(tmp_path / "fits.pth", model, epoch=0)
    return read_checkpoint(tmp_path / "fits.pth")


def test_weights_that_do_not_fit_fail_before_any_folder(tmp_path, exps, capfd):
    from isegm.model import IGLRModel, save_is_model
    state = _checkpoint_of_tiny_fixed(tmp_path)
    cfg, _ = make_run_config([str(TINY_FIXED), "--cpu", f"--weights={tmp_path / 'fits.pth'}"])
    assert cfg.weights == tmp_path / "fits.pth"
    # An IGLR header (arch, config) but one weight removed.
    missing = dict(state, state_dict={k: v for k, v in state["state_dict"].items()
                                      if k != "backbone.block1.0.attn.q.weight"})
    torch.save(missing, tmp_path / "missing_key.pth")
    with pytest.raises(LaunchError, match=r"--weights: weights in '.*missing_key.pth' do not fit "
                                          r"this model: missing \['backbone.block1.0.attn.q.weight'\]"):
        make_run_config([str(TINY_FIXED), "--cpu", f"--weights={tmp_path / 'missing_key.pth'}"])
    # Another backbone: same keys, other shapes (today a RuntimeError after the folder exists).
    save_is_model(IGLRModel(backbone="mit_b1", refine_size=32, drop_path_rate=0.0,
                            head_dropout=0.0), tmp_path / "b1.pth")
    with pytest.raises(LaunchError, match=r"tensor\(s\) differ in shape, e.g. \['backbone"):
        make_run_config([str(TINY_FIXED), "--cpu", f"--weights={tmp_path / 'b1.pth'}"])
    for name in ("missing_key.pth", "b1.pth", "nonexistent.pth"):
        assert launch.main([str(TINY_FIXED), "--cpu", f"--weights={tmp_path / name}"]) == 2
    errors = _error_lines(capfd.readouterr().err)
    assert len(errors) == 3 and "does not exist" in errors[2]
    assert not exps.exists()  # no run folder for any of them


MISSING_DATA_MODULE = (
    "from isegm.engine import recipe\n"
    "RECIPE = recipe.SYNTHETIC_CPU.replace(train_dataset='COCO_MVal', train_dataset_kwargs={})\n"
    "BATCH_SIZE = 4\n"
    "def init_model(cfg):\n    raise AssertionError('the model must not be built')\n"
    "def main(cfg):\n    return recipe.main(cfg, RECIPE)\n")


def test_missing_dataset_with_two_processes_is_checked_before_spawning(tmp_path, exps, monkeypatch,
                                                                       capfd):
    module = write_config_module(tmp_path, "coco_train.py", MISSING_DATA_MODULE)
    monkeypatch.setenv("COCO_MVAL_PATH", str(tmp_path / "no_such_dir"))

    def no_spawn(*args, **kwargs):
        raise AssertionError("spawned although the data is missing")

    monkeypatch.setattr(launch.du, "spawn", no_spawn)
    assert launch.main([str(module), "--cpu", "--ngpus=2", "--workers=0"]) == 2
    err = capfd.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "COCO_MVAL_PATH resolves to" in err and "no_such_dir" in err
    assert not exps.exists()


@pytest.mark.slow
def test_an_error_inside_spawned_processes_is_one_line(tmp_path, exps, capfd):
    module = write_config_module(tmp_path, "fails_in_process.py", (
        "from isegm.data.io import DatasetError\n"
        "BATCH_SIZE = 2\n"
        "def init_model(cfg):\n    raise AssertionError('not called')\n"
        "def main(cfg):\n"
        "    raise DatasetError(f\"cannot decode 'rank{cfg.dist.rank}.jpg'\")\n"))
    assert launch.main([str(module), "--cpu", "--ngpus=2", "--workers=0"]) == 2
    err = capfd.readouterr().err
    errors = _error_lines(err)
    assert errors and len(err.strip().splitlines()) == 1, err
    assert "DatasetError: cannot decode 'rank0.jpg'" in errors[0]
    assert "Traceback" not in err


@pytest.mark.slow
def test_resume_removes_stale_temporaries_and_says_from_which_epoch(tmp_path, exps):
    common = [str(TINY_FIXED), "--cpu", "--workers=0", "--seed=2"]
    assert launch.main([*common, "--epochs=1"]) == 0
    root = exps / "test_train_configs" / "tiny_fixed" / "000"
    # What `kill -9` during a checkpoint write leaves (atomic_save's temporary name).
    stale = root / "checkpoints" / ".last_checkpoint.pth.k9x2ab.tmp"
    stale.write_bytes(b"")
    assert launch.main([*common, "--epochs=2", "--resume-exp=000"]) == 0
    assert not stale.exists()
    assert not list((root / "checkpoints").glob(".*"))
    log = (root / "train_log.txt").read_text()
    assert f"removed '{stale}', left by an interrupted checkpoint write" in log
    assert re.search(r"resumed from epoch 0 \(.*last_checkpoint.pth\): training continues at "
                     r"epoch 1, step 2", log)
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == [
        "000.pth", "001.pth", "best_checkpoint.pth", "last_checkpoint.pth"]


def test_default_workers_are_capped_at_the_available_cores(monkeypatch):
    monkeypatch.setattr(launch, "available_cpus", lambda: 2)
    assert launch.DEFAULT_WORKERS == 4
    assert make_run_config([str(TINY_FIXED), "--cpu"])[0].workers == 2
    assert make_run_config([str(TINY_FIXED), "--cpu", "--workers=8"])[0].workers == 2
    assert make_run_config([str(TINY_FIXED), "--cpu", "--workers=1"])[0].workers == 1
    assert make_run_config([str(TINY_FIXED), "--cpu", "--workers=0"])[0].workers == 0
    with pytest.raises(LaunchError, match="--workers must be >= 0, got -1"):
        make_run_config([str(TINY_FIXED), "--cpu", "--workers=-1"])
    help_text = launch.build_parser().format_help()
    assert "capped at the CPU cores available" in " ".join(help_text.split())


def test_small_object_drops_are_logged_once_over_workers_and_epochs(capfd):
    from isegm.data.datasets import SyntheticDataset
    from isegm.data.points_sampler import MultiPointSampler
    from isegm.utils.log import setup_logging
    setup_logging(None)
    dataset = SyntheticDataset(num_samples=8, image_size=(48, 48), min_object_area=10 ** 6,
                               points_sampler=MultiPointSampler(4), epoch_len=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    for _ in range(2):  # workers are started afresh each epoch
        assert sum(len(batch["images"]) for batch in loader) == 8
    lines = [line for line in capfd.readouterr().err.splitlines() if "dropped" in line]
    assert len(lines) == 1, lines
    assert "Synthetic: dropped" in lines[0] and "further drops are logged at DEBUG" in lines[0]
    import pickle
    copy = pickle.loads(pickle.dumps(dataset))  # a copy gets its own flag
    assert copy._drop_logged.claim() and not copy._drop_logged.claim()


def _script(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_main_job_unknown_dataset_is_one_clear_line(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    assert _script("main_job").main(["--quick", "--datasets", "GrabCut,Nope"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith("main_job.py: error: --datasets: unknown dataset(s) Nope; known: ")
    assert "COCO_MVal" in err and "GrabCut" in err and '"' not in err and "KeyError" not in err
    assert not (tmp_path / "exps").exists()


def test_iou_plot_ticks_are_whole_clicks(tmp_path, monkeypatch):
    """The one mIoU plot (`isegm.utils.vis.plot_miou_curves`, which plot_ious_analysis.py and
    the jobs use): whole clicks on the x axis."""
    import matplotlib.pyplot as plt
    from isegm.utils.vis import plot_miou_curves
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    rows = [{"model": "a", "dataset": name, "num_samples": 3, "seeds": 1,
             "mIoU_curve": np.linspace(lo, 0.9, n).tolist()}
            for name, lo, n in (("GrabCut", 0.5, 10), ("Berkeley", 0.4, 20))]
    out = plot_miou_curves(rows, tmp_path / "curves.png", "t")
    assert out.is_file() and len(figures) == 1
    for ax in figures[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    monkeypatch.undo()
    plt.close(figures[0])
