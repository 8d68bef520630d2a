"""CPU scale on real images: MiT-B0 S2 on COCO_MVal (COCO_MVAL_PATH in configs.yml), 96x96 crops,
validated on the held-out synthetic objects (COCO_MVal is an evaluation set: this config is for
smoke runs and fine-tuning experiments, not for reporting numbers on COCO_MVal).
    python train.py models/iglr_cpu/segformerB0_S2_coco_mval.py --cpu --workers=2"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_coco_mval"
RECIPE = recipe.COCO_MVAL_CPU
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
