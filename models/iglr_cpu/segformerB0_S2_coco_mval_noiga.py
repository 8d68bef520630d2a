"""CPU ablation "no IGA: clicks and feedback enter by input fusion only (no attention bias in any stage)".
Otherwise identical to segformerB0_S2_coco_mval.py (recipe.COCO_MVAL_CPU).
    python scripts/run_ablation.py models/iglr_cpu/segformerB0_S2_coco_mval.py \
        models/iglr_cpu/segformerB0_S2_coco_mval_noiga.py --minutes 30 --datasets GrabCut"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_coco_mval_noiga"
RECIPE = recipe.COCO_MVAL_CPU.replace(model_kwargs={"iga_stages": ()})
BATCH_SIZE = RECIPE.batch_size


def init_model(cfg):
    return recipe.init_model(cfg, RECIPE)


def train(model, cfg, model_cfg):
    return recipe.train(model, cfg, model_cfg, RECIPE)


def main(cfg):
    return recipe.main(cfg, RECIPE)
