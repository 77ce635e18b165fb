#!/usr/bin/env bash
# Provision a headless ComfyUI host for this pack's host tests.
#
#   scripts/provision_comfyui.sh            clone upstream ComfyUI at the pinned commit
#   scripts/provision_comfyui.sh PATH       use a local checkout (copied to the destination,
#                                           or used in place when PATH is the destination)
#   scripts/provision_comfyui.sh URL        clone that git URL at the pinned commit
#
# Destination: $COMFYUI_PATH (default ~/ComfyUI), where the tests look.
# Environment: COMFYUI_COMMIT (pinned commit), TORCH_SPEC (torch + torchvision pair to install
# when none imports), TORCH_INDEX_URL (e.g. PyTorch's CPU wheel index, for CPU-only wheels).
set -euo pipefail

UPSTREAM="https://github.com/comfyanonymous/ComfyUI.git"
COMMIT="${COMFYUI_COMMIT:-a125cd84b054a57729b5eecab930ca9408719832}"  # ComfyUI 0.3.64, the version DESIGN.md checked
DEST="${COMFYUI_PATH:-$HOME/ComfyUI}"
SOURCE="${1:-$UPSTREAM}"
PY="${PYTHON:-python3}"
# ComfyUI's requirements name torch/torchvision/torchaudio unpinned: pip would pull a multi-GB CUDA
# build. A matched pair is installed instead; it runs on the CPU with --cpu.
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

say() { printf '[provision] %s\n' "$*"; }

if [ -d "$SOURCE" ] && [ "$(cd "$SOURCE" && pwd -P)" = "$(mkdir -p "$DEST" && cd "$DEST" && pwd -P)" ]; then
  say "using the checkout in place: $DEST"
elif [ -f "$DEST/main.py" ]; then
  say "a checkout already exists at $DEST: kept as it is (remove it to provision anew)"
elif [ -d "$SOURCE" ]; then
  say "copying local checkout $SOURCE -> $DEST (its work tree as it is)"
  rmdir "$DEST" 2>/dev/null || true
  cp -a "$SOURCE" "$DEST"
else
  say "cloning $SOURCE at $COMMIT -> $DEST"
  rmdir "$DEST" 2>/dev/null || true
  git clone --quiet "$SOURCE" "$DEST"
  git -C "$DEST" checkout --quiet "$COMMIT"
fi
[ -f "$DEST/main.py" ] || { say "no main.py in $DEST: not a ComfyUI checkout"; exit 1; }

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') with torchvision already importable"
else
  say "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} $TORCH_SPEC
fi

say "installing ComfyUI's requirements (without torch/torchvision/torchaudio) and requests"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$DEST/requirements.txt" > "${TMPDIR:-/tmp}/comfy-req.txt"
"$PY" -m pip install -q -r "${TMPDIR:-/tmp}/comfy-req.txt" requests

# The server exits without its frontend package; the tests then pass --front-end-root themselves.
"$PY" -c "import comfyui_frontend_package" 2>/dev/null || say "comfyui-frontend-package missing: tests start the server with an empty --front-end-root"

"$PY" - "$DEST" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import comfy.cli_args
comfy.cli_args.args.cpu = True
import comfy.sd, comfy.model_management, nodes  # noqa: F401
print(f"[provision] ComfyUI at {sys.argv[1]} imports on {comfy.model_management.get_torch_device()}")
PYEOF
