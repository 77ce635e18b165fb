"""An output folder written all at once: files go to a temporary sibling folder that is renamed into
place when complete, so a failed run leaves no partial files (and no half-replaced old results)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np


class OutputFolderError(ValueError):
    """A --out the command cannot write to: the message says what to change."""


def check_out_dir(out: Path, force: bool = False) -> None:
    """Refuse early (before any work) a file, or a non-empty folder without force."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out '{out}' is a file: give a folder (it is created)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputFolderError(
            f"--out '{out}' is not empty: choose another folder or pass --force to replace its contents"
        )


def png_bytes(image: np.ndarray) -> bytes:
    """[H, W, 3] floats in [0, 1] as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_out_dir(out: Path, files: dict[str, bytes], force: bool = False) -> list[Path]:
    """Write {name: content} as the folder `out` (replacing its contents only with force); returns the paths."""
    out = Path(out)
    check_out_dir(out, force)
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise OutputFolderError(f"output file name '{name}' must be a plain file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old: Path | None = None
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        if out.is_dir():
            if any(out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rmdir(old)
                os.rename(out, old)
            else:
                os.rmdir(out)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old is not None:
                os.rename(old, out)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return [out / name for name in files]
