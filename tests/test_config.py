import pytest

from isegm.utils.config import ConfigError, ConfigPathError, load_config
from isegm.utils.registry import Registry
from isegm.utils.serialization import CheckpointError, atomic_save, load_torch_file


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GRABCUT_PATH", raising=False)
    (tmp_path / "data" / "GrabCut").mkdir(parents=True)
    cfg_file = tmp_path / "configs.yml"
    cfg_file.write_text('GRABCUT_PATH: "./data/GrabCut"\nIMAGENET_PRETRAINED_MODELS:\n  SEGFORMER_B0: "w/b0.pth"\n')
    cfg = load_config(cfg_file)
    assert cfg.get_path("GRABCUT_PATH") == (tmp_path / "data" / "GrabCut").resolve()
    assert cfg.resolve("IMAGENET_PRETRAINED_MODELS.SEGFORMER_B0") == (tmp_path / "w" / "b0.pth").resolve()


def test_environment_overrides_file(tmp_path, monkeypatch):
    cfg_file = tmp_path / "configs.yml"
    cfg_file.write_text('GRABCUT_PATH: "./nowhere"\nIMAGENET_PRETRAINED_MODELS:\n  SEGFORMER_B0: "a.pth"\n')
    monkeypatch.setenv("GRABCUT_PATH", str(tmp_path))
    monkeypatch.setenv("IMAGENET_PRETRAINED_MODELS__SEGFORMER_B0", str(tmp_path / "b.pth"))
    cfg = load_config(cfg_file)
    assert cfg.get_path("GRABCUT_PATH") == tmp_path.resolve()
    assert cfg.IMAGENET_PRETRAINED_MODELS.SEGFORMER_B0 == str(tmp_path / "b.pth")


def test_missing_path_error_names_key_path_and_layout(tmp_path, monkeypatch):
    monkeypatch.delenv("DAVIS_PATH", raising=False)
    cfg_file = tmp_path / "configs.yml"
    cfg_file.write_text('DAVIS_PATH: "./DAVIS"\n')
    cfg = load_config(cfg_file)
    with pytest.raises(ConfigPathError) as err:
        cfg.get_path("DAVIS_PATH")
    msg = str(err.value)
    assert "DAVIS_PATH" in msg and str(tmp_path / "DAVIS") in msg and "img/" in msg and "gt/" in msg


def test_unknown_key_and_bad_file(tmp_path):
    cfg_file = tmp_path / "configs.yml"
    cfg_file.write_text("A: 1\n")
    with pytest.raises(ConfigError, match="NOT_A_KEY"):
        load_config(cfg_file)["NOT_A_KEY"]
    with pytest.raises(ConfigPathError, match="missing.yml"):
        load_config(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_repository_config_has_every_documented_key():
    cfg = load_config()
    for key in ["INTERACTIVE_MODELS_PATH", "EXPS_PATH", "GRABCUT_PATH", "BERKELEY_PATH", "DAVIS_PATH",
                "COCO_MVAL_PATH", "SBD_PATH", "PASCALVOC_PATH", "LVIS_v1_PATH"]:
        assert key in cfg
        assert not str(cfg._data[key]).startswith("/"), f"{key} must be relative by default"
    assert sorted(cfg.IMAGENET_PRETRAINED_MODELS) == [f"SEGFORMER_B{i}" for i in range(6)]


def test_registry_lists_known_names():
    reg = Registry("widget")
    reg.add("a", 1)
    reg.add("b", 2)
    assert reg.get("b") == 2
    with pytest.raises(KeyError, match="unknown widget 'c'; known widgets: a, b"):
        reg.get("c")


def test_atomic_save_and_clear_load_errors(tmp_path):
    path = atomic_save({"x": 1}, tmp_path / "ck" / "a.pth")
    assert load_torch_file(path) == {"x": 1}
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_torch_file(tmp_path / "corrupt.pth")
    with pytest.raises(CheckpointError, match="absent.pth"):
        load_torch_file(tmp_path / "absent.pth")


def test_serialize_records_constructor_arguments_and_rebuilds():
    import torch

    from isegm.utils.serialization import build_from_config, get_model_config, serialize

    class Tiny(torch.nn.Module):
        @serialize
        def __init__(self, width=3, stages=(0, 1), name="x"):
            super().__init__()
            self.lin = torch.nn.Linear(width, 1)

    Tiny.__module__, Tiny.__qualname__ = "isegm.tests_fake", "Tiny"
    model = Tiny(5, stages=(2,))
    assert get_model_config(model) == {"class": "isegm.tests_fake.Tiny",
                                       "params": {"width": 5, "stages": [2], "name": "x"}}
    with pytest.raises(ValueError, match="only classes under 'isegm.'"):
        build_from_config({"class": "os.system", "params": {}})
    with pytest.raises(ValueError, match="does not exist in this code"):
        build_from_config({"class": "isegm.nothing.Here", "params": {}})
