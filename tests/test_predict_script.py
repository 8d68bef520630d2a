"""scripts/predict.py: real files in tmp_path, run as a subprocess; bad input gives one line."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from isegm.demo.predict import main, parse_clicks, PredictError
from tests.test_session import two_objects_image

REPO = Path(__file__).resolve().parents[1]


def _write_rgb(path, image):
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def _run(*args):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(REPO / "scripts" / "predict.py"), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_grabcut_mask_and_overlay(tmp_path):
    image = two_objects_image()
    src = _write_rgb(tmp_path / "in.png", image)
    out, overlay = tmp_path / "out" / "mask.png", tmp_path / "overlay.jpg"
    result = _run("--checkpoint", "cv_grabcut", "--image", src, "--clicks", "30,45,+ 92,45,-",
                  "--output", out, "--overlay", overlay)
    assert result.returncode == 0, result.stderr
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (90, 120) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    yy, xx = np.mgrid[0:90, 0:120]
    disk = (yy - 45) ** 2 + (xx - 30) ** 2 < 16 ** 2
    assert (mask[disk] == 255).all() and (mask[25:65, 75:110] == 0).all()
    shown = cv2.cvtColor(cv2.imread(str(overlay)), cv2.COLOR_BGR2RGB)
    assert shown.shape == image.shape
    # blended inside the disk, untouched far outside the mask and the click marks
    assert np.abs(shown[45, 22].astype(int) - image[45, 22]).sum() > 60
    assert np.abs(shown[80, 60].astype(int) - image[80, 60]).sum() < 15


def test_iglr_checkpoint(tmp_path):
    from isegm.model import IGLRModel, save_is_model
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pth"
    save_is_model(IGLRModel("mit_b0", infer_size=64, refine_size=32), ckpt)
    src = _write_rgb(tmp_path / "in.jpg", two_objects_image())
    out = tmp_path / "mask.png"
    result = _run("--checkpoint", ckpt, "--image", src, "--clicks", "30,45,+", "--output", out,
                  "--cpu")
    assert result.returncode == 0, result.stderr
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (90, 120) and set(np.unique(mask)) <= {0, 255}
    assert "iglr: " in result.stderr and "/tiny.pth" in result.stderr


def test_a_malformed_click_string_fails_in_one_line(tmp_path):
    src = _write_rgb(tmp_path / "in.png", two_objects_image())
    result = _run("--checkpoint", "cv_grabcut", "--image", src, "--clicks", "30;45;+",
                  "--output", tmp_path / "m.png")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "predict.py: error: --clicks: '30;45;+' is not 'x,y,+' or 'x,y,-' (x = column, y = row "
        "in pixels; clicks separated by spaces)"]
    assert not (tmp_path / "m.png").exists()


def test_parse_clicks():
    assert parse_clicks(" 120,45,+   300,80,-\n") == [(120.0, 45.0, True), (300.0, 80.0, False)]
    for bad in ["", "1,2", "1,2,3", "a,2,+", "1,2,+,", "1 2 +"]:
        with pytest.raises(PredictError, match="--clicks"):
            parse_clicks(bad)


def _bad_inputs(tmp_path):
    good = _write_rgb(tmp_path / "good.png", two_objects_image())
    (tmp_path / "notes.jpg").write_text("not an image")
    data = (tmp_path / "full.jpg")
    _write_rgb(data, two_objects_image(300, 400))
    (tmp_path / "truncated.jpg").write_bytes(data.read_bytes()[:600])
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "foreign.pth")
    return good, {
        "unreadable": (["--image", tmp_path / "notes.jpg"], "notes.jpg' is not an image"),
        "missing": (["--image", tmp_path / "nope.png"], "cannot read image"),
        "truncated": (["--image", tmp_path / "truncated.jpg"], "truncated or corrupt"),
        "outside": (["--clicks", "30,45,+ 120,10,-"], "outside the 120x90 image"),
        "malformed": (["--clicks", "30,45"], "'30,45' is not 'x,y,+'"),
        "foreign": (["--checkpoint", tmp_path / "foreign.pth"], "not an IGLR model checkpoint"),
    }


@pytest.mark.parametrize("case", ["unreadable", "missing", "truncated", "outside", "malformed",
                                  "foreign"])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, case):
    good, cases = _bad_inputs(tmp_path)
    override, expected = cases[case]
    args = {"--checkpoint": "cv_grabcut", "--image": good, "--clicks": "30,45,+",
            "--output": tmp_path / "m.png"}
    args.update(dict(zip(override[::2], override[1::2])))
    rc = main([str(a) for kv in args.items() for a in kv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("predict.py: error: ") and expected in err[0], err
    assert not (tmp_path / "m.png").exists()
