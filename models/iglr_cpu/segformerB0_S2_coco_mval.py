"""CPU scale on real images: MiT-B0 S2 trained on the 350-image training split of COCO_MVal
(COCO_MVAL_PATH in configs.yml), validated on its 50 held-out images (split rule in
`CocoMValDataset`: sorted file names, every 8th to 'val'), 96x96 crops (recipe.COCO_MVAL_CPU).
The CPU ablation study's full model; evaluate on GrabCut and on `COCO_MVal_val`, never on the
whole COCO_MVal (its training images).
    python train.py models/iglr_cpu/segformerB0_S2_coco_mval.py --cpu --workers=2"""
from isegm.engine import recipe

MODEL_NAME = "segformerB0_S2_coco_mval"
RECIPE = recipe.COCO_MVAL_CPU
BATCH_SIZE = RECIPE.batch_size
init_model, train, main = recipe.entry_points(RECIPE)
