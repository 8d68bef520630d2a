"""A tiny deterministic in-memory dataset for trainer tests: item i depends only on i."""
import numpy as np
import torch


class FixedDataset(torch.utils.data.Dataset):
    """`n` images (3, S, S) with one coloured rectangle or ellipse each, a centre click."""

    def __init__(self, n: int = 8, size: int = 64, num_points: int = 4, offset: int = 0):
        self.items = [self._make(i + offset, size, num_points) for i in range(n)]

    @staticmethod
    def _make(i, size, m):
        rng = np.random.default_rng(1000 + i)
        image = rng.uniform(0.0, 0.4, size=(3, size, size)).astype(np.float32)
        h, w = rng.integers(size // 4, size // 2, size=2)
        y0, x0 = rng.integers(2, size - h - 2), rng.integers(2, size - w - 2)
        yy, xx = np.mgrid[:size, :size]
        if i % 2:
            mask = (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
        else:
            cy, cx = y0 + h / 2, x0 + w / 2
            mask = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1
        color = rng.uniform(0.5, 1.0, size=3).astype(np.float32)
        image[:, mask] = color[:, None] + rng.uniform(-0.05, 0.05, size=(3, int(mask.sum())))
        ys, xs = np.nonzero(mask)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        points = -np.ones((2 * m, 3), dtype=np.float32)
        points[0] = (ys[k], xs[k], 0)
        return {"images": torch.from_numpy(np.clip(image, 0, 1)),
                "points": torch.from_numpy(points),
                "instances": torch.from_numpy(mask[None].astype(np.float32))}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return {k: v.clone() for k, v in self.items[index].items()}


def fixed_focus_boxes(gt, points, rng):
    """Deterministic focus boxes (no RNG use): the central 48x48 square."""
    h, w = gt.shape[-2:]
    box = torch.tensor([w / 8, h / 8, w * 7 / 8, h * 7 / 8], dtype=torch.float32)
    return box.repeat(gt.shape[0], 1).to(gt.device)
