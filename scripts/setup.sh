#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv, install requirements.txt and the
# project itself (editable).
# Idempotent: a second run only checks that everything is installed. A torch already present in
# .venv (e.g. a CUDA build a GPU user installed first) is kept; otherwise the pinned CPU wheel
# of requirements.txt is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha1sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    if .venv/bin/python -c "import torch" >/dev/null 2>&1; then
        grep -v -E '^torch([=<>! ]|$)' requirements.txt > .venv/requirements-notorch.txt
        .venv/bin/python -m pip install --quiet -r .venv/requirements-notorch.txt
    else
        .venv/bin/python -m pip install --quiet -r requirements.txt
    fi
    echo "$want" > "$stamp"
fi
# The project itself, in editable mode (pyproject.toml): scripts and tests import `isegm` from this
# checkout without any sys.path edits. Reinstalled only when .venv points at another checkout.
repo=$(pwd -P)
installed=$(cd / && "$repo/.venv/bin/python" -c \
    'import isegm, pathlib; print(pathlib.Path(isegm.__file__).resolve().parents[1])' 2>/dev/null || true)
if [ "$installed" != "$repo" ]; then
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
fi
# Debian's Chromium and its driver (the same version) for the browser tests of the annotation
# tool (tests/test_demo_browser.py): installed only when missing and only where apt-get exists.
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } \
        && command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        as_root=(none)
    fi
    if [ "${as_root[*]}" = none ]; then
        echo "setup.sh: chromium/chromium-driver missing and neither root nor sudo available;" \
             "the browser tests will be skipped (install them: apt-get install chromium" \
             "chromium-driver)" >&2
    else
        "${as_root[@]}" apt-get update
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
            chromium chromium-driver
    fi
fi
