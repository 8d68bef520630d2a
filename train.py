"""Train an IGLR model from a config module. See `python train.py --help` and
isegm/engine/launch.py (one process, `--ngpus=N` spawned processes, or `torchrun`)."""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from isegm.engine.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
