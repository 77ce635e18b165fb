#!/usr/bin/env bash
# Provision a headless ComfyUI host (with ComfyUI-GGUF) for this pack's host tests.
#
#   scripts/provision_comfyui.sh            the host snapshot beside the project when there is one
#                                           ($HOST_SNAPSHOTS, default ../shared/hosts from the repo),
#                                           else upstream ComfyUI cloned at the pinned commit
#   scripts/provision_comfyui.sh PATH       a local ComfyUI checkout (copied to the destination,
#                                           or used in place when PATH is the destination)
#   scripts/provision_comfyui.sh URL        that git URL cloned at the pinned commit
#
# Destination: $COMFYUI_PATH (default ~/ComfyUI), where the tests look. A checkout already there is
# kept. Sources are copied, never edited. ComfyUI-GGUF goes into its custom_nodes (from the snapshot
# folder, else cloned at its pinned commit), with the `gguf` package it needs.
# Environment: COMFYUI_COMMIT, GGUF_COMMIT (pinned commits), TORCH_SPEC (torch + torchvision pair to
# install when none imports), TORCH_INDEX_URL (e.g. PyTorch's CPU wheel index, for CPU-only wheels).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
UPSTREAM="https://github.com/comfyanonymous/ComfyUI.git"
COMMIT="${COMFYUI_COMMIT:-a125cd84b054a57729b5eecab930ca9408719832}"  # ComfyUI 0.3.64, the version DESIGN.md checked
GGUF_UPSTREAM="https://github.com/city96/ComfyUI-GGUF.git"
GGUF_COMMIT="${GGUF_COMMIT:-795e451}"
SNAPSHOTS="${HOST_SNAPSHOTS:-$REPO/../shared/hosts}"
DEST="${COMFYUI_PATH:-$HOME/ComfyUI}"
if [ $# -ge 1 ]; then SOURCE="$1"
elif [ -f "$SNAPSHOTS/ComfyUI/main.py" ]; then SOURCE="$SNAPSHOTS/ComfyUI"
else SOURCE="$UPSTREAM"; fi
PY="${PYTHON:-python3}"
# ComfyUI's requirements name torch/torchvision/torchaudio unpinned: pip would pull a multi-GB CUDA
# build. A matched pair is installed instead; it runs on the CPU with --cpu.
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

say() { printf '[provision] %s\n' "$*"; }

# copy_or_clone SOURCE DEST URL COMMIT: a local folder is copied (its work tree as it is), else cloned.
copy_or_clone() {
  local src="$1" dst="$2" url="$3" commit="$4"
  mkdir -p "$(dirname "$dst")"
  rmdir "$dst" 2>/dev/null || true
  if [ -d "$src" ]; then
    say "copying $src -> $dst"
    cp -a "$src" "$dst"
  else
    say "cloning $url at $commit -> $dst"
    git clone --quiet "$url" "$dst"
    git -C "$dst" checkout --quiet "$commit"
  fi
}

if [ -d "$SOURCE" ] && [ "$(cd "$SOURCE" && pwd -P)" = "$(mkdir -p "$DEST" && cd "$DEST" && pwd -P)" ]; then
  say "using the checkout in place: $DEST"
elif [ -f "$DEST/main.py" ]; then
  say "a checkout already exists at $DEST: kept as it is (remove it to provision anew)"
else
  copy_or_clone "$SOURCE" "$DEST" "$SOURCE" "$COMMIT"
fi
[ -f "$DEST/main.py" ] || { say "no main.py in $DEST: not a ComfyUI checkout"; exit 1; }

GGUF_DEST="$DEST/custom_nodes/ComfyUI-GGUF"
if [ -f "$GGUF_DEST/nodes.py" ]; then
  say "ComfyUI-GGUF already in $GGUF_DEST: kept"
else
  copy_or_clone "$SNAPSHOTS/ComfyUI-GGUF" "$GGUF_DEST" "$GGUF_UPSTREAM" "$GGUF_COMMIT"
fi

if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') with torchvision already importable"
else
  say "installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} $TORCH_SPEC
fi

say "installing ComfyUI's requirements (without torch/torchvision/torchaudio), requests, and gguf for ComfyUI-GGUF"
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~;#].*)?$' "$DEST/requirements.txt" > "${TMPDIR:-/tmp}/comfy-req.txt"
"$PY" -m pip install -q -r "${TMPDIR:-/tmp}/comfy-req.txt" requests "gguf>=0.13.0"

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
