"""Ablation "no LRR": coarse prediction only (no local region refiner; its losses are dropped)."""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_sbd_nolrr"
RECIPE = recipe.SBD.replace(backbone="mit_b0", batch_size=28, model_kwargs={"use_refiner": False})
BATCH_SIZE = RECIPE.batch_size


def init_model(cfg):
    return recipe.init_model(cfg, RECIPE)


def train(model, cfg, model_cfg):
    return recipe.train(model, cfg, model_cfg, RECIPE)


def main(cfg):
    return recipe.main(cfg, RECIPE)
