"""Mask correction (rule 38): DAVIS-585 layout, initial masks, progressive merge, boundary
metrics recorded per click."""
import cv2
import numpy as np
import pytest

from isegm.data.datasets import Davis585Dataset, FolderInitMasks, GrabCutDataset
from isegm.data.io import DatasetError
from isegm.inference.clicker import Click
from isegm.inference.evaluation import evaluate_dataset, evaluate_sample, progressive_merge
from isegm.inference.predictors import get_predictor
from isegm.inference.utils import compute_noc_metric
from isegm.model import IGLRModel


def disk(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def write_davis585(root, frames=(("bear", 2), ("car", 1)), shape=(60, 80)):
    """DAVIS-585 layout: <seq>/<name>.jpg, <name>.png, init_stm_<name>.png, init_sp_<name>.png."""
    rng = np.random.default_rng(0)
    truths = {}
    for seq, count in frames:
        (root / seq).mkdir(parents=True)
        for k in range(count):
            name = f"{k:05d}"
            gt = disk(shape, (30, 35 + 5 * k), 15)
            image = rng.integers(0, 60, size=shape + (3,), dtype=np.uint8)
            image[gt] += 150
            cv2.imwrite(str(root / seq / f"{name}.jpg"), image)
            cv2.imwrite(str(root / seq / f"{name}.png"), gt.astype(np.uint8) * 255)
            cv2.imwrite(str(root / seq / f"init_stm_{name}.png"), gt.astype(np.uint8) * 255)
            sp = gt.copy()
            sp[:, :35] = False                      # half of the object missing
            cv2.imwrite(str(root / seq / f"init_sp_{name}.png"), sp.astype(np.uint8) * 255)
            truths[f"{seq}/{name}"] = gt
    return truths


def test_davis585_loader_reads_the_layout(tmp_path):
    truths = write_davis585(tmp_path)
    stm = Davis585Dataset(tmp_path)
    sp = Davis585Dataset(tmp_path, init_mask_mode='sp')
    assert len(stm) == 3
    ids = [stm.get_sample(i).sample_id for i in range(3)]
    assert ids == ["bear/00000", "bear/00001", "car/00000"]
    sample = stm.get_sample(1)
    assert np.array_equal(sample.gt_mask == 1, truths["bear/00001"])
    assert np.array_equal(sample.init_mask, truths["bear/00001"])
    assert sp.get_sample(1).init_mask.sum() < truths["bear/00001"].sum()


def test_davis585_errors_name_the_file(tmp_path):
    write_davis585(tmp_path)
    (tmp_path / "car" / "init_sp_00000.png").unlink()
    with pytest.raises(DatasetError, match="init_sp_00000.png"):
        Davis585Dataset(tmp_path, init_mask_mode='sp')
    with pytest.raises(ValueError, match="stm, sp"):
        Davis585Dataset(tmp_path, init_mask_mode='vos')
    cv2.imwrite(str(tmp_path / "bear" / "init_stm_00000.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DatasetError, match="init_stm_00000.png.*expected 80x60"):
        Davis585Dataset(tmp_path).get_sample(0)
    with pytest.raises(DatasetError, match="does not exist"):
        Davis585Dataset(tmp_path / "nope")


def test_progressive_merge_changes_only_the_clicked_component():
    prev = np.zeros((20, 20), bool)
    prev[2:8, 2:8] = True
    pred = np.zeros((20, 20), bool)
    pred[12:16, 12:16] = True      # a new component
    pred[0:2, 15:20] = True        # another new component
    # pred drops prev's square entirely
    merged = progressive_merge(prev, pred, Click(True, (13, 13)))
    want = prev.copy()
    want[12:16, 12:16] = True
    assert np.array_equal(merged, want)
    # a negative click on the dropped square removes it and nothing else
    merged = progressive_merge(prev, pred, Click(False, (4, 4)))
    assert not merged.any()
    # a click where prediction and previous mask agree changes nothing
    assert np.array_equal(progressive_merge(prev, pred, Click(True, (10, 0))), prev)
    assert merged is not prev


def test_perfect_initial_mask_needs_one_click_and_records_click_zero(tmp_path):
    write_davis585(tmp_path)
    dataset = Davis585Dataset(tmp_path)                 # stm masks are perfect here
    stats = {}
    ious, _ = evaluate_dataset(dataset, get_predictor("empty"), show_progress=False,
                               max_iou_thr=0.9, stats=stats, boundary_metrics=True)
    # the first click is negative at (0, 0) (no error anywhere); merge keeps the perfect mask
    # although the predictor returns an empty mask
    assert [len(x) for x in ious] == [1, 1, 1]
    assert all(x[0] == 1.0 for x in ious)
    assert stats["init_iou"] == [1.0, 1.0, 1.0]
    assert [b.tolist() for b in stats["biou"]] == [[1.0]] * 3
    assert [a.tolist() for a in stats["assd"]] == [[0.0]] * 3
    noc, nof = compute_noc_metric(ious, [0.85, 0.9], max_clicks=20)
    assert list(noc) == [1.0, 1.0] and list(nof) == [0, 0]
    # without merge the empty prediction replaces the perfect mask
    ious, _ = evaluate_dataset(dataset, get_predictor("empty"), show_progress=False,
                               max_iou_thr=0.9, merge=False)
    assert all(len(x) == 20 and x.max() == 0.0 for x in ious)


def test_initial_sp_masks_improve_with_clicks_under_merge(tmp_path):
    write_davis585(tmp_path)
    stats = {}
    ious, _ = evaluate_dataset(Davis585Dataset(tmp_path, init_mask_mode='sp'),
                               get_predictor("oracle"), show_progress=False, max_iou_thr=0.9,
                               stats=stats)
    # the first click lands in the missing half (a positive click); the oracle predicts the
    # whole object, whose XOR component at the click is exactly the missing half
    assert all(x.tolist() == [1.0] for x in ious)
    assert all(0.3 < v < 0.8 for v in stats["init_iou"])


@pytest.fixture(scope="module")
def tiny_iglr():
    import torch
    torch.manual_seed(0)
    return IGLRModel("mit_b0", infer_size=64, refine_size=64).eval()


def test_empty_initial_mask_without_merge_is_the_standard_protocol(grabcut_root, tiny_iglr):
    dataset = GrabCutDataset(grabcut_root)
    sample = dataset.get_sample(0)
    image, gt = sample.image[:160, :200], sample.gt_mask[:160, :200]
    predictor = get_predictor("iglr", tiny_iglr)
    clicks, ious, probs = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, max_clicks=6)
    empty = np.zeros(gt.shape, bool)
    clicks2, ious2, probs2 = evaluate_sample(image, gt, predictor, max_iou_thr=1.01, max_clicks=6,
                                             init_mask=empty, merge=False)
    assert [c.coords for c in clicks] == [c.coords for c in clicks2]
    assert np.array_equal(ious, ious2) and np.array_equal(probs, probs2)


def test_folder_init_masks_for_any_dataset(tmp_path, grabcut_root):
    dataset = GrabCutDataset(grabcut_root)
    indices = [0, 1]
    folder = tmp_path / "init"
    folder.mkdir()
    for i in indices:
        sample = dataset.get_sample(i)
        cv2.imwrite(str(folder / f"{sample.sample_id}.png"),
                    (sample.gt_mask == 1).astype(np.uint8) * 255)
    stats = {}
    ious, _ = evaluate_dataset(dataset, get_predictor("oracle"), indices=indices,
                               show_progress=False, max_iou_thr=0.9, stats=stats,
                               init_masks=FolderInitMasks(folder))
    assert stats["init_iou"] == [1.0, 1.0] and all(x.tolist() == [1.0] for x in ious)
    with pytest.raises(DatasetError, match="no file"):
        evaluate_dataset(dataset, get_predictor("oracle"), indices=[2], show_progress=False,
                         max_iou_thr=0.9, init_masks=FolderInitMasks(folder))


def test_initial_mask_of_wrong_size_is_refused():
    gt = np.zeros((20, 20), np.int32)
    gt[5:10, 5:10] = 1
    with pytest.raises(ValueError, match="initial mask of shape"):
        evaluate_sample(np.zeros((20, 20, 3), np.uint8), gt, get_predictor("oracle"),
                        max_iou_thr=0.9, init_mask=np.zeros((10, 10), bool))


# --- the evaluator's command line ------------------------------------------------------------
def _run_cli(argv, capsys):
    from isegm.inference.cli import main
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    return out


def test_print_ious_with_boundary_metrics_on_grabcut(tmp_path, grabcut_root, monkeypatch, capsys):
    """--print-ious --boundary-metrics: mIoU@k, mBIoU@k and ASSD@k lines like the released
    evaluator, the means in CSV/JSON, the per-click series in the .npz, a mBIoU plot panel."""
    import json
    from isegm.inference.results import load_ious
    from scripts.plot_ious_analysis import main as plot_main
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    logs = tmp_path / "logs"
    out = _run_cli(["cv_grabcut", "--datasets=GrabCut", "--max-samples=2", "--n-clicks=3",
                    "--print-ious", "--boundary-metrics", f"--logs-path={logs}"], capsys)
    lines = {line.split(":")[0]: line for line in out.splitlines() if "@k:" in line}
    assert set(lines) == {"GrabCut mIoU@k", "GrabCut mBIoU@k", "GrabCut ASSD@k"}
    assert lines["GrabCut mBIoU@k"].count(",") == 2           # three clicks
    records = json.loads((logs / "cv_grabcut" / "results_cv_grabcut_cvpr_3.json").read_text())
    saved = load_ious(logs / "cv_grabcut" / "ious" / "GrabCut_none_cv_grabcut_cvpr.npz")
    biou = np.stack(saved["all_biou"])
    assert biou.shape == (2, 3) and np.all((biou >= 0) & (biou <= 1))
    assert records[0]["mBIoU_per_click"] == pytest.approx(biou.mean(0).tolist(), abs=1e-6)
    assert records[0]["mBIoU"] == pytest.approx(float(biou.mean()), abs=1e-6)
    assert records[0]["mASSD"] == pytest.approx(float(np.stack(saved["all_assd"]).mean()), rel=1e-5)
    header = (logs / "cv_grabcut" / "results_cv_grabcut_cvpr_3.csv").read_text().splitlines()[0]
    assert "mBIoU" in header.split(",") and "mASSD" in header.split(",")
    # the IoU line per sample (as before) and a boundary-IoU row of panels in the figure
    assert sum(line.startswith("GrabCut 106024:") for line in out.splitlines()) == 1
    png = tmp_path / "curves.png"
    assert plot_main(["--folder", str(logs), "--output", str(png)]) == 0
    assert cv2.imread(str(png)).shape[:2] == (800, 500)      # two rows of panels


def test_davis585_layout_end_to_end(tmp_path, monkeypatch, capsys):
    """evaluate_model.py on a DAVIS-585 fixture: initial 'sp' masks, merge on by default,
    the initial IoU reported as click 0."""
    import json
    write_davis585(tmp_path / "DAVIS585")
    monkeypatch.setenv("DAVIS585_PATH", str(tmp_path / "DAVIS585"))
    logs = tmp_path / "logs"
    out = _run_cli(["oracle", "--datasets=DAVIS585", "--init-mask=sp", "--n-clicks=5",
                    f"--logs-path={logs}"], capsys)
    assert "DAVIS585 initial masks: mIoU@0" in out
    records = json.loads((logs / "oracle" / "results_oracle_cvpr_5.json").read_text())
    assert records[0]["num_samples"] == 3 and records[0]["NoC@90"] == 1.0
    assert 0.3 < records[0]["init_IoU"] < 0.8
    saved = load_davis_ious(logs)
    assert len(saved["init_iou"]) == 3
    # without merge the oracle's whole-object prediction is taken as is: the same NoC here
    out = _run_cli(["empty", "--datasets=DAVIS585", "--init-mask=stm", "--n-clicks=5",
                    "--no-progressive-merge", f"--logs-path={logs}"], capsys)
    records = json.loads((logs / "empty" / "results_empty_cvpr_5.json").read_text())
    assert records[0]["NoC@85"] == 5.0 and records[0]["init_IoU"] == 1.0


def load_davis_ious(logs):
    from isegm.inference.results import load_ious
    return load_ious(next((logs / "oracle" / "ious").glob("DAVIS585_*.npz")))


def test_init_masks_folder_must_exist(tmp_path, grabcut_root, monkeypatch, capsys):
    from isegm.inference.cli import main
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    assert main(["oracle", "--datasets=GrabCut", f"--init-masks={tmp_path / 'nope'}",
                 f"--logs-path={tmp_path}"]) == 2
    assert "--init-masks" in capsys.readouterr().err
