"""Check every configured dataset before hours of training: present, readable, complete.

    python scripts/check_datasets.py                                  # all datasets of configs.yml
    python scripts/check_datasets.py --datasets=eval                  # the six evaluation sets
    python scripts/check_datasets.py --datasets=GrabCut,SBD --config=/etc/iglr/configs.yml

One line per dataset: status, name, sample count and the published count (see
isegm/data/check.py). Exit status 0 when everything checked is complete (or a known subset such
as the 400-image COCO_MVal copy), 1 when a dataset is missing, unreadable or miscounted, 2 for an
unknown dataset name or an unusable --config.
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from isegm.data.check import build_parser, check_datasets, exit_code, parse_names  # noqa: E402
from isegm.utils.config import ConfigError, ConfigPathError, load_config  # noqa: E402


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config)
    except (ConfigPathError, ConfigError) as e:
        print(f"--config: {e}", file=sys.stderr)
        return 2
    try:
        results = check_datasets(cfg, parse_names(args.datasets))
    except KeyError as e:
        print(f"--datasets: {e.args[0]}", file=sys.stderr)
        return 2
    print(f"datasets of {cfg.source} (environment variables override its keys)")
    for result in results:
        print(result.line(), flush=True)
    code = exit_code(results)
    bad = [r.spec.label for r in results if not r.ok]
    print(f"{len(results) - len(bad)} of {len(results)} checks passed"
          + (f"; failed: {', '.join(bad)}" if bad else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
