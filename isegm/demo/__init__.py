"""Tools for people: image decoding with limits, mask files (PNG label maps, COCO RLE), overlays
and the browser annotation server (`isegm.demo.server`, needs fastapi/uvicorn).

    python scripts/predict.py --checkpoint cv_grabcut --image in.jpg --clicks "120,45,+" --output mask.png
    python scripts/demo.py --images photos/ --output masks/
"""
