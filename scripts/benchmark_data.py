"""Throughput of the training data pipeline: samples/s with 0 and 2 DataLoader workers.

Each item is read/generated, augmented (object-centred 256x256 crop, flip, colour jitter) and gets
its clicks from MultiPointSampler (24 points, IGLR settings), then batches are collated.

    .venv/bin/python scripts/benchmark_data.py                 # synthetic + COCO-MVal if present
    .venv/bin/python scripts/benchmark_data.py --items 200 --workers 0 2 4
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


from isegm.data.datasets import CocoMValDataset, SyntheticDataset  # noqa: E402
from isegm.data.points_sampler import MultiPointSampler  # noqa: E402
from isegm.data.transforms import build_train_augmentator  # noqa: E402
from isegm.utils.config import load_config  # noqa: E402


def measure(dataset: torch.utils.data.Dataset, workers: int, items: int, batch_size: int) -> float:
    """Samples per second over `items` items (after one warm-up batch)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         shuffle=True, drop_last=True,
                                         persistent_workers=False)
    it = iter(loader)
    next(it)   # worker start-up and first batch are not timed
    count, start = 0, time.perf_counter()
    for batch in it:
        count += batch['images'].shape[0]
        if count >= items:
            break
    elapsed = time.perf_counter() - start
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--items', type=int, default=160, help='timed samples per setting')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--coco-mval', type=str, default=None,
                        help='COCO-MVal root (default: COCO_MVAL_PATH from configs.yml, then '
                             '../shared/datasets/COCO_MVal)')
    args = parser.parse_args()
    torch.manual_seed(0)

    def sampler() -> MultiPointSampler:
        return MultiPointSampler(max_num_points=24, prob_gamma=0.8, merge_objects_prob=0.15,
                                 max_num_merged_objects=2, first_click_center=True)

    epoch_len = args.items + 4 * args.batch_size
    datasets = {'Synthetic (320x320)': SyntheticDataset(
        num_samples=2000, augmentator=build_train_augmentator((256, 256)),
        points_sampler=sampler(), epoch_len=epoch_len)}
    root = Path(args.coco_mval) if args.coco_mval else None
    if root is None:
        configured = load_config().resolve('COCO_MVAL_PATH')
        shared = Path(__file__).resolve().parents[2] / 'shared' / 'datasets' / 'COCO_MVal'
        root = configured if configured.is_dir() else shared
    if root.is_dir():
        datasets['COCO-MVal (jpg+png)'] = CocoMValDataset(
            root, augmentator=build_train_augmentator((256, 256)), points_sampler=sampler(),
            epoch_len=epoch_len)
    else:
        print(f'COCO-MVal not found at {root}; measuring the synthetic set only')

    rows = []
    for name, dataset in datasets.items():
        for workers in args.workers:
            rows.append((name, workers, measure(dataset, workers, args.items, args.batch_size)))
    print(f'\nTraining data pipeline: 256x256 crops + flip + colour jitter + 24-point clicks, '
          f'batch {args.batch_size}, {args.items} items per row, {os.cpu_count()} CPU cores')
    print(f"{'dataset':<24}{'workers':>8}{'samples/s':>12}")
    for name, workers, rate in rows:
        print(f'{name:<24}{workers:>8}{rate:>12.1f}')


if __name__ == '__main__':
    main()
