"""Browser annotation tool; see isegm/demo/server.py.

    python scripts/demo.py [--checkpoint CKPT] [--images DIR] [--output DIR] [--port 8000] \
        [--host 127.0.0.1]
"""
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from isegm.demo.server import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
