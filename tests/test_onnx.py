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

from isegm.inference.cli import EvaluationSetupError, parse_args, run_evaluation
from isegm.inference.clicker import Clicker
from isegm.inference.onnx_backend import InProcessRefiner, OnnxNetwork, StageNetwork, _to_numpy, \
    build_network, network_label
from isegm.inference.predictors import get_predictor
from isegm.inference.onnx_export import COARSE_OUTPUTS, META_FILE, REFINER_OUTPUTS, \
    example_inputs, graph_feeds, read_export_metadata
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
    return load_is_model(checkpoint), out, checkpoint


@pytest.fixture(scope="module")
def b0_export(tmp_path_factory):
    model, export_dir, _ = _export(tmp_path_factory, "mit_b0")
    return model, export_dir


@pytest.fixture(scope="module")
def b0_checkpoint_export(b0_export):
    _, export_dir = b0_export
    return export_dir.parent / "model.pth", export_dir


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
def test_b3_onnx_equals_pytorch_over_click_counts(tmp_path_factory):
    """B3: other depths and reduction ratios, a 512-channel decoder (about a minute to
    export)."""
    model, export_dir, _ = _export(tmp_path_factory, "mit_b3")
    assert model.feature_channels == 512
    network = OnnxNetwork(export_dir, num_threads=1)
    _assert_stages_equal(model, network, [(1, 1), (2, 3), (1, 12)])


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
    assert meta["feature_layout"] == "NHWC" and meta["format_version"] == 2
    assert meta["graphs"]["coarse"]["outputs"]["feature"] == ["batch", 16, 16, 256]
    assert meta["graphs"]["refiner"]["inputs"]["feature_crop"] == ["batch", 16, 16, 256]
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
    # the graphs' own layout: the decoder feature NHWC (B, h, w, D), in and out
    feeds = graph_feeds(inputs)
    np.savez(tmp_path / "in.npz", **{k: v.contiguous().numpy() for k, v in feeds.items()})
    # -I: isolated mode (no PYTHONPATH, no current folder on sys.path), run from an empty folder
    subprocess.run([sys.executable, "-I", "-c", FRESH_SCRIPT, str(export_dir),
                    str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   cwd=tmp_path, check=True, timeout=120)
    got = np.load(tmp_path / "out.npz")
    with torch.no_grad():
        want = {**model.forward_coarse(inputs["image"], inputs["points"], inputs["prev_mask"]),
                **model.forward_refine(inputs["image_crop"], inputs["points_crop"],
                                       inputs["coarse_crop"], inputs["feature_crop"])}
    want["feature"] = want["feature"].permute(0, 2, 3, 1)
    assert got["feature"].shape == (1, SIZE // 4, SIZE // 4, model.feature_channels)
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
    (tmp_path / META_FILE).write_text(json.dumps(dict(meta, format_version=1)))
    with pytest.raises(ValueError, match="version 1 passed the decoder feature NCHW.*export the "
                                         "checkpoint again"):
        OnnxNetwork(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="coarse graph file 'coarse.onnx' is missing"):
        OnnxNetwork(tmp_path)


@pytest.mark.slow
def test_decoder_feature_crosses_the_graphs_without_a_copy(b0_export):
    """The feature leaves coarse.onnx as the model's channels-last map (a view of onnxruntime's
    NHWC array) and enters refiner.onnx as an NHWC view of the host's channels-last crop."""
    model, export_dir = b0_export
    network = OnnxNetwork(export_dir, num_threads=1)
    feature = network.forward_coarse(*example_inputs(model, "coarse", 1, 2).values())["feature"]
    assert feature.shape == (1, 256, 16, 16)
    assert feature.is_contiguous(memory_format=torch.channels_last)
    assert not feature.is_contiguous()
    inputs = example_inputs(model, "refiner", 1, 2)
    crop = inputs["feature_crop"].contiguous(memory_format=torch.channels_last)
    fed = _to_numpy(crop.permute(0, 2, 3, 1))
    assert fed.flags["C_CONTIGUOUS"] and fed.ctypes.data == crop.data_ptr()
    with torch.no_grad():
        want = model.forward_refine(*inputs.values())["refined"]
    inputs["feature_crop"] = crop
    got = network.forward_refine(*inputs.values())["refined"]
    assert float((got - want).abs().max()) <= TOL


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


def _blob_sample(height: int = 120, width: int = 160):
    """A textured image with an elliptic object of another colour, and its ground truth."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    gt = (((yy - 0.55) / 0.3) ** 2 + ((xx - 0.45) / 0.25) ** 2 < 1).astype(np.int32)
    background = 0.5 + 0.3 * np.sin(9 * xx + 4 * yy)[..., None] * np.array([1.0, 0.6, -0.4])
    image = np.where(gt[..., None] > 0, np.array([0.85, 0.2, 0.25]), background)
    image = image + rng.normal(0, 0.04, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), gt


@pytest.mark.slow
@pytest.mark.parametrize("name,flip", [("iglr", True), ("iglr", False), ("coarse", True)])
def test_predictor_with_onnx_network_equals_pytorch(b0_export, name, flip):
    """The same predictor flow with either network: per-click probabilities equal to 1e-3,
    the same clicks (each predictor clicks on its own errors), the refiner used."""
    model, export_dir = b0_export
    image, gt = _blob_sample()
    predictors = [get_predictor(name, model, "cpu", with_flip=flip, network=network)
                  for network in (None, build_network(model, "onnx", export_dir))]
    clickers = [Clicker(gt_mask=gt) for _ in predictors]
    for p in predictors:
        p.set_image(image)
    masks = [np.zeros(gt.shape, dtype=bool)] * 2
    refined = 0
    for _ in range(5):
        probs = []
        for i, (p, c) in enumerate(zip(predictors, clickers)):
            c.make_next_click(masks[i])
            probs.append(p.get_prediction(c))
            masks[i] = probs[-1] > 0.49
        assert [cl.coords for cl in clickers[0].get_clicks()] == \
            [cl.coords for cl in clickers[1].get_clicks()]
        assert np.abs(probs[0] - probs[1]).max() <= 1e-3
        refined += getattr(predictors[0], "last_focus_box", None) is not None
    assert predictors[1].network is not model and predictors[0].network is model
    if name == "iglr":
        assert refined > 0


@pytest.mark.slow
def test_build_network_stages_and_refusals(b0_export, tmp_path):
    model, export_dir = b0_export
    mixed = build_network(model, "onnx", export_dir, stages=("refiner",))
    assert isinstance(mixed, StageNetwork)
    assert mixed.coarse is model and isinstance(mixed.refine, OnnxNetwork)
    assert mixed.fixed_sizes == {"refiner": SIZE}
    assert build_network(model, "torch") is model
    with pytest.raises(ValueError, match="needs an export folder"):
        build_network(model, "onnx")
    with pytest.raises(ValueError, match="unknown network backend 'tensorrt'"):
        build_network(model, "tensorrt", export_dir)
    with pytest.raises(ValueError, match="subset of coarse, refiner"):
        build_network(model, "onnx", export_dir, stages=("head",))
    network = build_network(model, "onnx", export_dir)
    with pytest.raises(ValueError, match="takes only 64x64 inputs"):
        get_predictor("coarse", model, "cpu", crop_mode="zoom_in", network=network)
    with pytest.raises(ValueError, match="its export's size"):
        get_predictor("iglr", model, "cpu", infer_size=96, network=network)
    with pytest.raises(ValueError, match="apply to the PyTorch model"):
        get_predictor("iglr", model, "cpu", autocast_dtype=torch.bfloat16, network=network)
    # PyTorch runs the coarse stage: any infer size and ZoomIn are fine
    get_predictor("coarse", model, "cpu", crop_mode="zoom_in", network=mixed)


def _evaluate(checkpoint, logs, *extra):
    args = parse_args(["NoBRS", f"--checkpoint={checkpoint}", "--datasets=GrabCut",
                       "--max-samples=2", "--n-clicks=4", "--iou-analysis", "--cpu",
                       f"--logs-path={logs}", *extra])
    (record,) = run_evaluation(args, echo=lambda text: None)
    return record


@pytest.mark.slow
def test_evaluate_model_with_the_onnx_backend(b0_checkpoint_export, grabcut_root, tmp_path,
                                              monkeypatch):
    checkpoint, export_dir = b0_checkpoint_export
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    logs = tmp_path / "logs"
    want = _evaluate(checkpoint, logs)
    got = _evaluate(checkpoint, logs, "--backend", "onnx", "--onnx-dir", str(export_dir))
    assert (want["backend"], got["backend"]) == ("torch", "onnx")
    for key in ("NoC@80", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "clicks"):
        assert got[key] == want[key], key
    assert np.abs(np.array(got["mIoU_per_click"]) - want["mIoU_per_click"]).max() <= 1e-3
    out = logs / "model"
    assert (out / "results_NoBRS_cvpr_4.csv").is_file()
    assert (out / "results_NoBRS_onnx_cvpr_4.csv").is_file()
    assert (out / "ious" / "GrabCut_model_iglr_cvpr_onnx.npz").is_file()
    with pytest.raises(EvaluationSetupError, match="--backend onnx needs --onnx-dir"):
        _evaluate(checkpoint, logs, "--backend", "onnx")
    with pytest.raises(EvaluationSetupError, match="has no export.json"):
        _evaluate(checkpoint, logs, "--backend", "onnx", "--onnx-dir", str(tmp_path))
    with pytest.raises(EvaluationSetupError, match="predictor 'iglr': the network backend's "
                                                   "coarse stage takes 64x64 inputs"):
        _evaluate(checkpoint, logs, "--backend", "onnx", "--onnx-dir", str(export_dir),
                  "--infer-size", "96")
    other = tmp_path / "other.pth"
    save_is_model(IGLRModel(backbone="mit_b0", infer_size=SIZE, refine_size=SIZE), other)
    with pytest.raises(EvaluationSetupError, match="differs from the model by"):
        _evaluate(other, logs, "--backend", "onnx", "--onnx-dir", str(export_dir))


def _benchmark(tmp_path, *args):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), *args,
                           "--threads", "1", "--json", str(out_json)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out_json.read_text()), proc.stdout


@pytest.mark.slow
def test_benchmark_rows_for_both_backends(b0_checkpoint_export, tmp_path):
    checkpoint, export_dir = b0_checkpoint_export
    backends = ["--checkpoint", str(checkpoint), "--backends", "torch", "onnx",
                "--onnx-dir", str(export_dir)]
    result, stdout = _benchmark(tmp_path, "network", "--runs", "1", *backends)
    assert [(r["model"], r["backend"], r["size"]) for r in result["rows"]] == \
        [("B0-S2", "torch", SIZE), ("B0-S2", "onnx", SIZE)]
    assert result["rows"][0]["coarse_gflop"] == result["rows"][1]["coarse_gflop"] > 0
    assert "| B0-S2 | on | onnx | 64x64 |" in stdout
    # the backends take turns in one process: same clicks, one warm-up each, memory of the first
    result, _ = _benchmark(tmp_path, "predictor", "--quick", "--devices", "cpu", "--no-full-image",
                           "--markdown", str(tmp_path / "bench.md"), *backends,
                           "--onnx-stages", "refiner", "coarse,refiner")
    rows = result["rows"]
    assert [(r["backend"], r["refiner"], r["interleaved"]) for r in rows] == \
        [("torch", True, True), ("onnx-refiner", True, True), ("onnx", True, True)]
    assert rows[0]["gflop_per_click"] == rows[1]["gflop_per_click"] == \
        rows[2]["gflop_per_click"] > 0
    for row in rows:
        entry = row["sizes"]["120x160"]
        assert entry["per_click_ms"]["median"] > 0 and entry["per_click_ms"]["n"] == 3
        # each stage charged to the row whose predictor ran it
        assert entry["stages_ms"]["refiner"]["median"] > 0
    assert [r["sizes"]["120x160"]["peak_memory_mb"] is None for r in rows] == \
        [False, True, True]
    # PyTorch's coarse stage is split by the module hooks; onnxruntime's graph is not
    assert rows[1]["sizes"]["120x160"]["stages_ms"]["backbone"]["median"] > 0
    assert rows[2]["sizes"]["120x160"]["stages_ms"]["backbone"]["median"] == 0
    text = (tmp_path / "bench.md").read_text()
    assert "| B0-S2 | on | on | cpu | onnx | fp32 |" in text
    assert "| B0-S2 | on | on | cpu | onnx-refiner | fp32 |" in text
    assert "took turns in one process" in text
    # --no-interleave: a run per backend, each with its own memory
    result, _ = _benchmark(tmp_path, "predictor", "--quick", "--devices", "cpu", "--no-full-image",
                           "--no-interleave", *backends)
    assert [(r["backend"], r["interleaved"]) for r in result["rows"]] == \
        [("torch", False), ("onnx", False)]
    assert all(r["sizes"]["120x160"]["peak_memory_mb"] is not None for r in result["rows"])
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "benchmark.py"), "network",
                           "--backends", "onnx"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "needs --onnx-dir" in proc.stderr


@pytest.mark.slow
def test_interactive_tools_take_the_onnx_backend(b0_checkpoint_export, tmp_path):
    """The session API (browser tool) and predict.py with --backend onnx: the same masks."""
    import cv2

    from isegm.demo.predict import main as predict_main
    from isegm.inference.session import Segmenter
    checkpoint, export_dir = b0_checkpoint_export
    segmenter = Segmenter.from_checkpoint(checkpoint, backend="onnx", onnx_dir=str(export_dir))
    assert isinstance(segmenter.new_predictor().network, OnnxNetwork)
    assert segmenter.label.endswith("(onnx)")
    image, _ = _blob_sample()
    masks = []
    for seg in (Segmenter.from_checkpoint(checkpoint), segmenter):
        session = seg.new_session()
        session.set_image(image)
        session.add_click(70, 65, True)
        mask, _ = session.add_click(20, 20, False)
        masks.append(mask)
    assert np.array_equal(masks[0], masks[1])
    cv2.imwrite(str(tmp_path / "image.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    written = []
    for backend in (["--backend", "torch"], ["--backend", "onnx", "--onnx-dir", str(export_dir)]):
        out = tmp_path / f"mask_{backend[1]}.png"
        assert predict_main(["--checkpoint", str(checkpoint), "--image",
                             str(tmp_path / "image.png"), "--clicks", "70,65,+ 20,20,-",
                             "--output", str(out), "--cpu", *backend]) == 0
        written.append(cv2.imread(str(out), cv2.IMREAD_GRAYSCALE))
    assert np.array_equal(written[0], written[1])
    assert predict_main(["--checkpoint", str(checkpoint), "--image", str(tmp_path / "image.png"),
                         "--clicks", "70,65,+", "--output", str(tmp_path / "x.png"),
                         "--backend", "onnx", "--onnx-dir", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------------------
# the 'auto' backend: onnxruntime where it is faster, PyTorch elsewhere

@pytest.mark.slow
def test_auto_backend_exports_the_refiner_in_process(b0_export):
    """On the CPU, 'auto' keeps PyTorch's coarse stage and serves the refiner with onnxruntime
    from an export made in this process, equal to PyTorch within 1e-4."""
    model, export_dir = b0_export
    network = build_network(model, "auto", num_threads=1)
    assert isinstance(network, StageNetwork) and network.coarse is model
    assert isinstance(network.refine, InProcessRefiner)
    assert network.fixed_sizes == {"refiner": SIZE}
    assert network_label(network, model) == "onnx-refiner"
    assert 0 <= network.refine.max_abs_diff <= TOL
    for batch, per_sign in ((1, 2), (2, 5)):
        inputs = example_inputs(model, "refiner", batch, per_sign, seed=11)
        with torch.no_grad():
            want = model.forward_refine(*inputs.values())
        got = network.forward_refine(*inputs.values())
        assert _max_diff(got, want, REFINER_OUTPUTS) <= TOL
    # with an export folder: onnxruntime for both stages, checked against the model
    from_dir = build_network(model, "auto", export_dir, num_threads=1)
    assert isinstance(from_dir, OnnxNetwork) and network_label(from_dir, model) == "onnx"
    # a model without a refiner: nothing to gain without an export, PyTorch
    coarse_only = IGLRModel(backbone="mit_b0", infer_size=SIZE, use_refiner=False).eval()
    assert build_network(coarse_only, "auto") is coarse_only


def test_auto_backend_falls_back_to_pytorch_and_says_why(monkeypatch, caplog):
    import isegm.inference.onnx_backend as backend
    from isegm.utils.log import logger
    monkeypatch.setattr(logger, "propagate", True)  # off once a script set up the logging
    model = IGLRModel(backbone="mit_b0", infer_size=SIZE, refine_size=SIZE).eval()

    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(backend, "graph_bytes", broken_export)
    with caplog.at_level("INFO", logger="isegm"):
        assert build_network(model, "auto") is model
    assert "exporting the refiner to ONNX failed: RuntimeError: unsupported operator" \
        in caplog.text
    caplog.clear()
    # predict.py (one image) does not export: PyTorch unless an export is beside the checkpoint
    with caplog.at_level("INFO", logger="isegm"):
        assert build_network(model, "auto", export_refiner=False) is model
    assert "no ONNX export beside the checkpoint" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level("INFO", logger="isegm"):
        assert build_network(model, "auto") is model
    assert "onnxruntime is not installed" in caplog.text


def test_scripts_default_to_auto_unless_iglr_backend_says_otherwise(monkeypatch):
    from isegm.inference.onnx_backend import default_backend
    monkeypatch.delenv("IGLR_BACKEND", raising=False)
    assert default_backend() == "auto"
    assert parse_args(["NoBRS", "--checkpoint=x.pth"]).backend == "auto"
    from isegm.demo.predict import parse_args as predict_args
    assert predict_args(["--checkpoint", "x.pth", "--image", "i.png", "--clicks", "1,1,+",
                         "--output", "o.png"]).backend == "auto"
    monkeypatch.setenv("IGLR_BACKEND", "torch")
    assert parse_args(["NoBRS", "--checkpoint=x.pth"]).backend == "torch"
    monkeypatch.setenv("IGLR_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="IGLR_BACKEND='tensorrt': expected one of torch, "
                                         "onnx, auto"):
        default_backend()


@pytest.mark.slow
def test_evaluate_model_with_the_auto_backend(b0_checkpoint_export, grabcut_root, tmp_path,
                                              monkeypatch):
    """'auto' gives PyTorch's NoC and writes PyTorch's result files, naming its backend in the
    records and the table."""
    checkpoint, _ = b0_checkpoint_export
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    logs = tmp_path / "logs"
    want = _evaluate(checkpoint, logs, "--backend", "torch")
    texts = []
    args = parse_args(["NoBRS", f"--checkpoint={checkpoint}", "--datasets=GrabCut",
                       "--max-samples=2", "--n-clicks=4", "--iou-analysis", "--cpu",
                       f"--logs-path={logs}", "--backend", "auto"])
    (got,) = run_evaluation(args, echo=texts.append)
    assert (want["backend"], got["backend"]) == ("torch", "onnx-refiner")
    for key in ("NoC@80", "NoC@85", "NoC@90", "NoF@85", "NoF@90", "clicks"):
        assert got[key] == want[key], key
    assert np.abs(np.array(got["mIoU_per_click"]) - want["mIoU_per_click"]).max() <= 1e-3
    assert "network backend onnx-refiner" in texts[-1]
    out = logs / "model"
    assert sorted(p.name for p in out.glob("results_*.csv")) == ["results_NoBRS_cvpr_4.csv"]
    assert len((out / "results_NoBRS_cvpr_4.csv").read_text().splitlines()) == 3  # header + 2
    assert sorted(p.name for p in (out / "ious").glob("*.npz")) == \
        ["GrabCut_model_iglr_cvpr.npz", "GrabCut_model_iglr_cvpr_2.npz"]


@pytest.mark.slow
def test_auto_backend_uses_the_export_beside_the_checkpoint(tmp_path, caplog, monkeypatch):
    """scripts/export_onnx.py without --output writes <stem>_onnx beside the checkpoint; 'auto'
    then runs both stages in onnxruntime, and falls back (with a warning) once the checkpoint
    has other weights than its export."""
    torch.set_num_threads(1)
    checkpoint = tmp_path / "run" / "best_checkpoint.pth"
    checkpoint.parent.mkdir()
    model = _trained_like("mit_b0")
    save_is_model(model, checkpoint, epoch=0)
    assert export_main(["--checkpoint", str(checkpoint)]) == 0
    beside = tmp_path / "run" / "best_checkpoint_onnx"
    assert (beside / META_FILE).is_file() and (beside / "coarse.onnx").is_file()
    model = load_is_model(checkpoint)
    network = build_network(model, "auto", checkpoint=checkpoint, num_threads=1)
    assert isinstance(network, OnnxNetwork) and network.export_dir == beside
    _assert_stages_equal(model, network, [(1, 2), (2, 4)])
    # settings the export's coarse graph cannot serve give that stage back to PyTorch
    image, gt = _blob_sample()
    for options, label in (({"infer_size": 96}, "onnx-refiner"), ({}, "onnx")):
        predictor = get_predictor("iglr", model, "cpu", network=network, **options)
        assert network_label(predictor.network, model) == label
        reference = get_predictor("iglr", model, "cpu", **options)
        for p in (predictor, reference):
            p.set_image(image)
        clicker = Clicker(gt_mask=gt)
        clicker.make_next_click(np.zeros(gt.shape, dtype=bool))
        assert np.abs(predictor.get_prediction(clicker)
                      - reference.get_prediction(clicker)).max() <= 1e-3
    zoom = get_predictor("coarse", model, "cpu", crop_mode="zoom_in", network=network)
    assert zoom.network.coarse is model  # (a coarse predictor never calls the refiner)
    bf16 = get_predictor("iglr", model, "cpu", autocast_dtype=torch.bfloat16, network=network)
    assert bf16.network is not network and network_label(bf16.network, bf16.model) == "torch"
    # the segmenter of the interactive tools finds it too
    from isegm.inference.session import Segmenter
    segmenter = Segmenter.from_checkpoint(checkpoint, backend="auto")
    assert isinstance(segmenter.new_predictor().network, OnnxNetwork)
    assert segmenter.label.endswith("(onnx)")
    # training wrote new weights to the same file: the export no longer belongs to it
    with torch.no_grad():
        model.refiner.gate.bias.add_(1.0)
    save_is_model(model, checkpoint, epoch=1)
    model = load_is_model(checkpoint)
    from isegm.utils.log import logger
    monkeypatch.setattr(logger, "propagate", True)  # the export script's logging stops it
    with caplog.at_level("INFO", logger="isegm"):
        network = build_network(model, "auto", checkpoint=checkpoint, num_threads=1)
    assert "not using the ONNX export beside the checkpoint" in caplog.text
    assert "differs from the model by" in caplog.text
    assert isinstance(network, StageNetwork) and network.coarse is model
    assert isinstance(network.refine, InProcessRefiner)
