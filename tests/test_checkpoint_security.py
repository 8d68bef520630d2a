"""A checkpoint never runs code unless the user opts in (issue 21).

Every entry point that takes a checkpoint gets a crafted file whose pickle payload would create
a marker file on load: it is refused, the marker is not created and the message names the file.
With the opt-in (`--trust-checkpoint` / `trust=True`) it loads, the marker IS created (proof that
the opt-in really unpickles) and a warning names the file. Our own checkpoints load with
`torch.load(weights_only=True)`.
"""
import json
import logging
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from isegm.engine import launch, recipe
from isegm.engine.checkpoint import read_checkpoint
from isegm.engine.runconfig import RunConfig
from isegm.model import BACKBONES, IGLRModel, load_is_model, load_pretrained_mit, save_is_model
from isegm.utils.config import load_config
from isegm.utils.log import logger
from isegm.utils.serialization import (CheckpointError, UntrustedCheckpointError, atomic_save,
                                       load_torch_file)

REPO = Path(__file__).resolve().parents[1]
TINY_FIXED = REPO / "tests" / "test_train_configs" / "tiny_fixed.py"
REFUSED = "was refused"


class TouchOnLoad:
    """Unpickling this object calls `Path.touch(marker)`: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def log_records(caplog, monkeypatch):
    """The project logger does not propagate (once set up): attach pytest's handler to it."""
    monkeypatch.setattr(logger, "propagate", False)
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger=logger.name)
    yield caplog
    logger.removeHandler(caplog.handler)


def _trust_warnings(caplog, path: Path) -> list:
    return [r for r in caplog.records if r.levelno == logging.WARNING
            and "--trust-checkpoint" in r.getMessage() and str(path) in r.getMessage()]


def _tiny_model() -> IGLRModel:
    return IGLRModel(**recipe.SYNTHETIC_CPU.replace(
        model_kwargs={"refine_size": 32, "drop_path_rate": 0.0, "head_dropout": 0.0}
    ).model_params())


def _crafted_model_checkpoint(path: Path, marker: Path, model=None) -> Path:
    """A complete IGLR checkpoint (it would load as a model) plus the payload."""
    save_is_model(model if model is not None else _tiny_model(), path,
                  payload=TouchOnLoad(marker))
    return path


def test_crafted_payload_is_refused_by_the_loader(tmp_path, log_records):
    marker = tmp_path / "marker"
    evil = _crafted_model_checkpoint(tmp_path / "evil.pth", marker)
    with pytest.raises(UntrustedCheckpointError) as err:
        load_torch_file(evil)
    message = str(err.value)
    assert str(evil) in message and "--trust-checkpoint" in message and "trust=True" in message
    assert "Path.touch" in message or "getattr" in message  # what it needs, by name
    assert not marker.exists()
    # A numpy scalar is refused too (harmless, but only full unpickling rebuilds it).
    np_file = tmp_path / "numpy_scalar.pth"
    torch.save({"best": np.float64(0.5)}, np_file)
    with pytest.raises(UntrustedCheckpointError, match=r"numpy_scalar\.pth.*numpy"):
        load_torch_file(np_file)
    # Corrupt files stay a plain CheckpointError (not "untrusted").
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError) as err:
        load_torch_file(corrupt)
    assert not isinstance(err.value, UntrustedCheckpointError) and "corrupt" in str(err.value)
    assert not _trust_warnings(log_records, evil)
    # The opt-in unpickles (the payload runs) and says so, naming the file.
    assert load_torch_file(np_file, trust=True) == {"best": 0.5}
    state = load_torch_file(evil, trust=True)
    assert marker.exists() and state["arch"] == "iglr" and state["payload"] is None
    assert len(_trust_warnings(log_records, evil)) == 1


def test_load_is_model_refuses_then_trusts(tmp_path, log_records):
    marker = tmp_path / "marker"
    torch.manual_seed(0)
    model = _tiny_model().eval()
    evil = _crafted_model_checkpoint(tmp_path / "evil.pth", marker, model)
    with pytest.raises(UntrustedCheckpointError, match=rf"'{evil}' {REFUSED}"):
        load_is_model(evil)
    assert not marker.exists()
    loaded = load_is_model(evil, trust=True)
    assert marker.exists() and _trust_warnings(log_records, evil)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_own_checkpoints_load_with_weights_only(tmp_path, log_records):
    """save_is_model's files hold tensors and plain values only: no unpickling, no warning."""
    torch.manual_seed(0)
    model = _tiny_model().eval()
    path = tmp_path / "own.pth"
    save_is_model(model, path, epoch=3, best_metric=0.5, run={"seed": 1, "crop": [64, 64]})
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["run"] == {"seed": 1, "crop": [64, 64]}
    loaded = load_is_model(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not log_records.records


def test_pretrained_loader_refuses_then_trusts(tmp_path, log_records):
    torch.manual_seed(1)
    source = BACKBONES.get("mit_b0")()
    state = {k: v.clone() for k, v in source.state_dict().items() if k not in source.new_keys()}
    marker = tmp_path / "marker"
    evil = tmp_path / "mit_b0_evil.pth"
    atomic_save({"state_dict": state, "meta": TouchOnLoad(marker)}, evil)
    backbone = BACKBONES.get("mit_b0")()
    with pytest.raises(UntrustedCheckpointError, match=rf"'{evil}' {REFUSED}"):
        load_pretrained_mit(backbone, evil)
    assert not marker.exists()
    report = load_pretrained_mit(backbone, evil, trust=True)
    assert marker.exists() and _trust_warnings(log_records, evil)
    assert report.missing == [] and torch.equal(backbone.state_dict()["norm4.weight"],
                                                state["norm4.weight"])


def test_pretrained_loader_of_a_training_run(tmp_path, monkeypatch, capsys):
    """train.py's ImageNet weights (configs.yml IMAGENET_PRETRAINED_MODELS) go through the same
    gate: refused before any experiment folder exists; accepted with --trust-checkpoint."""
    source = BACKBONES.get("mit_b0")()
    marker = tmp_path / "marker"
    evil = tmp_path / "mit_b0.pth"
    atomic_save({**{k: v for k, v in source.state_dict().items() if k not in source.new_keys()},
                 "meta": TouchOnLoad(marker)}, evil)
    monkeypatch.setenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", str(evil))
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    module = tmp_path / "pretrained_b0.py"
    module.write_text(
        "from isegm.engine import recipe\n"
        "RECIPE = recipe.SYNTHETIC_CPU.replace(pretrained=True, crop_size=(64, 64), batch_size=2,\n"
        "                                      epoch_len=2, val_epoch_len=2)\n"
        "BATCH_SIZE = RECIPE.batch_size\n"
        "init_model, train, main = recipe.entry_points(RECIPE)\n")
    assert launch.main([str(module), "--cpu", "--workers=0", "--epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint '{evil}' {REFUSED}" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "exps").exists()
    rec = recipe.SYNTHETIC_CPU.replace(pretrained=True)
    cfg = RunConfig(config_path=module, paths=load_config(None), cpu=True,
                    trust_checkpoint=True)
    model, _ = recipe.init_model(cfg, rec)
    assert marker.exists() and f"--trust-checkpoint: unpickling '{evil}'" in capsys.readouterr().err
    assert torch.equal(model.backbone.state_dict()["norm4.weight"],
                       source.state_dict()["norm4.weight"])


def test_evaluate_model_script_refuses_a_crafted_checkpoint(tmp_path):
    """The reported reproduction: `evaluate_model.py NoBRS --checkpoint=evil.pth`."""
    marker = tmp_path / "marker"
    evil = _crafted_model_checkpoint(tmp_path / "evil.pth", marker)
    cmd = [sys.executable, str(REPO / "scripts" / "evaluate_model.py"), "NoBRS",
           f"--checkpoint={evil}", "--datasets=Synthetic", "--cpu",
           f"--logs-path={tmp_path / 'logs'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1",
                               "EXPS_PATH": str(tmp_path / "exps")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(evil) in proc.stderr and REFUSED in proc.stderr
    assert "--trust-checkpoint" in proc.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_evaluate_model_main_refuses_then_trusts(tmp_path, monkeypatch, capsys, log_records):
    from isegm.inference.cli import main
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    marker = tmp_path / "marker"
    evil = _crafted_model_checkpoint(tmp_path / "evil.pth", marker)
    common = ["NoBRS", f"--checkpoint={evil}", "--datasets=Synthetic", "--cpu",
              "--max-samples=1", "--n-clicks=1", f"--logs-path={tmp_path / 'logs'}"]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert str(evil) in err and REFUSED in err and not marker.exists()
    # --exp-path: a run folder whose checkpoints include the crafted one
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    _crafted_model_checkpoint(run / "last_checkpoint.pth", marker)
    assert main(["NoBRS", f"--exp-path={run.parent}", "--datasets=Synthetic", "--cpu"]) == 2
    assert "last_checkpoint.pth" in capsys.readouterr().err and not marker.exists()
    assert main(common + ["--trust-checkpoint"]) == 0
    assert marker.exists() and _trust_warnings(log_records, evil)
    records = json.loads((tmp_path / "logs" / "evil" / "results_NoBRS_cvpr_1.json").read_text())
    assert records[0]["num_samples"] == 1


@pytest.mark.slow
def test_train_weights_and_resume_refuse_then_trust(tmp_path, monkeypatch, capsys):
    """train.py --weights and --resume-exp: refused before any work without the opt-in; with
    it, the run trains from the crafted weights / resumes from the crafted checkpoint.
    (launch.main sets the logger up on the captured stderr.)"""
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    exps = tmp_path / "exps" / "test_train_configs" / "tiny_fixed"
    marker = tmp_path / "marker"
    evil = _crafted_model_checkpoint(tmp_path / "evil_weights.pth", marker)
    common = [str(TINY_FIXED), "--cpu", "--workers=0"]

    assert launch.main(common + [f"--weights={evil}", "--epochs=1"]) == 2
    err = capsys.readouterr().err
    assert f"--weights: checkpoint '{evil}' {REFUSED}" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not exps.exists()

    assert launch.main(common + [f"--weights={evil}", "--epochs=1", "--trust-checkpoint"]) == 0
    err = capsys.readouterr().err
    assert marker.exists() and f"--trust-checkpoint: unpickling '{evil}'" in err
    assert "initial weights loaded from" in err
    marker.unlink()
    (run,) = exps.glob("000*")
    last = run / "checkpoints" / "last_checkpoint.pth"
    # our own training checkpoint: weights_only, RNG states of every kind included
    own = torch.load(last, weights_only=True)
    assert own["epoch"] == 0 and set(own["rng_states"][0]) >= {"python", "numpy", "torch",
                                                                "generator"}

    # the run folder's last checkpoint replaced by a crafted one (same training state)
    atomic_save({**own, "payload": TouchOnLoad(marker)}, last)
    assert launch.main(common + ["--resume-exp=000", "--epochs=2"]) == 2
    err = capsys.readouterr().err
    assert f"--resume-exp: checkpoint '{last}' {REFUSED}" in err and not marker.exists()

    assert launch.main(common + ["--resume-exp=000", "--epochs=2", "--trust-checkpoint"]) == 0
    err = capsys.readouterr().err
    assert marker.exists() and f"--trust-checkpoint: unpickling '{last}'" in err
    assert "resumed from" in err
    resumed = read_checkpoint(last)  # rewritten by the resumed run: safe again
    assert resumed["epoch"] == 1 and "payload" not in resumed


def test_sbd_cache_is_json_and_a_bad_one_is_named(tmp_path):
    from isegm.data.datasets import SBDEvaluationDataset
    from isegm.data.io import DatasetError
    root = tmp_path / "sbd"
    root.mkdir()
    (root / "val.txt").write_text("a\n")
    (root / "val_images_and_ids_list.json").write_text("[['a', 1]")
    with pytest.raises(DatasetError, match=r"val_images_and_ids_list\.json.*JSON"):
        SBDEvaluationDataset(root)


def test_no_silent_full_unpickling_in_the_code():
    """Only `load_torch_file`'s explicit opt-in may unpickle a torch file in full, and no
    numpy file is read with allow_pickle=True."""
    hits = []
    for path in [REPO / "train.py", *sorted((REPO / "isegm").rglob("*.py")),
                 *sorted((REPO / "scripts").glob("*.py"))]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "weights_only=False" in line or "allow_pickle=True" in line:
                hits.append(f"{path.relative_to(REPO)}:{number}")
    assert len(hits) == 1 and hits[0].startswith("isegm/utils/serialization.py"), hits


def test_predict_script_refuses_then_trusts(tmp_path, capsys):
    """scripts/predict.py (isegm.demo.predict.main): refused with one line naming the file;
    with --trust-checkpoint it loads (marker created) and segments."""
    from isegm.demo.predict import main as predict_main
    marker = tmp_path / "marker"
    evil = _crafted_model_checkpoint(tmp_path / "evil.pth", marker)
    image = tmp_path / "in.png"
    pixels = np.zeros((40, 50, 3), np.uint8)
    pixels[10:30, 15:35] = 200
    import cv2
    cv2.imwrite(str(image), pixels)
    argv = ["--checkpoint", str(evil), "--image", str(image), "--clicks", "25,20,+",
            "--output", str(tmp_path / "mask.png"), "--cpu"]
    assert predict_main(argv) == 2
    err = capsys.readouterr().err
    assert f"'{evil}' {REFUSED}" in err and "--trust-checkpoint" in err
    assert not marker.exists() and not (tmp_path / "mask.png").exists()
    assert predict_main(argv + ["--trust-checkpoint"]) == 0
    assert marker.exists() and (tmp_path / "mask.png").is_file()
    # main() sets up the project's console logging: the warning is on stderr
    assert f"--trust-checkpoint: unpickling '{evil}'" in capsys.readouterr().err


def test_demo_refuses_an_explicit_checkpoint_and_skips_a_crafted_default(tmp_path, monkeypatch,
                                                                         capsys):
    """scripts/demo.py: an explicit crafted --checkpoint stops before serving; a crafted file
    that would be the default (newest under EXPS_PATH) is refused too and the tool falls back to
    the classical predictor, saying why. The marker is never created."""
    from isegm.demo import server
    marker = tmp_path / "marker"
    exps = tmp_path / "exps"
    evil = _crafted_model_checkpoint(exps / "run" / "checkpoints" / "last_checkpoint.pth", marker)
    monkeypatch.setenv("EXPS_PATH", str(exps))
    assert server.main(["--checkpoint", str(evil), "--cpu", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert f"'{evil}' {REFUSED}" in err and not marker.exists()
    args = server.parse_args(["--cpu", "--output", str(tmp_path / "out")])
    monkeypatch.setattr(server.Segmenter, "warm_up", lambda self: 0.0)
    _, segmenter = server.build(args)
    assert segmenter.name == "cv_grabcut" and not marker.exists()
