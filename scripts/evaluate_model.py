"""NoC evaluation of interactive segmentation models (RITM protocol); see isegm/inference/cli.py.

    python scripts/evaluate_model.py NoBRS --gpu=0 --checkpoint=<file or name> --eval-mode=cvpr \
        --datasets=GrabCut,Berkeley,DAVIS,SBD
    python scripts/evaluate_model.py NoBRS --exp-path=iglr/segformerB0_S2_sbd/000 --datasets=GrabCut
    python scripts/evaluate_model.py cv_grabcut --datasets=GrabCut      # weight-free reference row

Exit status: 0; 2 for bad input found before anything runs (one line on stderr); 3 when samples
were skipped because their files could not be read (every other result is written).
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from isegm.inference.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
