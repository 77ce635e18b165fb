"""Screenshots an example workflow as the real ComfyUI frontend draws it, with this pack loaded.

Starts a headless ComfyUI (CPU) in a throwaway base directory with this repository linked in as a
custom node, opens its frontend in headless Chromium, loads the workflow and saves a PNG.

    python scripts/screenshot_workflow.py \
        --workflow "example_workflows/erase a concept from Wan 2.1.json" --out docs/images/workflow_wan21.png
    python scripts/screenshot_workflow.py --thumbnails   # example_workflows/<template>.jpg, what the template browser shows

Needs: a ComfyUI checkout with its requirements and comfyui-frontend-package, Debian's `chromium`
(apt-get install chromium) and Python playwright (pip install playwright; no `playwright install`,
the system Chromium is used).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACK = "refusal_pack"  # the import name the tests use too
# Seeded into the temp user dir so first-run tours, the template browser and the missing-model
# dialog (the example's model files are not present here) do not cover the canvas.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,  # the FPS/node-count overlay is debugging noise in a picture
    "Comfy.LinkRenderMode": 2,  # splines: easier to follow in a still image than straight links
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(comfy: Path, base: Path, port: int, timeout: float) -> subprocess.Popen:
    for sub in ("custom_nodes", "input", "output", "user/default"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK).symlink_to(REPO, target_is_directory=True)
    (base / "user/default/comfy.settings.json").write_text(json.dumps(SETTINGS))
    with (base / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-auto-launch",
                "--base-directory",
                str(base),
            ],
            cwd=comfy,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"ComfyUI exited with {proc.returncode}:\n{(base / 'server.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/system_stats", timeout=5).close()
                return proc
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise SystemExit(f"ComfyUI did not answer in {timeout:.0f} s:\n{(base / 'server.log').read_text()[-3000:]}")
    except BaseException:  # also Ctrl-C: never leave a server behind on the port
        proc.kill()
        raise


def check_pack_loaded(port: int, workflow: dict) -> None:
    """Fail loudly instead of screenshotting red 'missing node' boxes when the pack did not import."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=60) as r:
        known = set(json.loads(r.read()))
    missing = sorted({n["type"] for n in workflow["nodes"]} - known)
    if missing:
        raise SystemExit(f"node types unknown to the server (did the pack fail to import?): {missing}")


def find_chromium() -> str:
    """Checked before the server starts, so a missing browser fails in a second rather than a minute."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise SystemExit("Python playwright is missing: pip install playwright (the system Chromium is used)") from None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium (Debian) or chromium-browser (Ubuntu)")
    return chromium


def screenshot(
    url: str,
    chromium: str,
    workflow: dict,
    name: str,
    out: Path,
    width: int,
    height: int,
    scale: float,
    zoom: float | None,
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium)
        page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=scale)
        page.goto(url, wait_until="networkidle", timeout=120_000)
        page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=120_000)
        # Passing a name makes the tab read like the file rather than "Unsaved Workflow (2)".
        page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, true, name)", [workflow, name])
        # Loading always opens a new tab; drop the start-up default one so the tab bar shows only
        # ours (the store's close skips the "save changes?" prompt the UI command would raise).
        page.evaluate("""async () => {
            const store = window.app.extensionManager.workflow;
            for (const w of [...store.openWorkflows]) if (w !== store.activeWorkflow) await store.closeWorkflow(w);
        }""")
        page.keyboard.press("Escape")  # anything that still opened (toasts, dialogs)
        # Our own fit rather than the frontend's command, so it keeps clear of the floating toolbar,
        # includes node title bars (a node's pos is the top of its body) and --zoom can override it.
        page.evaluate(
            """zoom => {
            const c = window.app.canvas;
            const nodes = window.app.graph._nodes;
            let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
            for (const n of nodes) {
                x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
                x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
            }
            for (const g of window.app.graph._groups || []) {
                const [gx, gy, gw, gh] = g._bounding || g.bounding;
                x0 = Math.min(x0, gx); y0 = Math.min(y0, gy); x1 = Math.max(x1, gx + gw); y1 = Math.max(y1, gy + gh);
            }
            // Keep clear of the floating canvas toolbar at the bottom right (~50 CSS px).
            const pad = 20, w = c.canvas.width / devicePixelRatio, h = c.canvas.height / devicePixelRatio - 50;
            const s = zoom ?? Math.min(w / (x1 - x0 + 2 * pad), h / (y1 - y0 + 2 * pad));
            c.ds.scale = s;
            c.ds.offset = [w / 2 / s - (x0 + x1) / 2, h / 2 / s - (y0 + y1) / 2];
            c.setDirty(true, true);
        }""",
            zoom,
        )
        page.wait_for_timeout(1500)  # let the canvas redraw and the DOM widgets (text areas) settle
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".jpg", ".jpeg"):
            save_thumbnail(page.screenshot(type="png"), out)
        else:
            page.screenshot(path=str(out))
        browser.close()


THUMBNAIL = (640, 400)


def save_thumbnail(png: bytes, out: Path) -> None:
    """A JPEG of THUMBNAIL's size (the template browser's card), the screenshot scaled to fit."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.thumbnail(THUMBNAIL, Image.LANCZOS)
    card = Image.new("RGB", THUMBNAIL, (32, 32, 32))
    card.paste(image, ((THUMBNAIL[0] - image.width) // 2, (THUMBNAIL[1] - image.height) // 2))
    card.save(out, "JPEG", quality=85, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_PATH", Path.home() / "ComfyUI")))
    ap.add_argument("--workflow", type=Path, default=REPO / "example_workflows" / "erase a concept from Wan 2.1.json")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "workflow_wan21.png")
    ap.add_argument("--port", type=int, default=0, help="0: pick a free one")
    ap.add_argument("--size", default="1920x1350", help="viewport WIDTHxHEIGHT in CSS pixels")
    ap.add_argument("--scale", type=float, default=1.0, help="device scale factor (2 doubles the PNG size)")
    ap.add_argument("--zoom", type=float, default=None, help="canvas zoom; default fits the whole graph")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for ComfyUI to start")
    ap.add_argument(
        "--thumbnails", action="store_true", help="every template's thumbnail, example_workflows/<name>.jpg"
    )
    args = ap.parse_args()
    comfy = args.comfyui.expanduser()
    if not (comfy / "main.py").is_file():
        raise SystemExit(f"no ComfyUI checkout at {comfy} (pass --comfyui or set COMFYUI_PATH)")
    chromium = find_chromium()
    if args.thumbnails:
        jobs = [(path, path.with_suffix(".jpg")) for path in sorted((REPO / "example_workflows").glob("*.json"))]
        args.size = "1600x1000"
    else:
        jobs = [(args.workflow, args.out)]
    width, height = (int(v) for v in args.size.lower().split("x"))
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="comfy_shot_") as tmp:
        proc = start_server(comfy, Path(tmp), port, args.timeout)
        try:
            for path, out in jobs:
                workflow = json.loads(path.read_text())
                check_pack_loaded(port, workflow)
                screenshot(
                    f"http://127.0.0.1:{port}/",
                    chromium,
                    workflow,
                    path.stem,
                    out,
                    width,
                    height,
                    args.scale,
                    args.zoom,
                )
                print(f"wrote {out}")
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
