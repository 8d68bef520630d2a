"""Segment one object of one image from clicks; see isegm/demo/predict.py.

    python scripts/predict.py --checkpoint CKPT --image in.jpg --clicks "120,45,+ 300,80,-" \
        --output mask.png [--overlay overlay.png]
    python scripts/predict.py --checkpoint cv_grabcut ...      # classical, no weights
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from isegm.demo.predict import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
