"""Evaluation on bad data and repeated evaluations (issue 16): real files written to tmp_path,
the real `scripts/evaluate_model.py` (or its body, `cli.main` / `run_evaluation`).

- Files that can be checked cheaply (present, paired, image headers, mask sizes from headers)
  are refused before anything runs: one line naming the file, exit status 2, nothing written.
- A file that fails to decode mid-run is skipped: every other result is written, the skipped
  files are listed, exit status 3.
- Outputs are named by run and checkpoint and never overwritten.
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.inference.cli import (EXIT_SKIPPED, fresh_path, main, output_location, parse_args,
                                 run_evaluation)
from isegm.inference.results import load_ious

REPO = Path(__file__).resolve().parents[1]
SIZE = (48, 64)  # H, W


def _grabcut(root: Path, n: int = 3) -> Path:
    """A GrabCut-layout folder: data_GT/im<i>.jpg, boundary_GT/im<i>.bmp (255 object, 128
    ignore band)."""
    (root / "data_GT").mkdir(parents=True)
    (root / "boundary_GT").mkdir()
    for i in range(n):
        image = np.full(SIZE + (3,), 60 + 40 * i, np.uint8)
        mask = np.zeros(SIZE, np.uint8)
        mask[10:34, 14 + 4 * i:44 + 4 * i] = 255
        image[mask > 0] = (200, 90, 40)
        mask[9, 14:44] = 128
        cv2.imwrite(str(root / "data_GT" / f"im{i}.jpg"), image)
        cv2.imwrite(str(root / "boundary_GT" / f"im{i}.bmp"), mask)
    return root


def _truncate_after_header(path: Path) -> None:
    """Keep the JPEG's header (its size stays readable) and cut the compressed data (libjpeg
    would decode it with a warning, the missing rows gray)."""
    data = path.read_bytes()
    sos = data.index(b"\xff\xda")  # start of scan: the header ends here
    path.write_bytes(data[:sos + 20])


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    monkeypatch.setenv("GRABCUT_PATH", str(_grabcut(tmp_path / "gc")))
    return tmp_path


def test_a_file_that_fails_to_decode_is_skipped_and_every_result_written(env):
    bad = env / "gc" / "data_GT" / "im1.jpg"
    _truncate_after_header(bad)
    logs = env / "logs"
    cmd = [sys.executable, str(REPO / "scripts" / "evaluate_model.py"), "oracle",
           "--datasets=GrabCut", "--n-clicks=3", "--save-ious", f"--logs-path={logs}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == EXIT_SKIPPED == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    out = logs / "oracle"
    listed = out / "skipped_GrabCut_none_oracle_cvpr.txt"
    assert last == (f"evaluate_model.py: 1 sample(s) skipped because their files could not be "
                    f"read; every other result is written; listed in {listed}")
    assert listed.read_text() == (f"1\t{bad}\tcannot decode '{bad}': the JPEG data is "
                                  f"truncated (no end-of-image marker after its last scan)\n")
    # every result of the other samples is written
    (record,) = json.loads((out / "results_oracle_cvpr_3.json").read_text())
    assert record["num_samples"] == 2 and record["skipped"] == 1
    assert record["skipped_files"] == [str(bad)] and record["NoC@90"] == 1.0
    rows = list(csv.DictReader((out / "results_oracle_cvpr_3.csv").open()))
    assert len(rows) == 1 and rows[0]["skipped"] == "1" and rows[0]["num_samples"] == "2"
    table = (out / "results_oracle_cvpr_3.txt").read_text()
    assert f"GrabCut: 1 sample(s) skipped, their files could not be read: im1.jpg (list: " \
           f"{listed})" in table
    assert "GrabCut: 1 sample(s) skipped" in proc.stdout
    saved = load_ious(out / "ious" / "GrabCut_none_oracle_cvpr.npz")
    assert saved["sample_ids"] == ["im0", "im2"] and len(saved["all_ious"]) == 2
    assert (out / "ious" / "GrabCut_none_oracle_cvpr.pkl").is_file()


def _resized_mask(env):
    cv2.imwrite(str(env / "gc" / "boundary_GT" / "im2.bmp"), np.zeros((30, 40), np.uint8))
    return (f"dataset GrabCut: mask '{env / 'gc' / 'boundary_GT' / 'im2.bmp'}' is 40x30 (WxH) "
            f"but its image '{env / 'gc' / 'data_GT' / 'im2.jpg'}' is 64x48; expected the "
            f"image's size")


def _empty_images(env):
    for path in (env / "gc" / "data_GT").iterdir():
        path.unlink()
    return (f"dataset GrabCut: folder '{env / 'gc' / 'data_GT'}' holds no images (looked for "
            f"files ending in .bmp, .jpeg, .jpg, .png, .tif, .tiff)")


def _no_masks_folder(env):
    for path in (env / "gc" / "boundary_GT").iterdir():
        path.unlink()
    (env / "gc" / "boundary_GT").rmdir()
    return (f"dataset GrabCut: folder '{env / 'gc' / 'boundary_GT'}' does not exist (expected "
            f"masks there)")


def _unpaired_image(env):
    (env / "gc" / "boundary_GT" / "im0.bmp").unlink()
    return (f"dataset GrabCut: image '{env / 'gc' / 'data_GT' / 'im0.jpg'}' has no mask "
            f"'{env / 'gc' / 'boundary_GT' / 'im0'}.*' (1 image(s) without a mask)")


def _not_an_image(env):
    (env / "gc" / "data_GT" / "im1.jpg").write_bytes(b"<html>not found</html>")
    return (f"dataset GrabCut: cannot read the header of '{env / 'gc' / 'data_GT' / 'im1.jpg'}':"
            f" not an image file (UnidentifiedImageError)")


@pytest.mark.parametrize("damage", [_resized_mask, _empty_images, _no_masks_folder,
                                    _unpaired_image, _not_an_image])
def test_bad_files_are_refused_before_anything_runs_with_one_line(env, damage, capsys):
    expected = damage(env)
    assert main(["oracle", "--datasets=GrabCut", f"--logs-path={env / 'logs'}"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"evaluate_model.py: error: {expected}\n"
    assert not (env / "logs").exists()  # refused before any folder or result


def test_the_script_refuses_a_wrong_size_mask_with_one_line_and_status_2(env):
    expected = _resized_mask(env)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate_model.py"), "oracle",
                           "--datasets=GrabCut", f"--logs-path={env / 'logs'}"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert proc.stderr == f"evaluate_model.py: error: {expected}\n"
    assert not (env / "logs").exists()


def test_only_the_evaluated_samples_are_checked(env):
    """--max-samples=2 evaluates im0 and im1: a bad mask of im2 is not read."""
    _resized_mask(env)
    (record,) = run_evaluation(parse_args(["oracle", "--datasets=GrabCut", "--max-samples=2",
                                           f"--logs-path={env / 'logs'}"]), echo=lambda t: None)
    assert record["num_samples"] == 2 and record["skipped"] == 0


# ------------------------------------------------------------------------------ outputs

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from isegm.model import IGLRModel, save_is_model
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    save_is_model(IGLRModel("mit_b0", infer_size=64, refine_size=32, drop_path_rate=0.0), path)
    return path


def _run_folder(exps: Path, name: str, checkpoint: Path) -> Path:
    folder = exps / "iglr" / "b0_test" / name / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last_checkpoint.pth").write_bytes(checkpoint.read_bytes())
    return folder / "last_checkpoint.pth"


def _evaluate(env, *argv):
    return run_evaluation(parse_args(["NoBRS", "--datasets=GrabCut", "--max-samples=1",
                                      "--n-clicks=1", "--no-flip", "--cpu",
                                      f"--logs-path={env / 'logs'}", *argv]),
                          echo=lambda text: None)


def test_outputs_are_named_by_run_and_checkpoint_and_never_overwritten(env, tiny_checkpoint):
    exps = env / "exps"
    first = _run_folder(exps, "000_a", tiny_checkpoint)
    second = _run_folder(exps, "004_b", tiny_checkpoint)
    (rec_a,) = _evaluate(env, f"--checkpoint={first}")
    (rec_b,) = _evaluate(env, f"--checkpoint={second}")
    out_a = env / "logs" / "iglr" / "b0_test" / "000_a" / "last_checkpoint"
    out_b = env / "logs" / "iglr" / "b0_test" / "004_b" / "last_checkpoint"
    assert rec_a["model"] == "iglr/b0_test/000_a" and rec_b["model"] == "iglr/b0_test/004_b"
    npz = "GrabCut_last_checkpoint_iglr_cvpr.npz"
    for out, rec in ((out_a, rec_a), (out_b, rec_b)):
        assert load_ious(out / "ious" / npz)["meta"]["checkpoint"] == rec["checkpoint"]
        assert len(json.loads((out / "results_NoBRS_cvpr_1.json").read_text())) == 1
    assert load_ious(out_a / "ious" / npz)["meta"]["checkpoint"] == str(first)

    # the same checkpoint again, through --exp-path (which names the run folder): nothing of
    # the first evaluation changes, its tables grow, its per-sample file gets a new name
    before = (out_a / "ious" / npz).read_bytes()
    (rec_again,) = _evaluate(env, "--exp-path=iglr/b0_test/000")
    assert rec_again["model"] == "iglr/b0_test/000_a"
    assert (out_a / "ious" / npz).read_bytes() == before
    assert sorted(p.name for p in (out_a / "ious").iterdir()) == [
        npz, npz.replace(".npz", "_2.npz")]
    assert len(json.loads((out_a / "results_NoBRS_cvpr_1.json").read_text())) == 2
    assert len((out_a / "results_NoBRS_cvpr_1.csv").read_text().splitlines()) == 3
    assert (out_a / "results_NoBRS_cvpr_1.txt").read_text().count("Eval results for model: "
                                                                   "iglr/b0_test/000_a") == 2

    # a checkpoint outside EXPS_PATH: its stem
    (rec_c,) = _evaluate(env, f"--checkpoint={tiny_checkpoint}")
    assert rec_c["model"] == "tiny"
    assert (env / "logs" / "tiny" / "ious" / "GrabCut_tiny_iglr_cvpr.npz").is_file()


def test_output_location_and_fresh_path(tmp_path):
    logs, exps = tmp_path / "logs", tmp_path / "exps"
    ckpt = exps / "fam" / "model" / "002_x" / "checkpoints" / "010.pth"
    assert output_location(logs, exps, ckpt) == ("fam/model/002_x",
                                                 logs / "fam" / "model" / "002_x" / "010")
    elsewhere = tmp_path / "copied" / "003_y" / "checkpoints" / "last_checkpoint.pth"
    assert output_location(logs, exps, elsewhere) == ("003_y",
                                                      logs / "003_y" / "last_checkpoint")
    assert output_location(logs, exps, tmp_path / "w" / "b3.pth") == ("b3", logs / "b3")
    assert output_location(logs, exps, ckpt, model_name="mine") == ("mine", logs / "mine")
    assert output_location(logs, exps, None, mode="oracle") == ("oracle", logs / "oracle")
    target = tmp_path / "a.npz"
    assert fresh_path(target) == target
    target.write_bytes(b"1")
    assert fresh_path(target) == tmp_path / "a_2.npz"
    (tmp_path / "a_2.npz").write_bytes(b"2")
    assert fresh_path(target) == tmp_path / "a_3.npz"
    (tmp_path / "vis").mkdir()
    assert fresh_path(tmp_path / "vis") == tmp_path / "vis_2"


# ------------------------------------------------------------------------------ ImagesDir

def test_images_dir_is_an_evaluation_dataset_with_one_sample_per_mask(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem, boxes in (("cat", [(8, 30, 10, 40)]), ("dogs", [(5, 20, 5, 25), (25, 45, 30, 60)])):
        image = np.full(SIZE + (3,), 70, np.uint8)
        for k, (y0, y1, x0, x1) in enumerate(boxes):
            mask = np.zeros(SIZE, np.uint8)
            mask[y0:y1, x0:x1] = 255
            image[mask > 0] = 210
            cv2.imwrite(str(root / "masks" / (f"{stem}.png" if k == 0 else f"{stem}_{k}.png")),
                        mask)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
    monkeypatch.setenv("IMAGES_DIR_PATH", str(root))
    monkeypatch.setenv("EXPS_PATH", str(tmp_path / "exps"))
    logs = tmp_path / "logs"
    assert main(["oracle", "--datasets=ImagesDir", "--n-clicks=2", f"--logs-path={logs}"]) == 0
    (record,) = json.loads((logs / "oracle" / "results_oracle_cvpr_2.json").read_text())
    assert record["dataset"] == "ImagesDir" and record["num_samples"] == 3
    assert record["NoC@90"] == 1.0 and record["skipped"] == 0
    saved = load_ious(logs / "oracle" / "ious" / "ImagesDir_none_oracle_cvpr.npz")
    assert saved["sample_ids"] == ["cat", "dogs", "dogs_1"]


def test_a_checkpoint_whose_weights_do_not_fit_is_refused_before_anything_runs(env, capsys,
                                                                               tiny_checkpoint):
    state = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    state["state_dict"].pop("backbone.block1.0.attn.q.weight")
    bad = env / "missing_key.pth"
    torch.save(state, bad)
    assert main(["NoBRS", f"--checkpoint={bad}", "--datasets=GrabCut",
                 f"--logs-path={env / 'logs'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"evaluate_model.py: error: checkpoint '{bad}': weights do not match "
                          f"the stored config: Error(s) in loading state_dict for IGLRModel: "
                          f"Missing key(s) in state_dict: \"backbone.block1.0.attn.q.weight\"")
    assert not (env / "logs").exists()
