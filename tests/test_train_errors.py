"""train.py fails clearly, before any work, on bad arguments, data paths and checkpoints."""
from pathlib import Path

import pytest
import torch

from isegm.engine import launch
from isegm.engine.experiment import (ExperimentError, ExperimentPaths, copy_config_module,
                                     create_exp_dir, find_checkpoint, find_resume_exp,
                                     write_resolved_config)
from isegm.engine.launch import LaunchError, make_run_config
from tests.conftest import write_config_module

REPO = Path(__file__).resolve().parents[1]
TINY_FIXED = REPO / "tests" / "test_train_configs" / "tiny_fixed.py"


def test_bad_arguments_fail_with_named_errors(tmp_path, exps):
    with pytest.raises(LaunchError, match="'missing.py' does not exist"):
        make_run_config(["missing.py", "--cpu"])
    broken = write_config_module(tmp_path, "broken.py", "def init_model(cfg):\n    return (\n")
    with pytest.raises(LaunchError, match=r"broken.py' failed to import: SyntaxError.*line"):
        make_run_config([str(broken), "--cpu"])
    raising = write_config_module(tmp_path, "raising.py", "import no_such_package_xyz\n")
    with pytest.raises(LaunchError, match="ModuleNotFoundError: No module named 'no_such_package_xyz'"):
        make_run_config([str(raising), "--cpu"])
    no_main = write_config_module(tmp_path, "no_main.py", "def init_model(cfg):\n    pass\n")
    with pytest.raises(LaunchError, match="does not define main"):
        make_run_config([str(no_main), "--cpu", "--batch-size=2"])
    if not torch.cuda.is_available():
        with pytest.raises(LaunchError, match="no CUDA device is present; add --cpu"):
            make_run_config([str(TINY_FIXED), "--ngpus=2"])
    else:
        with pytest.raises(LaunchError, match="CUDA device"):
            make_run_config([str(TINY_FIXED), f"--ngpus={torch.cuda.device_count() + 1}"])
    with pytest.raises(LaunchError, match="--batch-size 3 must be divisible by the number of processes"):
        make_run_config([str(TINY_FIXED), "--cpu", "--ngpus=2", "--batch-size=3"])
    with pytest.raises(LaunchError, match="--gpus expects comma-separated integer ids"):
        make_run_config([str(TINY_FIXED), "--gpus=a,b"])
    with pytest.raises(LaunchError, match="--epochs must be > 0"):
        make_run_config([str(TINY_FIXED), "--cpu", "--epochs=0"])
    with pytest.raises(LaunchError, match="--config: configuration file 'nope.yml' does not exist"):
        make_run_config([str(TINY_FIXED), "--cpu", "--config=nope.yml"])
    with pytest.raises(LaunchError, match="--resume-exp '007': no experiment folder"):
        make_run_config([str(TINY_FIXED), "--cpu", "--resume-exp=007"])
    cfg, _ = make_run_config([str(TINY_FIXED), "--cpu", "--gpu=", "--batch-size=4"])
    assert cfg.batch_size == 4 and cfg.cpu and cfg.ngpus == 1
    assert not exps.exists()  # nothing was created


def test_unreadable_checkpoint_fails_before_work(tmp_path, exps, capsys):
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"definitely not a torch file")
    with pytest.raises(LaunchError, match=r"--weights: checkpoint '.*weights.pth' could not be read"):
        make_run_config([str(TINY_FIXED), "--cpu", f"--weights={bad}"])
    foreign = tmp_path / "foreign.pth"
    torch.save({"arch": "ritm", "state_dict": {}}, foreign)
    with pytest.raises(LaunchError, match="architecture 'ritm'"):
        make_run_config([str(TINY_FIXED), "--cpu", f"--weights={foreign}"])
    assert launch.main([str(TINY_FIXED), "--cpu", f"--weights={bad}"]) == 2
    assert "could not be read" in capsys.readouterr().err
    assert not exps.exists()


def test_missing_dataset_path_fails_before_work(tmp_path, exps, monkeypatch, capsys):
    module = write_config_module(tmp_path, "grabcut_train.py", (
        "from isegm.engine import recipe\n"
        "RECIPE = recipe.SYNTHETIC_CPU.replace(train_dataset='COCO_MVal', train_dataset_kwargs={})\n"
        "BATCH_SIZE = 4\n"
        "def init_model(cfg):\n    raise AssertionError('the model must not be built')\n"
        "def main(cfg):\n    return recipe.main(cfg, RECIPE)\n"))
    monkeypatch.setenv("COCO_MVAL_PATH", str(tmp_path / "no_such_dir"))
    assert launch.main([str(module), "--cpu", "--workers=0"]) == 2
    err = capsys.readouterr().err
    assert "COCO_MVAL_PATH resolves to" in err and "no_such_dir" in err
    assert not exps.exists()


def test_experiment_folders_never_reuse_or_delete(tmp_path):
    model_dir = tmp_path / "fam" / "model"
    a = create_exp_dir(model_dir, "first")
    (a.checkpoints / "last_checkpoint.pth").write_bytes(b"x")
    b = create_exp_dir(model_dir)
    c = create_exp_dir(model_dir, "third")
    assert [p.root.name for p in (a, b, c)] == ["000_first", "001", "002_third"]
    assert all(p.checkpoints.is_dir() and p.vis.is_dir() for p in (a, b, c))
    assert find_resume_exp(model_dir, "000").root == a.root
    assert find_checkpoint(a.checkpoints, "last").name == "last_checkpoint.pth"
    with pytest.raises(ExperimentError, match="no checkpoint 'best"):
        find_checkpoint(a.checkpoints, "best")
    with pytest.raises(ExperimentError, match="ambiguous"):
        find_resume_exp(model_dir, "00")
    with pytest.raises(ExperimentError, match="may hold only"):
        create_exp_dir(model_dir, "bad/name")
    module = tmp_path / "m.py"
    module.write_text("A = 1\n")
    assert copy_config_module(a, module).name == "m.py"
    assert copy_config_module(a, module).name == "m.py"      # unchanged: no second copy
    module.write_text("A = 2\n")
    assert copy_config_module(a, module).name == "m_1.py"    # changed: kept side by side
    assert (a.root / "m.py").read_text() == "A = 1\n"
    assert write_resolved_config(a, {"x": 1}).name == "config.yml"
    assert write_resolved_config(a, {"x": (1, 2), "p": Path("/a")}).name == "config_1.yml"
    assert "- 1" in (a.root / "config_1.yml").read_text()
    assert isinstance(ExperimentPaths.at(a.root).log_file, Path)
