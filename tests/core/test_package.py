"""The package imports without ComfyUI and the core never imports the host."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_core_never_imports_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|folder_paths|server|nodes)\b", re.M)
    offenders = [p.name for p in (ROOT / "refusal_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_pack_imports_cleanly_without_comfyui():
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('pack', r'{ROOT / '__init__.py'}', submodule_search_locations=[r'{ROOT}']); "
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m); "
        "assert callable(m.comfy_entrypoint); assert 'comfy' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
