"""Shared pieces of the training config modules: each module states only what differs.

    # models/iglr/segformerB3_S2_cclvs.py
    from isegm.engine import recipe
    MODEL_NAME = "segformerB3_S2_cclvs"
    RECIPE = recipe.COCO_LVIS.replace(backbone="mit_b3", batch_size=24)
    BATCH_SIZE = RECIPE.batch_size
    init_model, train, main = recipe.entry_points(RECIPE)

A module that needs different behaviour defines its own `init_model(cfg)`, `train(model, cfg,
model_cfg)` or `main(cfg)` instead (see tests/test_train_configs/tiny_fixed.py).

`Recipe` holds the model constructor arguments, data (datasets, crop, click sampler), loss
weights and the schedule. Reference values follow spec §5 and protocol rule 54 (IGLR: M = 24,
gamma 0.8, merge 0.15 of at most 2 objects, centre first click, 3 iterative rounds, 256x256 crop,
click disks of radius 5, Adam lr 5e-4 with backbone lr x 0.1, multi-step decay at the released
milestones).

IGA coefficients (spec §3.4, §5): in every recipe they form an optimizer group of their own at
lr x `iga_lr_mult` (10: 5e-3 in the reference recipes, where the backbone learns at 5e-5). They
start at zero; a click term moves attention once |a_h| is O(1) (P and N are max-pooled to 0/1),
which Adam reaches in a few hundred steps at 5e-3 and never at the backbone's rate within a
schedule's first epochs. Their mean magnitudes per stage are logged to tensorboard (`iga/*`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn as nn

from isegm.engine.interaction import FocusBoxSampler
from isegm.engine.losses import (BoundaryWeightedFocalLoss, LossSpec, NormalizedFocalLoss,
                                 SigmoidBinaryCrossEntropyLoss)
from isegm.engine.runconfig import RunConfig
from isegm.utils.log import logger

PRETRAINED_KEYS = {f"mit_b{i}": f"SEGFORMER_B{i}" for i in range(6)}


@dataclass(frozen=True)
class Recipe:
    # --- model (IGLRModel constructor) ---
    backbone: str = "mit_b0"
    pipeline: str = "s2"
    model_kwargs: dict = field(default_factory=dict)  # other IGLRModel arguments (ablations)
    pretrained: bool = True           # IMAGENET_PRETRAINED_MODELS.SEGFORMER_B* from configs.yml
    # --- data ---
    train_dataset: str = "SBD_Train"
    train_dataset_kwargs: dict = field(default_factory=dict)
    val_dataset: Optional[str] = "SBD_Train"   # the SBD val split as training-style items
    val_dataset_kwargs: dict = field(default_factory=lambda: {"split": "val"})
    crop_size: tuple = (256, 256)
    num_max_points: int = 24
    prob_gamma: float = 0.80
    merge_objects_prob: float = 0.15
    max_num_merged_objects: int = 2
    first_click_center: bool = True
    min_object_area: int = 80
    keep_background_prob: float = 0.0
    zoom_crop_prob: float = 0.2       # share of object crops zoomed as a poor first prediction's
    epoch_len: int = -1               # samples per epoch (-1: the whole training set)
    val_epoch_len: int = 500
    val_seed: int = 0                 # validation items (crop, object, clicks) fixed per index
    # --- losses (weights; 0 disables a term) ---
    instance_loss_weight: float = 1.0      # normalised focal loss on the coarse output
    refined_loss_weight: float = 1.0       # boundary-weighted focal loss on the refined crop
    boundary_loss_weight: float = 1.0      # BCE on the boundary logits vs dilate XOR erode
    boundary_weight: float = 4.0           # extra weight of boundary-band pixels (refined loss)
    band_ratio: float = 0.02               # band half-width / crop size
    # --- interaction during training ---
    max_num_next_clicks: int = 3
    prev_mask_drop_prob: float = 0.0
    target_recrop_prob: float = 1.0        # share of samples whose later click rounds see the
                                           # target crop of the previous round's mask, as the
                                           # predictor's clicks 2+ do (0: all on the loader's crop)
    click_rounds_bn: str = "eval"          # BatchNorm in the no-grad click rounds: eval | batch
    precise_bn_batches: int = 8            # training batches that recompute BN statistics
                                           # after every epoch (0: the running average only)
    focus_object_prob: float = 0.6         # share of whole-object focus boxes (as at inference)
    focus_object_scale: tuple = (1.1, 1.6)  # their size / the object's box, per axis
    focus_size_range: tuple = (0.3, 0.8)   # boundary focus boxes: side / object extent
    # --- schedule ---
    batch_size: int = 28
    epochs: int = 230
    lr: float = 5e-4
    backbone_lr_mult: float = 0.1
    iga_lr_mult: float = 10.0              # IGA coefficients' own group at lr * this
    warmup_steps: int = 0                  # linear lr warm-up over the first steps
    milestones: tuple = (190, 210)
    lr_gamma: float = 0.1
    clip_grad_norm: Optional[float] = None
    use_amp: bool = True
    checkpoint_interval: int = 10
    image_dump_interval: int = 500
    log_interval: int = 10

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with `changes`; `model_kwargs` entries are merged, not replaced."""
        if "model_kwargs" in changes:
            changes["model_kwargs"] = {**self.model_kwargs, **changes["model_kwargs"]}
        return dataclasses.replace(self, **changes)

    def model_params(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "pipeline": self.pipeline,
                "infer_size": self.crop_size[0], **self.model_kwargs}


# Reference recipes (spec §5), with the released schedules: SBD 230 epochs decayed at 190 / 210
# (B0; B3 on SBD overrides to 60 epochs at 50 / 60), COCO+LVIS 85 x 30k samples decayed at 70 / 80
# (B3: 65 / 85), keep_background_prob 0.05 on COCO+LVIS (issue 15). No warm-up (warmup_steps 0):
# these start from ImageNet weights at a backbone lr of 5e-5.
SBD = Recipe()
COCO_LVIS = Recipe(train_dataset="COCO_LVIS",
                   train_dataset_kwargs={"split": "train", "stuff_prob": 0.2},
                   val_dataset="COCO_LVIS", val_dataset_kwargs={"split": "val"},
                   min_object_area=1000, keep_background_prob=0.05, epoch_len=30000, epochs=85,
                   milestones=(70, 80), batch_size=24)
# CPU scale: the procedural dataset, small crops, minutes per run, from scratch (backbone at the
# full lr). Stable recipe (issue 15): lr 1e-3 with a linear warm-up over 100 steps and clipping
# at norm 1; the IGA coefficients at lr x 5 = 5e-3, the absolute rate of the reference recipes'
# IGA group (lr 2e-3 without warm-up, IGA x 20, collapsed mid-run: validation IoU 0.00).
# The target crop (predictors and training click rounds) is 3x the previous mask: a from-scratch
# model's first predictions are small and partial, and tighter crops of them (1.4, 2) cut the
# object off at the second click, which then scores below the first. The refiner's focus box is
# the square around the click ('click_square', the boxes it trains on near the click): the 'diff'
# rule gives the whole target crop whenever the coarse mask did not change at the click, which a
# from-scratch model often does not, and refining that box at 64x64 lowers mIoU click after click
# (docs/cpu-study.md §8).
SYNTHETIC_CPU = Recipe(train_dataset="Synthetic",
                       train_dataset_kwargs={"num_samples": 2000, "image_size": (128, 128),
                                             "split": "train"},
                       val_dataset="Synthetic",
                       val_dataset_kwargs={"num_samples": 48, "image_size": (128, 128),
                                           "split": "val"},
                       crop_size=(96, 96), num_max_points=12, min_object_area=30,
                       model_kwargs={"refine_size": 64, "drop_path_rate": 0.0,
                                     "target_crop_r": 3.0, "focus_strategy": "click_square"},
                       pretrained=False, epoch_len=320, val_epoch_len=-1, batch_size=8,
                       epochs=12, lr=1e-3, backbone_lr_mult=1.0, iga_lr_mult=5.0,
                       warmup_steps=100, clip_grad_norm=1.0, milestones=(9,),
                       use_amp=False, checkpoint_interval=4, image_dump_interval=40,
                       log_interval=5)
# CPU scale on real images (the CPU ablation study's base): trains on the 350-image training split
# of COCO_MVal and validates on its 50 held-out images (`CocoMValDataset` split rule, items fixed
# per index), starting from ImageNet MiT weights when configs.yml points to them (from scratch
# with a warning otherwise). Warm-up over 200 steps.
COCO_MVAL_CPU = SYNTHETIC_CPU.replace(train_dataset="COCO_MVal_train", train_dataset_kwargs={},
                                      val_dataset="COCO_MVal_val", val_dataset_kwargs={},
                                      pretrained=True, warmup_steps=200)


def pretrained_path(cfg: RunConfig, backbone: str) -> Optional[str]:
    """configs.yml IMAGENET_PRETRAINED_MODELS.SEGFORMER_B* if the file exists; None (with a
    logged warning: training from scratch) when only the built-in default is absent; an
    explicitly given path that is absent raises (`resolve_pretrained_path`)."""
    from isegm.model.pretrained import resolve_pretrained_path
    key = PRETRAINED_KEYS.get(backbone)
    if key is None:
        logger.warning(f"no ImageNet weights are known for backbone '{backbone}': training it "
                       f"from scratch")
        return None
    path = resolve_pretrained_path(cfg.paths, key)
    return str(path) if path is not None else None


def init_model(cfg: RunConfig, recipe: Recipe) -> tuple[nn.Module, dict[str, Any]]:
    """Build the IGLRModel of the recipe (with ImageNet MiT weights if configured)."""
    from isegm.model import IGLRModel, load_pretrained_mit
    model = IGLRModel(**recipe.model_params())
    if recipe.pretrained and cfg.resume_checkpoint is None and cfg.weights is None:
        path = pretrained_path(cfg, recipe.backbone)
        if path is not None:
            report = load_pretrained_mit(model.backbone, path, trust=cfg.trust_checkpoint)
            logger.info(f"ImageNet weights loaded from {path}: {report}")
    model_cfg = {"crop_size": tuple(recipe.crop_size), "num_max_points": recipe.num_max_points,
                 "model": recipe.model_params()}
    return model, model_cfg


def build_datasets(cfg: RunConfig, recipe: Recipe):
    """(trainset, valset or None); a missing dataset path raises before any other work."""
    from isegm.data.points_sampler import MultiPointSampler
    from isegm.data.transforms import build_train_augmentator, build_val_augmentator
    from isegm.data.datasets import get_dataset
    sampler = MultiPointSampler(recipe.num_max_points, prob_gamma=recipe.prob_gamma,
                                merge_objects_prob=recipe.merge_objects_prob,
                                max_num_merged_objects=recipe.max_num_merged_objects,
                                first_click_center=recipe.first_click_center)
    trainset = get_dataset(recipe.train_dataset, cfg.paths, for_training=True,
                           augmentator=build_train_augmentator(tuple(recipe.crop_size),
                                                               zoom_prob=recipe.zoom_crop_prob),
                           points_sampler=sampler, min_object_area=recipe.min_object_area,
                           keep_background_prob=recipe.keep_background_prob,
                           epoch_len=recipe.epoch_len, **recipe.train_dataset_kwargs)
    valset = None
    if recipe.val_dataset:
        val_sampler = MultiPointSampler(recipe.num_max_points, prob_gamma=recipe.prob_gamma,
                                        first_click_center=recipe.first_click_center)
        valset = get_dataset(recipe.val_dataset, cfg.paths, for_training=True,
                             augmentator=build_val_augmentator(tuple(recipe.crop_size)),
                             points_sampler=val_sampler, min_object_area=recipe.min_object_area,
                             epoch_len=recipe.val_epoch_len, fixed_seed=recipe.val_seed,
                             **recipe.val_dataset_kwargs)
    return trainset, valset


def loss_specs(recipe: Recipe, use_refiner: bool) -> list[LossSpec]:
    """The declared loss terms (spec §5); terms of weight 0 are left out. There is no auxiliary
    head: the 1/4-resolution logits are the main output before upsampling, not a second head,
    so a loss on them would only reweight the main loss."""
    specs = [
        LossSpec("instance", recipe.instance_loss_weight, NormalizedFocalLoss(alpha=0.5, gamma=2),
                 output="instances", target="instances"),
    ]
    if use_refiner:
        specs += [
            LossSpec("refined", recipe.refined_loss_weight,
                     BoundaryWeightedFocalLoss(alpha=0.5, gamma=2,
                                               boundary_weight=recipe.boundary_weight,
                                               band_ratio=recipe.band_ratio),
                     output="refined", target="instances_crop"),
            LossSpec("boundary", recipe.boundary_loss_weight, SigmoidBinaryCrossEntropyLoss(),
                     output="boundary", target="boundary_crop"),
        ]
    return [s for s in specs if s.weight > 0]


def make_trainer(model: nn.Module, cfg: RunConfig, model_cfg: dict[str, Any], recipe: Recipe,
                 trainset, valset, **overrides: Any):
    """The ISTrainer of the recipe (`overrides` replace trainer arguments)."""
    from isegm.engine.trainer import ISTrainer
    kwargs = dict(
        optimizer="adam", optimizer_params={"lr": recipe.lr, "betas": (0.9, 0.999), "eps": 1e-8},
        backbone_lr_mult=recipe.backbone_lr_mult, iga_lr_mult=recipe.iga_lr_mult,
        lr_milestones=recipe.milestones,
        lr_gamma=recipe.lr_gamma, checkpoint_interval=recipe.checkpoint_interval,
        image_dump_interval=recipe.image_dump_interval, log_interval=recipe.log_interval,
        max_num_next_clicks=recipe.max_num_next_clicks,
        prev_mask_drop_prob=recipe.prev_mask_drop_prob,
        target_recrop_prob=recipe.target_recrop_prob,
        focus_sampler=FocusBoxSampler(size_range=tuple(recipe.focus_size_range),
                                      object_prob=recipe.focus_object_prob,
                                      object_scale_range=tuple(recipe.focus_object_scale)),
        refine_band_ratio=recipe.band_ratio, clip_grad_norm=recipe.clip_grad_norm,
        use_amp=recipe.use_amp, warmup_steps=recipe.warmup_steps,
        click_rounds_bn=recipe.click_rounds_bn, precise_bn_batches=recipe.precise_bn_batches,
        extra_settings={"recipe": dataclasses.asdict(recipe)})
    kwargs.update(overrides)
    use_refiner = bool(getattr(model, "use_refiner", False))
    return ISTrainer(model, cfg, model_cfg, loss_specs(recipe, use_refiner), trainset, valset,
                     **kwargs)


def train(model: nn.Module, cfg: RunConfig, model_cfg: dict[str, Any], recipe: Recipe,
          datasets=None) -> dict[str, float]:
    """Build the datasets (unless given) and the trainer, then run the schedule."""
    trainset, valset = datasets if datasets is not None else build_datasets(cfg, recipe)
    trainer = make_trainer(model, cfg, model_cfg, recipe, trainset, valset)
    return trainer.run(num_epochs=recipe.epochs)


def main(cfg: RunConfig, recipe: Recipe) -> dict[str, float]:
    """Datasets first (a missing path fails before anything is built), then model and training."""
    datasets = build_datasets(cfg, recipe)
    model, model_cfg = init_model(cfg, recipe)
    return train(model, cfg, model_cfg, recipe, datasets=datasets)


def entry_points(recipe: Recipe):
    """The RITM-family module functions of a config module built on `recipe`:
    (init_model(cfg), train(model, cfg, model_cfg), main(cfg))."""
    def module_init_model(cfg: RunConfig) -> tuple[nn.Module, dict[str, Any]]:
        return init_model(cfg, recipe)

    def module_train(model: nn.Module, cfg: RunConfig, model_cfg: dict[str, Any]):
        return train(model, cfg, model_cfg, recipe)

    def module_main(cfg: RunConfig) -> dict[str, float]:
        return main(cfg, recipe)

    return module_init_model, module_train, module_main
