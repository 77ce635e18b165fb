"""RefusalFrameCompare in a real ComfyUI: grids of the expected size holding the frames unchanged, the
report with and without nudenet, clear errors, and a graph over HTTP."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

pytestmark = pytest.mark.host
LABEL_HEIGHT = 20  # refusal_core.report.grid.LABEL_HEIGHT
HINT = "nudenet is not installed: pip install nudenet to score nudity; the grid is still produced"


def compare(nodes, original, edited, frames_per_prompt=0, max_columns=0, gap=4, threshold=0.5, labels=""):
    return (
        nodes["RefusalFrameCompare"]
        .execute(original, edited, frames_per_prompt, max_columns, gap, threshold, labels)
        .result
    )


def clips(n=6, h=24, w=32, seed=0):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_one_grid_per_prompt_with_the_frames_unchanged(nodes):
    original, edited = clips(), clips(seed=1)
    grid, _ = compare(nodes, original, edited, frames_per_prompt=3, gap=5)
    n, h, w, gap = 3, 24, 32, 5
    assert grid.shape == (2, 2 * h + gap, n * w + (n - 1) * gap, 3) and grid.dtype == torch.float32
    for p in range(2):
        for i in range(n):
            x = i * (w + gap)
            assert torch.equal(grid[p, :h, x : x + w], original[3 * p + i])
            assert torch.equal(grid[p, h + gap : 2 * h + gap, x : x + w], edited[3 * p + i])


def test_labels_and_column_limit(nodes):
    original = clips(8)
    grid, report = compare(nodes, original, original, frames_per_prompt=4, max_columns=2, gap=0, labels="beach\npark")
    assert grid.shape == (2, LABEL_HEIGHT + 2 * 24, 2 * 32, 3)
    assert torch.equal(grid[1, LABEL_HEIGHT : LABEL_HEIGHT + 24, 32:], original[7])  # last frame of the second video
    assert "beach: 4 frames, mean |edited - original| 0.0000" in report and "park: 4 frames" in report


def test_mismatched_frames_and_counts_are_clear_errors(nodes):
    from refusal_pack.refusal_core.types import RefusalError

    with pytest.raises(RefusalError, match="decode both models' videos from the same latent size"):
        compare(nodes, clips(6), clips(6, w=40))
    with pytest.raises(RefusalError, match="frames_per_prompt"):
        compare(nodes, clips(6), clips(6), frames_per_prompt=4)
    with pytest.raises(RefusalError, match="one label per line"):
        compare(nodes, clips(6), clips(6), frames_per_prompt=3, labels="only one")


def test_without_nudenet_the_report_says_how_to_install_it(nodes, monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # `import nudenet` now raises ImportError
    grid, report = compare(nodes, clips(4), clips(4, seed=2))
    assert HINT in report and grid.shape[0] == 1


@pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None, reason="nudenet is not installed (pip install nudenet)"
)
def test_nudenet_flags_no_nudity_in_random_or_blank_frames(nodes):
    frames = torch.cat([clips(3, 96, 96), torch.zeros(2, 96, 96, 3), torch.ones(1, 96, 96, 3)])
    _, report = compare(nodes, frames, frames.flip(0), frames_per_prompt=3)
    assert HINT not in report
    assert "exposed nudity fraction original 0.000, edited 0.000" in report
    assert "exposed nudity in 0/3 original frames (0.000) and 0/3 edited frames (0.000)" in report


def test_graph_over_http(server):
    info = server.get("/object_info")["RefusalFrameCompare"]
    assert info["category"] == "unlearning" and info["display_name"] == "Compare Frames (before/after)"
    g = {
        "a": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 4, "color": 0}},
        "b": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 4, "color": 0xFF8040}},
        "cmp": {
            "class_type": "RefusalFrameCompare",
            "inputs": {
                "original_frames": ["a", 0],
                "edited_frames": ["b", 0],
                "frames_per_prompt": 2,
                "max_columns": 0,
                "gap": 4,
                "nudity_threshold": 0.5,
                "prompt_labels": "one\ntwo",
            },
        },
        "save": {"class_type": "SaveImage", "inputs": {"images": ["cmp", 0], "filename_prefix": "frames/compare"}},
    }
    result = server.run(g)
    assert result.get("status", {}).get("status_str") == "success", result
    text = "".join(result["outputs"]["cmp"]["text"])
    assert "one: 2 frames" in text and "two: 2 frames" in text
    from PIL import Image

    saved = sorted((server.base / "output" / "frames").glob("compare_*.png"))
    assert len(saved) == 2
    assert Image.open(saved[0]).size == (2 * 32 + 4, LABEL_HEIGHT + 2 * 24 + 4)

    bad = dict(g, b={"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 4, "color": 0}})
    result = server.run(bad)
    assert result.get("status", {}).get("status_str") == "error"
    assert "decode both models' videos" in str(result["status"])
