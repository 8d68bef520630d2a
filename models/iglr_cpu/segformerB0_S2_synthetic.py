"""CPU scale, the main job: MiT-B0 S2 on the procedural Synthetic dataset at a 96x96 crop.

12 epochs x 40 steps of batch 8 (a few minutes on a laptop CPU), refiner at 64x64, iterative
training with up to 3 rounds, validation on 48 held-out synthetic objects.
    python train.py models/iglr_cpu/segformerB0_S2_synthetic.py --cpu --workers=2
"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_synthetic"
RECIPE = recipe.SYNTHETIC_CPU
BATCH_SIZE = RECIPE.batch_size


def init_model(cfg):
    return recipe.init_model(cfg, RECIPE)


def train(model, cfg, model_cfg):
    return recipe.train(model, cfg, model_cfg, RECIPE)


def main(cfg):
    return recipe.main(cfg, RECIPE)
