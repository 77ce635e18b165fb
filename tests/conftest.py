import os

import pytest

from tests import machine
from tests.host import comfy_host

# CI sets this: there a host test that does not run is a failure, not a skip.
REQUIRE_HOST = os.environ.get("REFUSAL_REQUIRE_HOST") == "1"


def pytest_collection_modifyitems(config, items):
    reason = comfy_host.missing_reason()
    if reason is None:
        return
    if REQUIRE_HOST:
        raise pytest.UsageError(f"REFUSAL_REQUIRE_HOST=1 but the host tests cannot run: {reason}")
    skip = pytest.mark.skip(reason=f"host test skipped: {reason}")
    for item in items:
        if "host" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_HOST and report.skipped and "host" in item.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"host test skipped, which CI does not allow (REFUSAL_REQUIRE_HOST=1): {reason}"


def pytest_report_header(config):
    reason = comfy_host.missing_reason()
    return [
        machine.describe(),
        f"ComfyUI host: {comfy_host.comfy_path()}" + (f" -- NOT USABLE: {reason}" if reason else " (host tests run)"),
    ]


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats

    def host(*keys: str) -> int:
        return sum(1 for key in keys for r in stats.get(key, []) if "host" in getattr(r, "keywords", {}))

    terminalreporter.write_line(machine.describe())
    terminalreporter.write_line(
        f"host tests: {host('passed')} passed, {host('failed', 'error')} failed, {host('skipped')} skipped"
    )


@pytest.fixture(autouse=True)
def _checkpoints_apart(tmp_path_factory, monkeypatch):
    """Runs in tests keep their finished parts apart: they never resume, nor overwrite, a real run's
    (testbed/checkpoint.py)."""
    from testbed import checkpoint

    monkeypatch.setattr(checkpoint, "FOLDER", tmp_path_factory.mktemp("checkpoints"))
