"""Test config: B0 at 64x64 on a fixed in-memory set; records losses and per-rank weights.

Environment knobs (tests only): IGLR_TEST_NEXT_CLICKS (iterative rounds, default 0).
"""
import json
import os
from pathlib import Path

import torch

from isegm.engine import recipe
from tests.test_train_configs.fixed_data import FixedDataset, fixed_focus_boxes

MODEL_NAME = "tiny_fixed"
RECIPE = recipe.SYNTHETIC_CPU.replace(
    crop_size=(64, 64), num_max_points=4,
    # Stochastic layers draw per-process randomness: no drop path, no dropout, so that N
    # processes and one process compute the same update.
    model_kwargs={"refine_size": 32, "drop_path_rate": 0.0, "head_dropout": 0.0},
    # no warm-up: the tests check the lr at the milestone; the IGA group at the base lr: at x 5
    # its first Adam steps amplify the float differences between 1 and 2 processes (gloo test)
    batch_size=4, epochs=2, lr=1e-3, warmup_steps=0, iga_lr_mult=1.0, milestones=(1,),
    checkpoint_interval=1,
    image_dump_interval=0, log_interval=1,
    max_num_next_clicks=int(os.environ.get("IGLR_TEST_NEXT_CLICKS", "0")))
BATCH_SIZE = RECIPE.batch_size


def init_model(cfg):
    model, model_cfg = recipe.init_model(cfg, RECIPE)
    assert not any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
                   for m in model.modules())
    return model, model_cfg


def train(model, cfg, model_cfg):
    trainer = recipe.make_trainer(model, cfg, model_cfg, RECIPE, FixedDataset(8),
                                  FixedDataset(4, offset=100), focus_sampler=fixed_focus_boxes,
                                  # eps 1e-3: Adam's first steps are sign-like, so weights whose
                                  # true gradient is 0 (biases before BatchNorm, the feedback IGA
                                  # term with a zero prev mask) would move by +-lr on float noise
                                  # and hide the comparison of one and N processes.
                                  optimizer_params={"lr": RECIPE.lr, "eps": 1e-3})
    losses = []
    step = trainer.train_step

    def recording_step(batch):
        out = step(batch)
        losses.append(float(out[0]))
        return out

    trainer.train_step = recording_step
    start = trainer.start_epoch
    trainer.run(RECIPE.epochs)
    rank = cfg.dist.rank
    root = Path(cfg.exp.root)
    torch.save(trainer.net_module.state_dict(), root / f"rank{rank}_from{start}_weights.pt")
    (root / f"rank{rank}_from{start}_losses.json").write_text(json.dumps(losses))


def main(cfg):
    model, model_cfg = init_model(cfg)
    train(model, cfg, model_cfg)
