"""CPU scale, the main job: MiT-B0 S2 on the procedural Synthetic dataset at a 96x96 crop.

12 epochs x 40 steps of batch 8 (a few minutes on a laptop CPU), refiner at 64x64, iterative
training with up to 3 rounds, validation on 48 held-out synthetic objects (fixed per index).
recipe.SYNTHETIC_CPU: from scratch, lr 1e-3 with a 100-step warm-up and clipping at norm 1, IGA
coefficients at lr x 5 (scripts/main_job.py trains it for 600 steps and evaluates the checkpoint
with the best validation IoU). The target crop of the predictors and of the training click rounds
is 3x the previous mask (`target_crop_r`, stored in the checkpoint; see the recipe).
    python train.py models/iglr_cpu/segformerB0_S2_synthetic.py --cpu --workers=2
"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_synthetic"
RECIPE = recipe.SYNTHETIC_CPU
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
