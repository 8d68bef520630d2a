"""Ablation "no IGA": clicks and feedback enter by input fusion only (no attention bias in any stage)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_noiga"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"iga_stages": ()})
BATCH_SIZE = RECIPE.batch_size


def init_model(cfg):
    return recipe.init_model(cfg, RECIPE)


def train(model, cfg, model_cfg):
    return recipe.train(model, cfg, model_cfg, RECIPE)


def main(cfg):
    return recipe.main(cfg, RECIPE)
