import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import machine  # noqa: E402
from tests.host import comfy_host  # noqa: E402


def pytest_collection_modifyitems(config, items):
    reason = comfy_host.missing_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"host test skipped: {reason}")
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    reason = comfy_host.missing_reason()
    return [machine.describe(), f"ComfyUI host: {comfy_host.comfy_path()}" + (f" -- NOT USABLE: {reason}" if reason else " (host tests run)")]


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    host = lambda key: sum(1 for r in stats.get(key, []) if "host" in getattr(r, "keywords", {}))
    terminalreporter.write_line(machine.describe())
    terminalreporter.write_line(
        f"host tests: {host('passed')} passed, {host('failed')} failed, {host('skipped')} skipped"
    )
