"""Every config module under models/ imports, states its recipe and builds its model."""
from pathlib import Path

import pytest

from isegm.engine import recipe
from isegm.engine.distributed import DistInfo
from isegm.engine.launch import load_config_module
from isegm.engine.runconfig import RunConfig
from isegm.utils.config import load_config
from isegm.utils.log import setup_logging

REPO = Path(__file__).resolve().parents[1]
MODULES = sorted((REPO / "models").glob("*/*.py"))


def test_expected_modules_exist():
    names = {f"{p.parent.name}/{p.stem}" for p in MODULES}
    expected = {f"iglr/segformerB{b}_S2_{d}" for b in (0, 3) for d in ("sbd", "cclvs")}
    expected |= {f"iglr_ablations/segformerB0_S2_sbd_{a}" for a in (
        "noiga", "nolrr", "noiga_nolrr", "iga_pos", "iga_neg", "iga_feedback",
        "focus_square", "focus_object")}
    expected |= {"iglr_cpu/segformerB0_S2_synthetic", "iglr_cpu/segformerB0_S2_coco_mval"}
    assert expected <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_module_interface(path):
    module = load_config_module(path)
    assert module.MODEL_NAME == path.stem
    assert callable(module.train) and callable(module.init_model) and callable(module.main)
    assert isinstance(module.RECIPE, recipe.Recipe) and module.BATCH_SIZE == module.RECIPE.batch_size


def test_reference_schedules_and_ablation_arguments():
    get = lambda name: load_config_module(REPO / "models" / name).RECIPE  # noqa: E731
    sbd, cclvs = get("iglr/segformerB3_S2_sbd.py"), get("iglr/segformerB3_S2_cclvs.py")
    assert (sbd.backbone, sbd.epochs, sbd.lr, sbd.backbone_lr_mult) == ("mit_b3", 230, 5e-4, 0.1)
    assert (cclvs.epochs, cclvs.epoch_len, cclvs.train_dataset) == (85, 30000, "COCO_LVIS")
    assert (sbd.num_max_points, sbd.prob_gamma, sbd.merge_objects_prob, sbd.max_num_next_clicks,
            sbd.crop_size, sbd.first_click_center) == (24, 0.8, 0.15, 3, (256, 256), True)
    assert get("iglr_ablations/segformerB0_S2_sbd_noiga.py").model_kwargs["iga_stages"] == ()
    assert get("iglr_ablations/segformerB0_S2_sbd_nolrr.py").model_kwargs["use_refiner"] is False
    assert get("iglr_ablations/segformerB0_S2_sbd_iga_neg.py").model_kwargs["iga_terms"] == ("neg",)
    no_lrr = get("iglr_ablations/segformerB0_S2_sbd_nolrr.py")
    assert [s.name for s in recipe.loss_specs(no_lrr, use_refiner=False)] == ["instance", "instance_aux"]
    assert [s.target for s in recipe.loss_specs(sbd, use_refiner=True)] == [
        "instances", "instances", "instances_crop", "boundary_crop"]


def _configs_with_b0(tmp_path, value):
    """A configs.yml in tmp_path whose SEGFORMER_B0 is `value` (relative to tmp_path)."""
    path = tmp_path / "configs.yml"
    path.write_text(f'EXPS_PATH: "./exps"\nIMAGENET_PRETRAINED_MODELS:\n  SEGFORMER_B0: "{value}"\n')
    return load_config(path)


def test_missing_default_imagenet_weights_warn_and_train_from_scratch(tmp_path, monkeypatch, capsys):
    from isegm.model.pretrained import DEFAULT_PRETRAINED_FILES
    monkeypatch.delenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", raising=False)
    setup_logging(None)
    module = load_config_module(REPO / "models" / "iglr_ablations" / "segformerB0_S2_sbd_noiga_nolrr.py")
    paths = _configs_with_b0(tmp_path, DEFAULT_PRETRAINED_FILES["SEGFORMER_B0"])
    cfg = RunConfig(config_path=Path(module.__file__), paths=paths, cpu=True, dist=DistInfo())
    model, model_cfg = module.init_model(cfg)
    err = capsys.readouterr().err
    assert "mit_b0.pth" in err and "FROM SCRATCH" in err and "default" in err
    assert model.refiner is None and model_cfg["num_max_points"] == 24


def test_shipped_configs_name_the_default_imagenet_weights():
    from isegm.model.pretrained import DEFAULT_PRETRAINED_FILES
    shipped = load_config(REPO / "configs.yml")
    assert {k: shipped._data["IMAGENET_PRETRAINED_MODELS"][k]
            for k in DEFAULT_PRETRAINED_FILES} == DEFAULT_PRETRAINED_FILES


def test_explicit_missing_imagenet_weights_are_an_error_naming_their_origin(tmp_path, monkeypatch):
    from isegm.utils.config import ConfigPathError
    module = load_config_module(REPO / "models" / "iglr_ablations" / "segformerB0_S2_sbd_noiga_nolrr.py")
    monkeypatch.setenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", "/nope")
    cfg = RunConfig(config_path=Path(module.__file__), paths=load_config(), cpu=True, dist=DistInfo())
    with pytest.raises(ConfigPathError, match=r"'/nope' \(set by the environment variable "
                                              r"IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0\)"):
        module.init_model(cfg)
    monkeypatch.delenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0")
    paths = _configs_with_b0(tmp_path, "./elsewhere/b0.pth")
    cfg = RunConfig(config_path=Path(module.__file__), paths=paths, cpu=True, dist=DistInfo())
    with pytest.raises(ConfigPathError) as err:
        module.init_model(cfg)
    message = str(err.value)
    assert "elsewhere/b0.pth" in message and "'IMAGENET_PRETRAINED_MODELS.SEGFORMER_B0' in" in message
    assert str(tmp_path / "configs.yml") in message


def test_configured_imagenet_weights_are_loaded(tmp_path, monkeypatch):
    import torch
    from isegm.model import IGLRModel
    source = IGLRModel(backbone="mit_b0", use_refiner=False, iga_stages=())
    weights = {k: v for k, v in source.backbone.state_dict().items()
               if not k.startswith("interaction") and "iga" not in k}
    torch.save({"state_dict": weights}, tmp_path / "mit_b0.pth")
    monkeypatch.setenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", str(tmp_path / "mit_b0.pth"))
    module = load_config_module(REPO / "models" / "iglr_ablations" / "segformerB0_S2_sbd_noiga_nolrr.py")
    cfg = RunConfig(config_path=Path(module.__file__), paths=load_config(), cpu=True, dist=DistInfo())
    model, _ = module.init_model(cfg)
    key = "block1.0.attn.q.weight"
    assert torch.equal(model.backbone.state_dict()[key], weights[key])
