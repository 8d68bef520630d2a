"""docs/gpu.md: every command in it parses, and the dataset check it tells users to run works.

Commands are taken from the fenced ```bash blocks of the guide. A command of one of our scripts
(`python <script>.py ...`, `torchrun ... train.py ...`) is run up to its argparse parser, with
the guide's own arguments, and stopped there: nothing is trained or evaluated. Any other program
must be one of `EXTERNAL_PROGRAMS`, so a new command cannot slip into the guide unchecked.
"""
from __future__ import annotations

import argparse
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from isegm.data.check import DATASET_SPECS, check_datasets, exit_code, parse_names
from isegm.utils.config import load_config
from tests.conftest import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "gpu.md"
# Programs the guide may name that are not ours (installers, system tools, shell built-ins).
EXTERNAL_PROGRAMS = {"pip", "nvidia-smi", "git", "source", "export", "ls", "mkdir", "ln",
                     "tensorboard"}
# Python invocations that are not one of our scripts: `python -m venv/pip`, `python -c`.
PYTHON_FLAGS_EXTERNAL = {"-m", "-c"}
# Scripts another branch adds; their commands are parsed once the script is in the checkout.
PENDING_SCRIPTS = {"scripts/gpu_check.py": "added by the `robust` branch"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def guide_commands(text: str) -> List[str]:
    """Each shell command of the ```bash blocks: continuation lines joined, comments dropped,
    `a && b` split into two commands."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


class _Parsed(BaseException):
    """Raised from inside a script's parse_args: the arguments were accepted."""

    def __init__(self, namespace: argparse.Namespace, prog: str):
        super().__init__(prog)
        self.namespace, self.prog = namespace, prog


def parse_script(script: str, args: List[str], monkeypatch) -> argparse.Namespace:
    """Run `script` as __main__ with `args` up to its parse_args; return the parsed namespace.

    An argument the script rejects ends in argparse's SystemExit(2), failing the test.
    """
    path = REPO_ROOT / script
    assert path.is_file(), f"the guide runs '{script}', which does not exist"
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace), self.prog)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        m.setattr(sys, "argv", [str(path)] + args)
        m.chdir(REPO_ROOT)
        try:
            runpy.run_path(str(path), run_name="__main__")
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as e:
            pytest.fail(f"'{script} {' '.join(args)}' was rejected by its parser (exit {e.code})")
    pytest.fail(f"'{script}' finished without parsing any arguments")


def check_command(command: str, monkeypatch) -> None:
    words = shlex.split(command)
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    assert words, f"empty command '{command}'"
    program = Path(words[0]).name
    if program in ("python", "python3"):
        if words[1] in PYTHON_FLAGS_EXTERNAL:
            return
        script, args = words[1], words[2:]
        if script in PENDING_SCRIPTS and not (REPO_ROOT / script).is_file():
            pytest.skip(f"{script} is {PENDING_SCRIPTS[script]} and not in this checkout yet")
        namespace = parse_script(script, args, monkeypatch)
        model_path = getattr(namespace, "model_path", None)
        if model_path is not None:
            assert (REPO_ROOT / model_path).is_file(), f"config module '{model_path}' of " \
                                                      f"'{command}' does not exist"
    elif program == "torchrun":
        from torch.distributed.run import get_args_parser
        ns = get_args_parser().parse_args(words[1:])
        check_command(shlex.join(["python", ns.training_script] + ns.training_script_args),
                      monkeypatch)
    elif program == "bash":
        script = REPO_ROOT / words[1]
        assert script.is_file(), f"the guide runs '{words[1]}', which does not exist"
        subprocess.run(["bash", "-n", str(script)], check=True)
    else:
        assert program in EXTERNAL_PROGRAMS, \
            f"'{command}': '{program}' is neither one of our scripts nor a known external program"


def test_guide_has_the_reference_commands():
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"))
    text = "\n".join(commands)
    for needle in ("scripts/setup.sh", "scripts/gpu_check.py", "scripts/check_datasets.py",
                   "torchrun", "--resume-exp", "--checkpoint=",
                   *(f"models/iglr/segformer{b}_S2_{d}.py" for b in ("B0", "B3")
                     for d in ("sbd", "cclvs"))):
        assert needle in text, f"docs/gpu.md has no command with '{needle}'"


@pytest.mark.parametrize("command", guide_commands(GUIDE.read_text(encoding="utf-8")))
def test_guide_command_parses(command, monkeypatch):
    check_command(command, monkeypatch)


def test_command_check_catches_a_bad_flag(monkeypatch):
    """The parse check itself can fail: a flag train.py does not have is rejected."""
    with pytest.raises(pytest.fail.Exception, match="rejected by its parser"):
        check_command("python train.py models/iglr/segformerB0_S2_sbd.py --batchsize=28",
                      monkeypatch)
    with pytest.raises(AssertionError, match="neither one of our scripts"):
        check_command("wget https://example.org/x", monkeypatch)


def test_dataset_check_counts_a_present_dataset(grabcut_root, coco_mval_root, monkeypatch):
    monkeypatch.setenv("GRABCUT_PATH", str(grabcut_root))
    monkeypatch.setenv("COCO_MVAL_PATH", str(coco_mval_root))
    results = check_datasets(load_config(), ["GrabCut", "COCO_MVal"])
    assert [(r.spec.label, r.status, r.count) for r in results] == \
        [("GrabCut", "ok", 50), ("COCO_MVal", "subset", 400)]
    assert results[0].line().split() == ["OK", "GrabCut", "50", "instances", "(expected", "50)"]
    assert "400 instances (expected 800)" in results[1].line()
    assert "not comparable with published numbers" in results[1].line()
    assert exit_code(results) == 0


def test_dataset_check_reports_missing_and_miscounted(grabcut_root, tmp_path, monkeypatch):
    missing = tmp_path / "no_davis"
    monkeypatch.setenv("DAVIS_PATH", str(missing))
    # A Berkeley folder holding only 3 of the 100 instances (GrabCut files in Berkeley's layout).
    berkeley = tmp_path / "Berkeley"
    (berkeley / "images").mkdir(parents=True)
    (berkeley / "masks").mkdir()
    for image in sorted((grabcut_root / "data_GT").iterdir())[:3]:
        stem = image.name.split(".")[0]
        (berkeley / "images" / f"{stem}.jpg").write_bytes(image.read_bytes())
        (berkeley / "masks" / f"{stem}.png").write_bytes(
            (grabcut_root / "boundary_GT" / f"{stem}.bmp").read_bytes())
    monkeypatch.setenv("BERKELEY_PATH", str(berkeley))
    results = check_datasets(load_config(), ["DAVIS", "Berkeley"])
    davis, berk = results
    assert (davis.status, davis.count) == ("missing", None)
    assert davis.line().startswith("MISSING     DAVIS ")
    assert f"DAVIS_PATH resolves to '{missing}', which does not exist" in davis.line()
    assert "\n" not in davis.line()
    assert (berk.status, berk.count) == ("miscounted", 3)
    assert "3 instances (expected 100): -97" in berk.line()
    assert exit_code(results) == 1


def test_dataset_check_sbd_missing_split_file(tmp_path, monkeypatch):
    """The root exists but a file the loader needs does not: missing, naming key and file."""
    (tmp_path / "SBD").mkdir()
    monkeypatch.setenv("SBD_PATH", str(tmp_path / "SBD"))
    [result] = check_datasets(load_config(), ["SBD"])
    assert result.status == "missing"
    assert f"under SBD_PATH: SBD split file '{tmp_path / 'SBD' / 'val.txt'}' does not exist" \
        in result.line()


def test_dataset_names():
    assert parse_names("eval") == ["GrabCut", "Berkeley", "DAVIS", "SBD", "PascalVOC",
                                   "COCO_MVal"]
    assert parse_names("GrabCut, train,GrabCut") == ["GrabCut", "SBD_Train", "COCO_LVIS"]
    assert set(parse_names(",".join(DATASET_SPECS))) == set(DATASET_SPECS)
    with pytest.raises(KeyError, match="unknown dataset.*Nope; known: GrabCut"):
        check_datasets(load_config(), ["Nope"])


def _run(script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / script), *args], cwd=REPO_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)


def test_check_datasets_script_exit_status(grabcut_root, tmp_path):
    env = {"GRABCUT_PATH": str(grabcut_root), "DAVIS_PATH": str(tmp_path / "none")}
    ok = _run("scripts/check_datasets.py", "--datasets=GrabCut", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "OK          GrabCut            50 instances (expected 50)" in ok.stdout
    assert "1 of 1 checks passed" in ok.stdout
    bad = _run("scripts/check_datasets.py", "--datasets=GrabCut,DAVIS", env=env)
    assert bad.returncode == 1
    assert "1 of 2 checks passed; failed: DAVIS" in bad.stdout
    usage = _run("scripts/check_datasets.py", "--datasets=Nope", env=env)
    assert usage.returncode == 2 and "--datasets: unknown dataset(s) Nope" in usage.stderr


def test_unreleased_checkpoint_name_points_to_the_guide(tmp_path):
    """The paper's --checkpoint=iglr_b3_cclvs names weights nobody has released."""
    done = _run("scripts/evaluate_model.py", "NoBRS", "--checkpoint=iglr_b3_cclvs",
                "--datasets=GrabCut", f"--logs-path={tmp_path}",
                env={"INTERACTIVE_MODELS_PATH": str(tmp_path / "weights")})
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert "checkpoint 'iglr_b3_cclvs' not found" in message
    assert "No trained IGLR weights have been released" in message
    assert "docs/gpu.md" in message and GUIDE.is_file()
