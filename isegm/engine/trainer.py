"""The one trainer for interactive segmentation (spec §5, protocol rule 53).

Per batch: initial clicks come from the dataset's points sampler; with `max_num_next_clicks > 0`
a number of rounds t_max ~ U{0..max} is drawn, and each round predicts without gradients (eval
mode, BatchNorm on running or batch statistics per `click_rounds_bn`, prev mask zero before the
first round) and adds one click per sample at the largest error
(`isegm.inference.clicker.next_click_training`). With `target_recrop_prob` a sample is then seen
as the predictor sees click 2 and later: image, ground truth, clicks and the round's mask are
cropped to the target crop of the round's mask (the previous mask's box with the positive clicks,
x the model's `target_crop_r`) and resized back, so the previous mask comes from a lower zoom, as
at inference (docs/cpu-study.md §8). Then a focus box is drawn per sample for the refiner, the
refiner targets are cropped, and the declared losses are taken on the final forward.

After every epoch, before validation and the checkpoint, `precise_bn_batches` training batches
recompute the BatchNorm running statistics with the epoch's final weights (`recalibrate_batchnorm`,
"precise BN"): the exponential moving average of the running statistics lags weights that move
fast (from-scratch CPU recipes), and validation and inference in eval mode then see statistics
of older weights (measured: docs/cpu-study.md §6).

Everything runs on CPU (one process or several with gloo) and on CUDA (nccl, mixed precision).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from isegm.engine import distributed as du
from isegm.engine.checkpoint import (get_rng_states, load_model_weights, read_checkpoint,
                                     remove_stale_temporaries, save_checkpoint, set_rng_states,
                                     unwrap)
from isegm.engine.experiment import (ExperimentPaths, copy_config_module, create_exp_dir,
                                     find_resume_exp, model_exp_dir, write_resolved_config)
from isegm.engine.interaction import (CLICK_ROUND_BN_MODES, FocusBoxSampler,
                                      add_training_clicks, batch_norms, batch_statistics_mode,
                                      click_round_mode, crop_refine_targets, crop_to_rois,
                                      target_crop_rois)
from isegm.engine.losses import LossSpec, check_loss_specs, compute_losses
from isegm.engine.metrics import IoUMetric
from isegm.engine.optim import (apply_warmup, build_multistep_scheduler, build_optimizer,
                                clip_gradients)
from isegm.engine.runconfig import RunConfig
from isegm.utils.vis import training_visualization
from isegm.utils.log import logger, progress, setup_logging

FocusSampler = Callable[[torch.Tensor, torch.Tensor, np.random.Generator], torch.Tensor]

# Mixed precision: a non-finite loss is normal while GradScaler searches its scale (fp16
# overflow in the first steps): the step is skipped and counted. This many skipped steps in a
# row mean the run diverged and stop it.
MAX_CONSECUTIVE_NONFINITE_STEPS = 50


class ShardSampler(Sampler[int]):
    """Every `world_size`-th index from `rank`, in order, without padding (validation)."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def prepare_experiment(cfg: RunConfig, settings: dict[str, Any]) -> ExperimentPaths:
    """Create (or, on resume, reopen) the experiment folder on rank 0; every rank gets its paths.

    Writes the copy of the config module and the resolved configuration (`cfg` + `settings`).
    """
    if cfg.exp is not None:
        paths = cfg.exp
    elif cfg.dist.is_main:
        model_dir = model_exp_dir(cfg.paths.resolve("EXPS_PATH"), cfg.config_path)
        if cfg.resume_exp:
            paths = find_resume_exp(model_dir, cfg.resume_exp)
            paths.make_dirs()
        else:
            paths = create_exp_dir(model_dir, cfg.exp_name)
    else:
        paths = None
    root = du.broadcast_object(str(paths.root) if paths is not None else None)
    paths = ExperimentPaths.at(Path(root))
    cfg.exp = paths
    if cfg.dist.is_main:
        copy_config_module(paths, cfg.config_path)
        write_resolved_config(paths, {"run": cfg.to_dict(), "trainer": settings})
    return paths


def _describe(value: Any) -> Any:
    """Plain description of a setting for the resolved-configuration file."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, LossSpec):
        return {"name": value.name, "weight": value.weight, "loss": repr(value.loss),
                "output": value.output, "target": value.target}
    return repr(value)


class ISTrainer:
    """Train an interactive segmentation model (`IGLRModel` or any module with its interface).

    model: `forward(image, points, prev_mask, focus_boxes) -> dict` with 'instances' logits and,
    when focus boxes are passed and `model.use_refiner`, 'refined' and 'boundary' crop logits.
    cfg: the run settings (`RunConfig`). model_cfg: dict with at least 'num_max_points'.
    loss_cfg: list of `LossSpec` (name, weight, loss, output key, target key). Batch keys usable as
    targets: 'instances' (B,1,H,W) and, with the refiner, 'instances_crop', 'boundary_crop'.
    extra_settings: more values for the resolved-configuration file (e.g. the recipe).

    Distributed runs wrap the model in DistributedDataParallel; with `sync_bn` BatchNorm layers
    use statistics over the global batch (see `isegm.engine.distributed`), so N processes compute
    the update of one process with the same global batch. The no-gradient rounds of iterative
    training and validation call the unwrapped module in eval mode (no collectives), so ranks
    may draw different numbers of rounds.
    """

    def __init__(self, model: nn.Module, cfg: RunConfig, model_cfg: dict[str, Any],
                 loss_cfg: Sequence[LossSpec], trainset: Dataset, valset: Optional[Dataset] = None,
                 *, optimizer: str = "adam", optimizer_params: Optional[dict[str, Any]] = None,
                 backbone_lr_mult: float = 0.1, iga_lr_mult: Optional[float] = None,
                 lr_milestones: Sequence[int] = (),
                 lr_gamma: float = 0.1, metrics: Optional[Sequence[IoUMetric]] = None,
                 checkpoint_interval: int = 10, image_dump_interval: int = 200,
                 log_interval: int = 10, max_num_next_clicks: int = 0,
                 prev_mask_drop_prob: float = 0.0, target_recrop_prob: float = 0.0,
                 focus_sampler: Optional[FocusSampler] = None,
                 refine_band_ratio: float = 0.02, clip_grad_norm: Optional[float] = None,
                 use_amp: bool = True, sync_bn: bool = True, warmup_steps: int = 0,
                 click_rounds_bn: str = "eval", precise_bn_batches: int = 0,
                 find_unused_parameters: bool = False,
                 extra_settings: Optional[dict[str, Any]] = None):
        self.cfg = cfg
        self.model_cfg = dict(model_cfg)
        self.dist = cfg.dist
        self.device = cfg.dist.device
        self.is_main = cfg.dist.is_main
        self.loss_cfg = check_loss_specs(loss_cfg)
        self.trainset, self.valset = trainset, valset
        self.checkpoint_interval = int(checkpoint_interval)
        self.image_dump_interval = int(image_dump_interval)
        self.log_interval = max(1, int(log_interval))
        self.max_num_next_clicks = int(max_num_next_clicks)
        self.prev_mask_drop_prob = float(prev_mask_drop_prob)
        self.target_recrop_prob = float(target_recrop_prob)
        if not 0.0 <= self.target_recrop_prob <= 1.0:
            raise ValueError(f"target_recrop_prob must be in [0, 1], got {target_recrop_prob}")
        self.refine_band_ratio = float(refine_band_ratio)
        self.clip_grad_norm = clip_grad_norm
        self.warmup_steps = int(warmup_steps)
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if click_rounds_bn not in CLICK_ROUND_BN_MODES:
            raise ValueError(f"click_rounds_bn must be one of {CLICK_ROUND_BN_MODES}, "
                             f"got '{click_rounds_bn}'")
        self.click_rounds_bn = click_rounds_bn
        self.precise_bn_batches = int(precise_bn_batches)
        if self.precise_bn_batches < 0:
            raise ValueError(f"precise_bn_batches must be >= 0, got {precise_bn_batches}")
        self.use_amp = bool(use_amp) and self.device.type == "cuda"
        module = unwrap(model)
        self.with_prev_mask = bool(getattr(module, "with_prev_mask", True))
        self.use_refiner = bool(getattr(module, "use_refiner", False))
        self.refine_size = int(getattr(module, "refine_size", 256))
        self.target_crop_r = float(getattr(module, "target_crop_r", 1.4))
        self.focus_sampler = focus_sampler or FocusBoxSampler()
        if self.max_num_next_clicks > 0 and not self.with_prev_mask:
            raise ValueError("iterative training (max_num_next_clicks > 0) needs a model with "
                             "with_prev_mask=True")

        self._build_loaders()  # checks batch vs dataset sizes before any folder is created

        settings = {k: _describe(v) for k, v in dict(
            model=unwrap(model)._config if hasattr(unwrap(model), "_config") else repr(model),
            model_cfg=self.model_cfg, loss_cfg=list(self.loss_cfg), optimizer=optimizer,
            optimizer_params=optimizer_params, backbone_lr_mult=backbone_lr_mult,
            iga_lr_mult=iga_lr_mult, lr_milestones=list(lr_milestones), lr_gamma=lr_gamma,
            checkpoint_interval=checkpoint_interval, image_dump_interval=image_dump_interval,
            max_num_next_clicks=max_num_next_clicks, prev_mask_drop_prob=prev_mask_drop_prob,
            target_recrop_prob=self.target_recrop_prob,
            focus_sampler=self.focus_sampler, refine_band_ratio=refine_band_ratio,
            clip_grad_norm=clip_grad_norm, use_amp=self.use_amp, sync_bn=sync_bn,
            warmup_steps=self.warmup_steps, click_rounds_bn=click_rounds_bn,
            precise_bn_batches=self.precise_bn_batches,
            trainset=repr(trainset), trainset_len=len(trainset),
            valset=repr(valset), valset_len=len(valset) if valset is not None else 0).items()}
        settings.update({k: _describe(v) for k, v in (extra_settings or {}).items()})
        self.exp = prepare_experiment(cfg, settings)
        setup_logging(self.exp.log_file, enabled=self.is_main)
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(self.exp.root))
        logger.info(f"experiment folder: {self.exp.root}")
        logger.info(f"{self.dist.world_size} process(es), backend {self.dist.backend or 'none'}, "
                    f"device {self.device}, global batch {cfg.batch_size} = "
                    f"{cfg.per_process_batch} per process")
        if cfg.resume_checkpoint is not None and self.is_main:
            for path in remove_stale_temporaries(self.exp.checkpoints):
                logger.warning(f"removed '{path}', left by an interrupted checkpoint write")

        # Model, weights, distributed wrapping.
        model = model.to(self.device)
        if cfg.weights is not None and cfg.resume_checkpoint is None:
            load_model_weights(model, read_checkpoint(cfg.weights, trust=cfg.trust_checkpoint),
                               str(cfg.weights))
            logger.info(f"initial weights loaded from {cfg.weights}")
        if self.dist.distributed and sync_bn:
            model = du.convert_sync_batchnorm(model, self.device)
        self.net_module = model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            self.net = DDP(model, device_ids=[self.device] if self.device.type == "cuda" else None,
                           find_unused_parameters=find_unused_parameters)
        else:
            self.net = model

        self.optim = build_optimizer(self.net_module, optimizer, optimizer_params, backbone_lr_mult,
                                     iga_lr_mult=iga_lr_mult)
        self.lr_scheduler = build_multistep_scheduler(self.optim, lr_milestones, lr_gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self._nonfinite_run = torch.zeros((), dtype=torch.int64, device=self.device)
        self._nonfinite_total = torch.zeros((), dtype=torch.int64, device=self.device)
        self.metrics = list(metrics) if metrics is not None else self._default_metrics()
        self.rng = np.random.default_rng(du.process_seed(cfg.seed, self.dist.rank))
        self.start_epoch = 0
        self.global_step = 0
        self.best_metric = -math.inf
        if cfg.resume_checkpoint is not None:
            self._resume(Path(cfg.resume_checkpoint))
        if cfg.start_epoch is not None:
            self._set_epoch_schedule(int(cfg.start_epoch))

    # -------------------------------------------------------------------------------------------
    def _default_metrics(self) -> list[IoUMetric]:
        metrics = [IoUMetric("iou", "instances", "instances")]
        if self.use_refiner:
            metrics.append(IoUMetric("refined_iou", "refined", "instances_crop"))
        return metrics

    def _build_loaders(self) -> None:
        cfg = self.cfg
        world, rank = self.dist.world_size, self.dist.rank
        if cfg.batch_size % world != 0:
            raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the number of "
                             f"processes {world}")
        needed = cfg.per_process_batch * world
        if len(self.trainset) < needed:
            raise ValueError(f"the training set holds {len(self.trainset)} samples, fewer than one "
                             f"global batch ({needed})")
        self.train_sampler = DistributedSampler(self.trainset, num_replicas=world, rank=rank,
                                                shuffle=True, seed=cfg.seed, drop_last=True)
        self.loader_generator = torch.Generator()
        self.train_loader = DataLoader(
            self.trainset, batch_size=cfg.per_process_batch, sampler=self.train_sampler,
            num_workers=cfg.workers, drop_last=True, pin_memory=self.device.type == "cuda",
            worker_init_fn=du.worker_init_fn, generator=self.loader_generator,
            persistent_workers=False)
        self.val_loader = None
        if self.valset is not None:
            self.val_loader = DataLoader(
                self.valset, batch_size=cfg.per_process_val_batch,
                sampler=ShardSampler(len(self.valset), rank, world), num_workers=cfg.workers,
                drop_last=False, worker_init_fn=du.worker_init_fn)

    def _resume(self, path: Path) -> None:
        state = read_checkpoint(path, trust=self.cfg.trust_checkpoint)
        missing = [k for k in ("optimizer", "lr_scheduler", "epoch", "step") if k not in state]
        if missing:
            raise ValueError(f"checkpoint '{path}' lacks training state {missing}; use --weights "
                             f"to start from its weights instead")
        load_model_weights(self.net_module, state, str(path))
        self.optim.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        saved_epoch = int(state["epoch"])
        self.start_epoch = saved_epoch + 1
        self.global_step = int(state["step"])
        self.best_metric = float(state.get("best_metric", -math.inf))
        rng_states = state.get("rng_states", {})
        if isinstance(rng_states, dict) and self.dist.rank in rng_states:
            set_rng_states(rng_states[self.dist.rank], self.rng)
        logger.info(f"resumed from epoch {saved_epoch} ({path}): training continues at epoch "
                    f"{self.start_epoch}, step {self.global_step}, lr {self.current_lrs()}; "
                    f"log lines of an interrupted epoch {self.start_epoch} above are superseded")

    def _set_epoch_schedule(self, epoch: int) -> None:
        """Start at `epoch` with that epoch's learning rate (--start-epoch)."""
        self.start_epoch = epoch
        sched = self.lr_scheduler
        decays = sum(count for m, count in sched.milestones.items() if m <= epoch)
        for group in self.optim.param_groups:
            group["lr"] = group["initial_lr"] * sched.gamma ** decays
        sched.last_epoch = epoch
        sched._last_lr = [group["lr"] for group in self.optim.param_groups]
        logger.info(f"starting at epoch {epoch} with lr {self.current_lrs()}")

    def current_lrs(self) -> dict[str, float]:
        return {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optim.param_groups)}

    def _seed_epoch(self, epoch: int) -> None:
        """Reseed every RNG from (seed, rank, epoch): an epoch is reproducible on its own, so a
        resumed run repeats exactly what the uninterrupted run did."""
        seed = du.process_seed(self.cfg.seed, self.dist.rank, epoch)
        du.seed_everything(seed)
        self.rng = np.random.default_rng(seed + 1)
        self.loader_generator.manual_seed(seed + 2)
        self.train_sampler.set_epoch(epoch)

    # -------------------------------------------------------------------------------------------
    def run(self, num_epochs: int, validation: bool = True) -> dict[str, float]:
        """Train epochs [start_epoch, num_epochs); returns the last epoch's logged values."""
        num_epochs = int(self.cfg.epochs if self.cfg.epochs is not None else num_epochs)
        logger.info(f"training epochs {self.start_epoch}..{num_epochs - 1}, "
                    f"{len(self.train_loader)} steps per epoch")
        summary: dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, num_epochs):
                summary = self.run_epoch(epoch, validation)
                self.lr_scheduler.step()
                self.save_checkpoints(epoch, num_epochs, summary)
        finally:
            if self.writer is not None:
                self.writer.flush()
        return summary

    def run_epoch(self, epoch: int, validation: bool = True) -> dict[str, float]:
        """One epoch: training, the BatchNorm recalibration (`precise_bn_batches`), validation
        (if asked and a validation set exists); returns the logged values. The learning-rate
        schedule and the checkpoints are the caller's."""
        summary = self.training(epoch)
        if self.precise_bn_batches:
            self.recalibrate_batchnorm(epoch)
        if validation and self.val_loader is not None:
            summary.update(self.validation(epoch))
        return summary

    def training(self, epoch: int) -> dict[str, float]:
        self._seed_epoch(epoch)
        self.net.train()
        for metric in self.metrics:
            metric.reset()
        # Sums stay on the device: nothing below reads a value back every step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        finite_steps = torch.zeros((), dtype=torch.float64, device=self.device)
        skipped_before = self.skipped_steps_total()
        steps = 0
        times = {"data": 0.0, "step": 0.0}
        tic = time.perf_counter()
        bar = progress(self.train_loader, desc=f"epoch {epoch}", total=len(self.train_loader),
                       disable=not self.is_main)
        for batch in bar:
            times["data"] += time.perf_counter() - tic
            tic = time.perf_counter()
            loss, terms, outputs, batch = self.train_step(batch)
            times["step"] += time.perf_counter() - tic
            self.global_step += 1
            steps += 1
            finite = torch.isfinite(loss)
            loss_sum += torch.where(finite, loss.double(), 0.0)
            finite_steps += finite.double()
            with torch.no_grad():
                for metric in self.metrics:
                    if metric.pred_output in outputs and metric.gt_key in batch:
                        metric.update(outputs[metric.pred_output], batch[metric.gt_key])
            if self.global_step % self.log_interval == 0:
                self._check_nonfinite_run()
                if self.is_main:
                    self._log_step(loss, terms)
            if self.is_main and self.image_dump_interval > 0 and \
                    self.global_step % self.image_dump_interval == 0:
                self.dump_images(batch, outputs, f"train_epoch{epoch:03d}_step{self.global_step:06d}")
            tic = time.perf_counter()
        self._check_nonfinite_run()
        totals = du.all_reduce_sum(torch.stack([loss_sum, finite_steps]))
        summary = {"train/loss": float(totals[0] / totals[1].clamp_min(1.0))}
        for metric in self.metrics:
            summary[f"train/{metric.name}"] = metric.compute()
        summary["train/s_per_step"] = times["step"] / max(steps, 1)
        summary["train/data_s_per_step"] = times["data"] / max(steps, 1)
        skipped = self.skipped_steps_total() - skipped_before
        if skipped:
            summary["train/skipped_steps"] = float(skipped)
        self._log_epoch(epoch, summary)
        return summary

    def _prepare_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()
                if isinstance(v, torch.Tensor)}

    @staticmethod
    def _host_tensors(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's tensors on the CPU (as the loader gives them: no copy), for the CPU-side
        click rule and focus-box sampler, so that neither copies data back from the device."""
        return {k: v.cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def _interactive_rounds(self, batch: dict[str, torch.Tensor], host: dict[str, torch.Tensor],
                            num_rounds: Optional[int] = None) -> Optional[torch.Tensor]:
        """Rule 53: clicks and prev mask after t_max ~ U{0..max} rounds without gradients
        (`num_rounds` fixes t_max, e.g. for benchmarks); returns the prev mask (B,1,H,W) on the
        device, or None without a prev-mask input.

        `batch` holds the device tensors ('images', 'instances'), `host` the loader's CPU
        tensors ('points', 'instances'); the new clicks go to `host['points']`. With
        `target_recrop_prob`, that share of the samples is seen from the second round on as the
        predictor sees it from the second click on: after each round's click, the target crop
        of the round's mask (`target_crop_rois`, the model's `target_crop_r`) resized back to
        the full frame, with the round's probabilities resized into it as the prev mask, so the
        prev mask is a prediction made at a lower zoom (`crop_to_rois` replaces 'images' and
        'instances' in both dicts, and the clicks). The click rule runs on the CPU: each round
        reads its prediction back once, nothing else is copied."""
        if not self.with_prev_mask:
            return None
        images = batch["images"]
        prev = torch.zeros(images.shape[:1] + (1,) + images.shape[2:], dtype=images.dtype,
                           device=images.device)
        if num_rounds is None:
            num_rounds = int(self.rng.integers(0, self.max_num_next_clicks + 1))
        if num_rounds > 0:
            recrop = self.rng.random(len(images)) < self.target_recrop_prob
            points_host, gt_host = host["points"], host["instances"]
            with torch.no_grad(), torch.autocast(self.device.type, enabled=self.use_amp), \
                    click_round_mode(self.net_module, self.click_rounds_bn):
                for t in range(1, num_rounds + 1):
                    out = self.net_module(batch["images"], points_host.to(images.device), prev)
                    prev = torch.sigmoid(out["instances"].float())
                    prev_host = prev.cpu()
                    points_host = add_training_clicks(points_host, gt_host, prev_host, t,
                                                      self.rng)
                    if recrop.any():
                        rois = target_crop_rois(prev_host, points_host, self.target_crop_r)
                        rois = [roi if chosen else None for roi, chosen in zip(rois, recrop)]
                        batch["images"], batch["instances"], prev, points_host = crop_to_rois(
                            batch["images"], batch["instances"], prev, points_host, rois)
                        gt_host = batch["instances"].cpu()
            host["points"], host["instances"] = points_host, gt_host
        if self.prev_mask_drop_prob > 0:
            keep = torch.from_numpy(self.rng.random(len(prev)) >= self.prev_mask_drop_prob)
            prev = prev * keep.to(prev.device, prev.dtype).view(-1, 1, 1, 1)
        return prev

    def train_step(self, batch: dict[str, Any]):
        """One optimisation step; returns (loss, terms, outputs, batch on device with targets).

        No value is read back from the device here except by the click rounds (their CPU click
        rule) and, without mixed precision, the finiteness check of the loss. With mixed
        precision a non-finite loss is left to GradScaler, which skips the step; the skipped
        steps are counted on the device and checked every `log_interval` steps."""
        host = self._host_tensors(batch)
        batch = self._prepare_batch(batch)
        prev = self._interactive_rounds(batch, host)
        images = batch["images"]
        points = batch["points"] = host["points"].to(self.device, non_blocking=True)
        focus_boxes = self._add_refine_targets(batch, host)
        self.optim.zero_grad(set_to_none=True)
        apply_warmup(self.optim, self.lr_scheduler, self.global_step, self.warmup_steps)
        with torch.autocast(self.device.type, enabled=self.use_amp):
            outputs = self.net(images, points, prev, focus_boxes)
            loss, terms = compute_losses(self.loss_cfg, outputs, batch)
        if self.scaler.is_enabled():
            bad = (~torch.isfinite(loss.detach())).to(torch.int64)
            self._nonfinite_run = (self._nonfinite_run + bad) * bad
            self._nonfinite_total = self._nonfinite_total + bad
        elif not torch.isfinite(loss):
            detail = " ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise FloatingPointError(f"loss is {float(loss.detach())} at step "
                                     f"{self.global_step + 1}: {detail}")
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm:
            self.scaler.unscale_(self.optim)
            clip_gradients(self.net_module, self.clip_grad_norm)
        self.scaler.step(self.optim)
        self.scaler.update()
        return loss.detach(), {k: v.detach() for k, v in terms.items()}, outputs, batch

    def skipped_steps_total(self) -> int:
        """Steps skipped for a non-finite loss under mixed precision so far (reads the device)."""
        return int(self._nonfinite_total)

    def _check_nonfinite_run(self) -> None:
        """Raise FloatingPointError once MAX_CONSECUTIVE_NONFINITE_STEPS steps in a row had a
        non-finite loss (mixed precision; reads one value back from the device)."""
        run = int(self._nonfinite_run)
        if run >= MAX_CONSECUTIVE_NONFINITE_STEPS:
            raise FloatingPointError(
                f"the loss was non-finite in the last {run} steps in a row (up to step "
                f"{self.global_step}; limit MAX_CONSECUTIVE_NONFINITE_STEPS="
                f"{MAX_CONSECUTIVE_NONFINITE_STEPS}): GradScaler skipped them all, the run "
                f"diverged (lower the learning rate or use clip_grad_norm)")

    def _add_refine_targets(self, batch: dict[str, Any],
                            host: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """With the refiner: draw focus boxes (B,4) near the last click (from the CPU tensors
        `host['instances']` (B,1,H,W) and `host['points']` (B,2M,3)) and add the cropped
        'instances_crop' / 'boundary_crop' targets and 'focus_boxes' to `batch`; else None."""
        if not self.use_refiner:
            return None
        focus_boxes = self.focus_sampler(host["instances"], host["points"], self.rng)
        focus_boxes = focus_boxes.to(self.device, non_blocking=True)
        batch["instances_crop"], batch["boundary_crop"] = crop_refine_targets(
            batch["instances"], focus_boxes, self.refine_size, self.refine_band_ratio)
        batch["focus_boxes"] = focus_boxes
        return focus_boxes

    @torch.no_grad()
    def recalibrate_batchnorm(self, epoch: int) -> int:
        """Precise BN: recompute every BatchNorm's running statistics as the plain average over
        `precise_bn_batches` training batches (with their click rounds) under the current
        weights, with the rest of the network in eval mode (no dropout or drop path, as at
        inference). The click rounds of all batches run first, on the old statistics, as in
        training; then the statistics are reset and accumulated (momentum None). Averaged over
        processes afterwards (a no-op with SyncBatchNorm). The batches come from the training
        set, drawn from (seed, rank, epoch) only, so a resumed run repeats them. Returns the
        number of batches used (fewer if the loader is shorter)."""
        norms = [m for m in batch_norms(self.net_module) if m.track_running_stats]
        if not norms:
            return 0
        seed = du.process_seed(self.cfg.seed, self.dist.rank, 20_000 + epoch)
        rng_backup, rng_states = self.rng, get_rng_states()
        generator_state = self.loader_generator.get_state()
        du.seed_everything(seed)
        self.rng = np.random.default_rng(seed + 1)
        self.loader_generator.manual_seed(seed + 2)
        inputs = []
        for batch in self.train_loader:
            host = self._host_tensors(batch)
            batch = self._prepare_batch(batch)
            prev = self._interactive_rounds(batch, host)
            focus_boxes = self._add_refine_targets(batch, host)
            inputs.append((batch["images"], host["points"].to(self.device), prev, focus_boxes))
            if len(inputs) == self.precise_bn_batches:
                break
        self.rng = rng_backup
        set_rng_states(rng_states)
        self.loader_generator.set_state(generator_state)
        for m in norms:
            m.reset_running_stats()
        # eval mode (no dropout, no drop path: the statistics eval-mode inference will see),
        # BatchNorm alone on batch statistics, accumulated as a plain average (momentum None)
        with batch_statistics_mode(self.net_module, momentum=None), \
                torch.autocast(self.device.type, enabled=self.use_amp):
            for images, points, prev, focus_boxes in inputs:
                self.net_module(images, points, prev, focus_boxes)
        if self.dist.distributed:
            for m in norms:
                m.running_mean.copy_(du.all_reduce_mean(m.running_mean))
                m.running_var.copy_(du.all_reduce_mean(m.running_var))
        logger.info(f"epoch {epoch}: BatchNorm statistics recomputed on {len(inputs)} training "
                    f"batches")
        return len(inputs)

    @torch.no_grad()
    def validation(self, epoch: int) -> dict[str, float]:
        """Loss and metrics on the validation set: initial clicks, zero prev mask, one forward."""
        self.net_module.eval()
        for metric in self.metrics:
            metric.reset()
        rng_backup = self.rng
        self.rng = np.random.default_rng(du.process_seed(self.cfg.seed, self.dist.rank, 10_000))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        first = None
        for batch in progress(self.val_loader, desc=f"val {epoch}", total=len(self.val_loader),
                              disable=not self.is_main):
            host = self._host_tensors(batch)
            batch = self._prepare_batch(batch)
            images, gt, points = batch["images"], batch["instances"], batch["points"]
            prev = torch.zeros_like(gt, dtype=images.dtype) if self.with_prev_mask else None
            focus_boxes = self._add_refine_targets(batch, host)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                outputs = self.net_module(images, points, prev, focus_boxes)
                loss, _ = compute_losses(self.loss_cfg, outputs, batch)
            loss_sum = loss_sum + loss.detach().double() * len(images)
            count += len(images)
            for metric in self.metrics:
                if metric.pred_output in outputs and metric.gt_key in batch:
                    metric.update(outputs[metric.pred_output], batch[metric.gt_key])
            if first is None:
                first = (batch, outputs)
        self.rng = rng_backup
        totals = du.all_reduce_sum(torch.stack([
            loss_sum, torch.tensor(float(count), dtype=torch.float64, device=self.device)]))
        summary = {"val/loss": float(totals[0] / totals[1].clamp_min(1.0))}
        for metric in self.metrics:
            summary[f"val/{metric.name}"] = metric.compute()
        if self.is_main and first is not None and self.image_dump_interval > 0:
            self.dump_images(first[0], first[1], f"val_epoch{epoch:03d}")
        self.net_module.train()
        self._log_epoch(epoch, {k: v for k, v in summary.items()})
        return summary

    # -------------------------------------------------------------------------------------------
    def _log_step(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        assert self.writer is not None
        step = self.global_step
        self.writer.add_scalar("train/step_loss", float(loss), step)
        for name, value in terms.items():
            self.writer.add_scalar(f"train/step_{name}", float(value), step)
        for name, lr in self.current_lrs().items():
            self.writer.add_scalar(f"lr/{name}", lr, step)
        backbone = getattr(self.net_module, "backbone", None)
        if hasattr(backbone, "iga_magnitudes"):
            for name, value in backbone.iga_magnitudes().items():
                self.writer.add_scalar(f"iga/{name}", value, step)

    def _log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        logger.info(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"epoch/{key}", value, epoch)

    def dump_images(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
                    name: str) -> Path:
        """Write image+clicks | gt | coarse | refined | boundary of the first sample."""
        box = batch.get("focus_boxes")
        image = training_visualization(batch, outputs, 0, box[0] if box is not None else None)
        path = self.exp.vis / f"{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if self.writer is not None:
            tag = "val/images" if name.startswith("val") else "train/images"
            self.writer.add_image(tag, image, self.global_step, dataformats="HWC")
        return path

    def save_checkpoints(self, epoch: int, num_epochs: int, summary: dict[str, float]) -> None:
        """last (every epoch), NNN (every checkpoint_interval epochs and the final one), best."""
        # RNG states of every rank, gathered so that a resume restores each process.
        states = get_rng_states(self.rng)
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, states)
            rng_states = {r: s for r, s in enumerate(gathered)}
        else:
            rng_states = {0: states}
        key = "val/iou" if "val/iou" in summary else "train/iou"
        metric = summary.get(key)
        improved = metric is not None and metric > self.best_metric
        if improved:
            self.best_metric = float(metric)
        if not self.is_main:
            return
        extras = {"optimizer": self.optim.state_dict(),
                  "lr_scheduler": self.lr_scheduler.state_dict(),
                  "grad_scaler": self.scaler.state_dict(), "epoch": epoch,
                  "step": self.global_step, "best_metric": self.best_metric,
                  "best_metric_name": key, "rng_states": rng_states,
                  "model_cfg": _describe(self.model_cfg), "summary": summary}
        ckpt_dir = self.exp.checkpoints
        save_checkpoint(ckpt_dir / "last_checkpoint.pth", self.net_module, **extras)
        periodic = self.checkpoint_interval > 0 and (epoch + 1) % self.checkpoint_interval == 0
        if periodic or epoch + 1 == num_epochs:
            save_checkpoint(ckpt_dir / f"{epoch:03d}.pth", self.net_module, **extras)
        if improved:
            save_checkpoint(ckpt_dir / "best_checkpoint.pth", self.net_module, **extras)
            logger.info(f"new best {key} {self.best_metric:.4f} at epoch {epoch}")
