"""End-to-end training on CPU: experiment folder, overfitting, exact resume, two gloo processes.

The runs use B0 at 64x64 crops with a 32x32 refiner for a few steps (`tests/test_train_configs`).
"""
import json
from pathlib import Path

import pytest
import torch

from isegm.engine import launch
from isegm.engine.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "tests" / "test_train_configs"
TINY_FIXED = CONFIGS / "tiny_fixed.py"
TINY_SYNTHETIC = CONFIGS / "tiny_synthetic.py"


@pytest.fixture
def exps(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    return tmp_path / "exps" / "test_train_configs"


def _run(*args):
    rc = launch.main([str(a) for a in args])
    assert rc == 0


@pytest.mark.slow
def test_synthetic_run_writes_the_experiment_folder(exps):
    _run(TINY_SYNTHETIC, "--cpu", "--workers=0", "--exp-name=smoke", "--seed=1")
    root = exps / "tiny_synthetic" / "000_smoke"
    assert (root / "tiny_synthetic.py").read_text() == TINY_SYNTHETIC.read_text()
    resolved = (root / "config.yml").read_text()
    assert "per_process_batch: 4" in resolved and "max_num_next_clicks: 2" in resolved
    log = (root / "train_log.txt").read_text()
    assert "epoch 1: val/loss" in log and "new best val/iou" in log
    assert list(root.glob("events.out.tfevents.*"))
    names = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert names == ["000.pth", "001.pth", "best_checkpoint.pth", "last_checkpoint.pth"]
    vis = sorted(p.name for p in (root / "vis").iterdir())
    assert "val_epoch001.png" in vis and any(n.startswith("train_epoch001") for n in vis)
    last = read_checkpoint(root / "checkpoints" / "last_checkpoint.pth")
    assert last["arch"] == "iglr" and last["epoch"] == 1 and last["step"] == 4
    assert {"optimizer", "lr_scheduler", "grad_scaler", "rng_states", "best_metric"} <= set(last)
    assert last["config"]["params"]["refine_size"] == 32
    # The model is rebuilt from the checkpoint alone.
    from isegm.model import load_is_model
    model = load_is_model(root / "checkpoints" / "best_checkpoint.pth")
    assert model.refine_size == 32
    # A second run gets a new folder; the first is untouched.
    from isegm.engine.experiment import create_exp_dir
    second = create_exp_dir(exps / "tiny_synthetic", "smoke")
    assert second.root.name == "001_smoke" and (root / "checkpoints" / "000.pth").is_file()
    # Tensorboard holds the scalars and the image dumps.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(root)).Reload()
    assert "epoch/val/iou" in events.Tags()["scalars"] and "train/step_loss" in events.Tags()["scalars"]
    # the IGA coefficients' magnitudes, per stage and term, and the IGA group's lr
    iga_tags = {t for t in events.Tags()["scalars"] if t.startswith("iga/")}
    assert iga_tags == {f"iga/stage{s}/{t}" for s in range(1, 5)
                        for t in ("pos", "neg", "feedback")}
    assert "lr/iga" in events.Tags()["scalars"]
    assert events.Scalars("iga/stage1/pos")[-1].value > 0  # they left zero
    assert "train/images" in events.Tags()["images"]


@pytest.mark.slow
def test_tiny_fixed_set_overfits(tmp_path):
    # the outcome of the steps depends on the thread count (reduction order): pin it
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _overfit_tiny_fixed_set(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _tiny_fixed_trainer(tmp_path, **changes):
    """The recipe's own trainer on 4 fixed 48x48 samples (B0, 32x32 refiner), batch 4."""
    from tests.test_train_configs.fixed_data import FixedDataset
    from isegm.engine import recipe
    from isegm.engine.distributed import DistInfo
    from isegm.engine.experiment import ExperimentPaths
    from isegm.engine.runconfig import RunConfig
    from isegm.utils.config import load_config

    torch.manual_seed(0)
    data = FixedDataset(4, size=48)
    settings = dict(crop_size=(48, 48), num_max_points=4, lr=2e-3, batch_size=4, milestones=(),
                    model_kwargs={"refine_size": 32, "drop_path_rate": 0.0},
                    checkpoint_interval=0, image_dump_interval=0)
    rec = recipe.SYNTHETIC_CPU.replace(**{**settings, **changes})
    paths = ExperimentPaths.at(tmp_path / "exp")
    paths.make_dirs()
    cfg = RunConfig(config_path=TINY_FIXED, paths=load_config(), batch_size=4, workers=0,
                    cpu=True, dist=DistInfo(), exp=paths)
    model, model_cfg = recipe.init_model(cfg, rec)
    return recipe.make_trainer(model, cfg, model_cfg, rec, data, data)


def _overfit_tiny_fixed_set(tmp_path):
    from isegm.engine.interaction import FocusBoxSampler

    # The recipe's own training loop: iterative click rounds (no-grad; here 0 or 1 per step, so
    # that half the steps train the first click, which validation scores) and the focus box
    # sampler (whole-object and boundary boxes), with a short warm-up.
    trainer = _tiny_fixed_trainer(tmp_path, max_num_next_clicks=1, warmup_steps=5)
    assert isinstance(trainer.focus_sampler, FocusBoxSampler) and trainer.max_num_next_clicks == 1
    rounds = []
    real_rounds = trainer._interactive_rounds

    def counting_rounds(batch, host, num_rounds=None):
        prev = real_rounds(batch, host, num_rounds)
        rounds.append(int((host["points"][:, :, 2] >= 1).sum()))
        return prev

    trainer._interactive_rounds = counting_rounds
    start = trainer.validation(0)["val/iou"]
    # 60 steps: at 40 the eval-mode IoU flipped between ~0.38 and > 0.75 with a 1e-6 relative
    # change of the crops (float rounding), for the same recipe and seed
    for epoch in range(60):  # one step per epoch; no checkpoints (they would dominate the time)
        summary = trainer.training(epoch)
    summary.update(trainer.validation(60))
    assert len(rounds) == 60 and sum(rounds) > 0  # iterative clicks were added
    assert start < 0.4, start
    # Eval mode (BatchNorm running statistics) and train mode both fit the 4 samples.
    assert summary["val/iou"] > 0.75, (start, summary)
    assert summary["train/iou"] > 0.75, (start, summary)
    assert summary["val/refined_iou"] > 0.7, (start, summary)


def test_click_rounds_see_the_target_crop_of_their_own_mask(tmp_path):
    """With `target_recrop_prob` 1, the round's click is added, then image, ground truth, clicks
    and the round's probabilities are cropped to the target crop of the round's mask (the
    predictor's crop from click 2 on), in the batch and in the host copies alike."""
    import copy
    from isegm.engine.interaction import (add_training_clicks, click_round_mode, crop_to_rois,
                                          target_crop_rois)
    trainer = _tiny_fixed_trainer(tmp_path, max_num_next_clicks=1, target_recrop_prob=1.0,
                                  model_kwargs={"refine_size": 32, "drop_path_rate": 0.0,
                                                "target_crop_r": 1.4})
    trainer._seed_epoch(0)
    loader_batch = next(iter(trainer.train_loader))
    host = trainer._host_tensors(loader_batch)
    batch = trainer._prepare_batch(loader_batch)
    images, gt, points = batch["images"].clone(), batch["instances"].clone(), host["points"]
    # what the round must do, computed here from the same RNG state
    rng = copy.deepcopy(trainer.rng)
    assert (rng.random(4) < 1.0).all()
    with torch.no_grad(), click_round_mode(trainer.net_module):
        prob = torch.sigmoid(trainer.net_module(images, points, torch.zeros_like(gt))["instances"])
    clicked = add_training_clicks(points, gt, prob, 1, rng)
    rois = target_crop_rois(prob, clicked, 1.4)
    expected = crop_to_rois(images, gt, prob, clicked, rois)

    prev = trainer._interactive_rounds(batch, host, num_rounds=1)
    assert sum(roi is not None for roi in rois) >= 2
    assert any(roi != (0, 47, 0, 47) for roi in rois if roi is not None)  # a real zoom
    torch.testing.assert_close(batch["images"], expected[0])
    assert torch.equal(batch["instances"], expected[1])
    assert torch.equal(host["instances"], expected[1])
    torch.testing.assert_close(prev, expected[2])
    torch.testing.assert_close(host["points"], expected[3])
    # the rounds' result trains: one step runs on the cropped batch
    trainer.train_step(loader_batch)


@pytest.mark.slow
def test_resume_continues_exactly(exps, monkeypatch):
    monkeypatch.setenv("IGLR_TEST_NEXT_CLICKS", "2")  # iterative rounds draw from the RNGs too
    common = [TINY_FIXED, "--cpu", "--workers=0", "--seed=5"]
    _run(*common, "--epochs=2", "--exp-name=full")
    _run(*common, "--epochs=1", "--exp-name=part")
    _run(*common, "--epochs=2", "--resume-exp=001")
    full, part = exps / "tiny_fixed" / "000_full", exps / "tiny_fixed" / "001_part"
    full_losses = json.loads((full / "rank0_from0_losses.json").read_text())
    resumed_losses = json.loads((part / "rank0_from1_losses.json").read_text())
    assert len(full_losses) == 4 and len(resumed_losses) == 2
    assert resumed_losses == pytest.approx(full_losses[2:], rel=1e-6, abs=1e-7)
    a = read_checkpoint(full / "checkpoints" / "last_checkpoint.pth")
    b = read_checkpoint(part / "checkpoints" / "last_checkpoint.pth")
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == b["step"] == 4
    lrs_a = [g["lr"] for g in a["optimizer"]["param_groups"]]
    lrs_b = [g["lr"] for g in b["optimizer"]["param_groups"]]
    # decayed at the milestone (epoch 1); groups backbone, head, IGA coefficients
    assert lrs_a == lrs_b == pytest.approx([1e-4, 1e-4, 1e-4])
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 2
    for key, state in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name], b["optimizer"]["state"][key][name],
                                       rtol=1e-5, atol=1e-8)
        assert float(state["step"]) == float(b["optimizer"]["state"][key]["step"]) == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(value, b["state_dict"][key], rtol=1e-5, atol=1e-7)
    # The resumed run appended to the same folder: both resolved configs and the log are kept.
    assert (part / "config.yml").is_file() and (part / "config_1.yml").is_file()
    assert "resumed from" in (part / "train_log.txt").read_text()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(exps):
    """2 CPU processes (gloo, global BatchNorm statistics) x 2 samples == 1 process x 4 samples.

    Data, clicks and focus boxes are deterministic and dropout is off in this config, so both
    runs see the same global batches; float reduction order differs, hence the tolerance."""
    common = [TINY_FIXED, "--cpu", "--workers=0", "--seed=3", "--batch-size=4"]
    _run(*common, "--ngpus=2", "--exp-name=ddp")
    _run(*common, "--exp-name=single")
    ddp, single = exps / "tiny_fixed" / "000_ddp", exps / "tiny_fixed" / "001_single"
    w0 = torch.load(ddp / "rank0_from0_weights.pt")
    w1 = torch.load(ddp / "rank1_from0_weights.pt")
    ws = torch.load(single / "rank0_from0_weights.pt")
    for key in w0:
        assert torch.equal(w0[key], w1[key]), f"ranks differ in {key}"
    for key in w0:
        torch.testing.assert_close(w0[key], ws[key], rtol=1e-4, atol=1e-4, msg=key)
    l0 = json.loads((ddp / "rank0_from0_losses.json").read_text())
    l1 = json.loads((ddp / "rank1_from0_losses.json").read_text())
    ls = json.loads((single / "rank0_from0_losses.json").read_text())
    assert len(ls) == 4
    assert [(a + b) / 2 for a, b in zip(l0, l1)] == pytest.approx(ls, rel=1e-4)
    assert "2 process(es), backend gloo" in (ddp / "train_log.txt").read_text()


@pytest.mark.slow
def test_start_epoch_uses_that_epochs_learning_rate(exps):
    _run(TINY_FIXED, "--cpu", "--workers=0", "--start-epoch=1", "--epochs=2")
    root = exps / "tiny_fixed" / "000"
    assert not (root / "checkpoints" / "000.pth").exists()
    state = read_checkpoint(root / "checkpoints" / "last_checkpoint.pth")
    assert state["epoch"] == 1 and state["step"] == 2
    # epoch 1 ran at lr 1e-3 * 0.1 (milestone 1); Adam's step count shows 2 updates
    assert "lr {'backbone': 0.0001, 'head': 0.0001, 'iga': 0.0001}" in \
        (root / "train_log.txt").read_text()
    assert all(float(s["step"]) == 2 for s in state["optimizer"]["state"].values())
