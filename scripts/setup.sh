#!/usr/bin/env bash
# Build .venv with everything the course needs: torch first (a CPU build when there is
# no NVIDIA GPU, never a multi-GB CUDA one), then peftlab and the pinned stack of
# constraints.txt. Re-running is a no-op while pyproject.toml and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3.12 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
  done
fi
echo "peftlab setup: creating .venv with $($PY --version)"
rm -rf .venv
"$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
torch_version=$(grep '^torch==' constraints.txt | cut -d= -f3)

if [ "$(uname -s)" = Darwin ]; then
  "${pip[@]}" "torch==$torch_version"                     # macOS wheels are CPU/MPS builds
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${pip[@]}" "torch==$torch_version"                     # a GPU: PyPI's CUDA build
else
  # No GPU: the +cpu build, from a local wheel cache if pip has one, else PyTorch's CPU index.
  "${pip[@]}" "torch==$torch_version+cpu" 2>/dev/null \
    || "${pip[@]}" "torch==$torch_version+cpu" --index-url https://download.pytorch.org/whl/cpu
fi
"${pip[@]}" -e ".[test,classroom]" -c constraints.txt
.venv/bin/python -m pip check
touch "$stamp"
echo "peftlab setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
