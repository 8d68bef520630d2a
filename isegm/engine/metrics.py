"""Training metrics with reset / update / compute, reduced over distributed processes."""
from __future__ import annotations

import torch

from isegm.engine.distributed import all_reduce_sum


class IoUMetric:
    """Mean per-sample IoU of `pred_output` (logits) thresholded at `threshold` probability.

    update(pred (B,1,H,W) logits, gt (B,1,H,W) 1/0/-1). Ignore pixels are excluded. A sample whose
    union is empty scores 1. `compute()` sums over all processes (call it on every rank).
    """

    def __init__(self, name: str = "iou", pred_output: str = "instances",
                 gt_key: str = "instances", threshold: float = 0.49, ignore_label: float = -1):
        self.name = name
        self.pred_output = pred_output
        self.gt_key = gt_key
        self.threshold = threshold
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        self._sum: torch.Tensor | float = 0.0   # a tensor on the predictions' device once updated
        self._count = 0

    @torch.no_grad()
    def batch_ious(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """(B,) IoU of each sample."""
        if pred.shape[-2:] != gt.shape[-2:]:
            pred = torch.nn.functional.interpolate(pred.float(), size=gt.shape[-2:],
                                                   mode="bilinear", align_corners=True)
        valid = gt != self.ignore_label
        p = (torch.sigmoid(pred.float()) > self.threshold) & valid
        g = (gt > 0.5) & valid
        dims = tuple(range(1, gt.dim()))
        inter = (p & g).sum(dim=dims).float()
        union = (p | g).sum(dim=dims).float()
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Accumulate the batch's IoUs on their device (no value is read back per batch)."""
        ious = self.batch_ious(pred, gt)
        self._sum = self._sum + ious.sum(dtype=torch.float64)
        self._count += int(ious.numel())
        return ious

    def local_value(self) -> float:
        return float(self._sum) / max(self._count, 1)

    def compute(self) -> float:
        """Mean IoU over every sample seen by every process."""
        total = torch.as_tensor(self._sum, dtype=torch.float64)
        count = torch.tensor(float(self._count), dtype=torch.float64, device=total.device)
        totals = all_reduce_sum(torch.stack([total, count]))
        return float(totals[0] / totals[1].clamp_min(1))
