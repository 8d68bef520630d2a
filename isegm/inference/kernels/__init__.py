"""Compiled CPU kernels (numba) for the per-click passes that PyTorch and NumPy can only do as
several full-resolution passes, by family:

- `clicks`: the evaluation click's deepest pixel (rules 7-9).
- `maps`: the predictor's passes over one-channel maps (separable resize into the output,
  sigmoid, thresholds with count and bbox, the focus rule's masks).
- `runs`: row runs of a mask (the focus rule's connected component without a flood fill).
- `image`: the target crop's network input from the uint8 image.

The refiner's RoIAlign kernels live with the rest of RoIAlign (`isegm.model.roi_sampling`). Every
kernel has a PyTorch / NumPy form that runs without numba (`isegm.utils.jit.ENABLED`) and on
CUDA; the predictor chooses between them once (`isegm.inference.backends`), and the tests run
both and compare.
"""
