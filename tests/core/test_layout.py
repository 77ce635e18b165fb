"""The shape of the house, enforced: the core never imports ComfyUI or the testbed, only nodes/host touches
ComfyUI internals, and no code puts the repository on sys.path (the library is installed)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# ComfyUI's top-level modules: importing any of them is touching the host.
COMFY = {
    "comfy",
    "comfy_extras",
    "comfy_api",
    "comfy_api_nodes",
    "comfy_execution",
    "comfy_config",
    "node_helpers",
    "folder_paths",
    "nodes",
    "server",
    "execution",
    "latent_preview",
    "comfyui_version",
    "app",
    "utils",
}
# The only places that change sys.path: each puts a ComfyUI checkout on it, never this repository.
SYS_PATH_ALLOWED = {("tests/host/comfy_host.py", "import_host"), ("scripts/evaluate.py", "import_host")}


def python_files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py") if "data" not in p.relative_to(ROOT).parts)


def imports(path: Path) -> list[tuple[str, int, int]]:
    """(module, level, line) of every import in a file (level > 0: relative)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level, node.lineno))
    return out


def resolved(path: Path, module: str, level: int) -> str:
    """The absolute module an import names, the repository's root being the pack (as ComfyUI loads it)."""
    if level == 0:
        return module
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    base = parts[: len(parts) - level]
    return ".".join(["<pack>", *base, *([module] if module else [])])


def test_the_core_imports_neither_comfyui_nor_the_testbed_nor_the_nodes():
    offenders = []
    for path in python_files("refusal_core"):
        for module, level, line in imports(path):
            name = resolved(path, module, level)
            top = name.split(".")[0]
            inside = name.startswith("<pack>.refusal_core") or top == "refusal_core"
            if top in COMFY or top == "testbed" or (name.startswith("<pack>") and not inside):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


def test_only_the_host_package_touches_comfyui_internals():
    """nodes/ outside nodes/host uses only the public V3 API (comfy_api.latest)."""
    offenders = []
    for path in python_files("nodes"):
        if "host" in path.relative_to(ROOT / "nodes").parts:
            continue
        for module, level, line in imports(path):
            top = module.split(".")[0] if level == 0 else ""
            if top in COMFY and not module.startswith("comfy_api.latest"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert offenders == []


def test_the_testbed_imports_the_library_like_any_user():
    """testbed/ is a dev package beside the library: absolute imports of refusal_core, never the pack's nodes or ComfyUI."""
    offenders = []
    for path in python_files("testbed"):
        for module, level, line in imports(path):
            top = module.split(".")[0] if level == 0 else ""
            if top in COMFY or (level > 1):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {'.' * level}{module}")
    assert offenders == []


def test_no_code_puts_the_repository_on_sys_path():
    offenders = []
    for path in python_files("refusal_core", "testbed", "nodes", "tests", "bench", "scripts"):
        tree = ast.parse(path.read_text(), str(path))
        functions = {
            id(n): f.name
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            target = (
                node.func if isinstance(node, ast.Call) else node.target if isinstance(node, ast.AugAssign) else None
            )
            text = ast.unparse(target) if target is not None else ""
            if text.startswith("sys.path"):
                where = (path.relative_to(ROOT).as_posix(), functions.get(id(node), "<module>"))
                if where not in SYS_PATH_ALLOWED:
                    offenders.append(f"{where[0]}:{node.lineno} ({where[1]}) changes sys.path")
    assert offenders == []


def test_family_knowledge_and_defaults_have_one_home():
    """Family names, markers, ComfyUI class names and the default sigmas are written in one file each."""
    needles = {
        '"head.modulation"': "refusal_core/families.py",
        '"WAN21"': "refusal_core/families.py",
        '"text_embedding.0"': "refusal_core/families.py",
        '"0.9,0.6,0.3"': None,
        "(0.9, 0.6, 0.3)": "refusal_core/defaults.py",
    }
    for needle, home in needles.items():
        found = [
            p.relative_to(ROOT).as_posix()
            for p in python_files("refusal_core", "testbed", "nodes", "scripts", "bench")
            if needle in p.read_text()
        ]
        assert found == ([home] if home else []), (needle, found)
