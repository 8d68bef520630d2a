"""ONNX export (scripts/export_onnx.py) and the onnxruntime backend against PyTorch.

Tiny inputs (64x64 coarse input, 64x64 refiner crops), non-zero IGA coefficients and non-trivial
BatchNorm statistics; several click counts and both batch sizes the predictors use (1, 2 with
flip averaging) through the graphs' dynamic axes.
"""
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from isegm.inference.onnx_backend import OnnxNetwork
from isegm.inference.onnx_export import COARSE_OUTPUTS, META_FILE, REFINER_OUTPUTS, \
    example_inputs, read_export_metadata
from isegm.model import IGLRModel, load_is_model, save_is_model
from isegm.utils.serialization import get_model_config

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
SIZE = 64


def export_main(argv) -> int:
    spec = importlib.util.spec_from_file_location("script_export_onnx",
                                                  REPO / "scripts" / "export_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _trained_like(backbone: str) -> IGLRModel:
    """A tiny-input model with random non-zero IGA coefficients and BN statistics."""
    torch.manual_seed(1)
    model = IGLRModel(backbone=backbone, infer_size=SIZE, refine_size=SIZE).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".iga_" in name:
                p.normal_(0, 1.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    return model


def _export(tmp_path_factory, backbone: str):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp(f"onnx_{backbone}")
    checkpoint = root / "model.pth"
    save_is_model(_trained_like(backbone), checkpoint, epoch=0)
    out = root / "export"
    assert export_main(["--checkpoint", str(checkpoint), "--output", str(out)]) == 0
    return load_is_model(checkpoint), out


@pytest.fixture(scope="module")
def b0_export(tmp_path_factory):
    return _export(tmp_path_factory, "mit_b0")


def _max_diff(got: dict, expected: dict, keys) -> float:
    return max(float((got[k] - expected[k]).abs().max()) for k in keys)


def _assert_stages_equal(model: IGLRModel, network: OnnxNetwork, cases) -> None:
    for batch, per_sign in cases:
        coarse = example_inputs(model, "coarse", batch, per_sign, seed=per_sign)
        refiner = example_inputs(model, "refiner", batch, per_sign, seed=per_sign)
        with torch.no_grad():
            want_c = model.forward_coarse(*coarse.values())
            want_r = model.forward_refine(*refiner.values())
        got_c = network.forward_coarse(*coarse.values())
        got_r = network.forward_refine(*refiner.values())
        for key in COARSE_OUTPUTS:
            assert got_c[key].shape == want_c[key].shape and got_c[key].dtype == torch.float32
        for key in REFINER_OUTPUTS:
            assert got_r[key].shape == want_r[key].shape
        assert _max_diff(got_c, want_c, COARSE_OUTPUTS) <= TOL, (batch, per_sign)
        assert _max_diff(got_r, want_r, REFINER_OUTPUTS) <= TOL, (batch, per_sign)


@pytest.mark.slow
def test_b0_onnx_equals_pytorch_over_click_counts(b0_export):
    model, export_dir = b0_export
    network = OnnxNetwork(export_dir, num_threads=1)
    # the example inputs of the export had batch 2 and M = 2: other counts use the dynamic axes
    _assert_stages_equal(model, network, [(1, 1), (2, 1), (1, 3), (2, 6), (1, 24)])


@pytest.mark.slow
def test_iga_bias_is_in_the_graph(b0_export):
    """The exported coarse graph depends on the IGA coefficients: it matches the model with its
    non-zero coefficients, not the same model with them zeroed."""
    model, export_dir = b0_export
    network = OnnxNetwork(export_dir, num_threads=1)
    inputs = example_inputs(model, "coarse", 1, 3, seed=5)
    no_iga = load_is_model({"arch": "iglr", "config": get_model_config(model),
                            "state_dict": model.state_dict()})
    with torch.no_grad():
        for name, p in no_iga.named_parameters():
            if ".iga_" in name:
                assert p.abs().sum() > 0
                p.zero_()
        want = model.forward_coarse(*inputs.values())["instances"]
        without = no_iga.forward_coarse(*inputs.values())["instances"]
    got = network.forward_coarse(*inputs.values())["instances"]
    assert float((got - want).abs().max()) <= TOL
    assert float((got - without).abs().max()) > 100 * TOL


@pytest.mark.slow
def test_export_metadata(b0_export):
    model, export_dir = b0_export
    meta = read_export_metadata(export_dir)
    assert meta["model"] == json.loads(json.dumps(get_model_config(model)))
    assert meta["opset"] == 20 and meta["exporter"] == "torch.onnx.export(dynamo=True)"
    assert set(meta["versions"]) == {"torch", "onnx", "onnxscript", "onnxruntime"}
    assert meta["versions"]["torch"] == torch.__version__
    assert (meta["input_size"], meta["refine_size"], meta["feature_size"]) == (SIZE, SIZE, 16)
    assert meta["feature_channels"] == model.feature_channels == 256
    assert meta["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["thresholds"]["prediction"] == 0.49
    assert meta["graphs"]["coarse"]["inputs"] == {"image": ["batch", 3, SIZE, SIZE],
                                                  "points": ["batch", "clicks", 3],
                                                  "prev_mask": ["batch", 1, SIZE, SIZE]}
    assert meta["graphs"]["refiner"]["outputs"]["refined"] == ["batch", 1, SIZE, SIZE]
    assert 0 <= meta["check_max_abs_diff"]["coarse"] <= TOL
    assert sorted(p.name for p in export_dir.iterdir()) == ["coarse.onnx", "export.json",
                                                           "refiner.onnx"]


FRESH_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import onnxruntime as ort
    export_dir, data = sys.argv[1], np.load(sys.argv[2])
    assert not [m for m in sys.modules if m.split(".")[0] in ("isegm", "torch", "scripts")]
    out = {}
    for stage, names in (("coarse", ("image", "points", "prev_mask")),
                         ("refiner", ("image_crop", "points_crop", "coarse_crop",
                                      "feature_crop"))):
        session = ort.InferenceSession(f"{export_dir}/{stage}.onnx",
                                       providers=["CPUExecutionProvider"])
        results = session.run(None, {n: data[n] for n in names})
        for o, r in zip(session.get_outputs(), results):
            out[o.name] = r
    assert not [m for m in sys.modules if m.split(".")[0] in ("isegm", "torch", "scripts")]
    np.savez(sys.argv[3], **out)
""")


@pytest.mark.slow
def test_export_runs_in_a_fresh_process_without_project_code(b0_export, tmp_path):
    model, export_dir = b0_export
    inputs = {**example_inputs(model, "coarse", 1, 2, seed=7),
              **example_inputs(model, "refiner", 1, 4, seed=8)}
    np.savez(tmp_path / "in.npz", **{k: v.numpy() for k, v in inputs.items()})
    # -I: isolated mode (no PYTHONPATH, no current folder on sys.path), run from an empty folder
    subprocess.run([sys.executable, "-I", "-c", FRESH_SCRIPT, str(export_dir),
                    str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   cwd=tmp_path, check=True, timeout=120)
    got = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        want = {**model.forward_coarse(inputs["image"], inputs["points"], inputs["prev_mask"]),
                **model.forward_refine(inputs["image_crop"], inputs["points_crop"],
                                       inputs["coarse_crop"], inputs["feature_crop"])}
    assert sorted(got.files) == sorted(COARSE_OUTPUTS + REFINER_OUTPUTS)
    for key in got.files:
        assert np.abs(got[key] - want[key].numpy()).max() <= TOL, key


@pytest.mark.slow
def test_backend_rejects_wrong_sizes_and_folders(b0_export, tmp_path):
    model, export_dir = b0_export
    network = OnnxNetwork(export_dir, num_threads=1)
    with pytest.raises(ValueError, match=r"takes images \(B, 3, 64, 64\)"):
        network.forward_coarse(torch.rand(1, 3, 32, 64), torch.zeros(1, 2, 3))
    with pytest.raises(FileNotFoundError, match="has no export.json"):
        OnnxNetwork(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not an IGLR ONNX export"):
        OnnxNetwork(tmp_path)
    meta = json.loads((export_dir / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="coarse graph file 'coarse.onnx' is missing"):
        OnnxNetwork(tmp_path)


@pytest.mark.slow
def test_check_matches_tells_the_exported_model_from_others(b0_export):
    model, export_dir = b0_export
    network = OnnxNetwork(export_dir, num_threads=1)
    assert 0 <= network.check_matches(model) <= TOL
    other_weights = _trained_like("mit_b0")
    with torch.no_grad():
        other_weights.refiner.gate.bias.add_(1.0)
    with pytest.raises(ValueError, match="differs from the model by"):
        network.check_matches(other_weights)
    other_config = IGLRModel(backbone="mit_b0", infer_size=SIZE, refine_size=SIZE,
                             norm_radius=3).eval()
    with pytest.raises(ValueError, match="is of another model"):
        network.check_matches(other_config)


def test_export_script_rejects_a_foreign_checkpoint(tmp_path, caplog):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    assert export_main(["--checkpoint", str(tmp_path / "foreign.pth"),
                        "--output", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out" / META_FILE).exists()
