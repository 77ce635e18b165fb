"""Before/after grids, nudity flags with a stand-in detector, and the all-or-nothing output folder (no ComfyUI)."""

from __future__ import annotations

import numpy as np
import pytest

from refusal_core.report import grid as G
from refusal_core.report import nudity
from refusal_core.types import RefusalError
from scripts.outdir import OutputFolderError, write_out_dir


def frames(n=6, h=10, w=14, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3), dtype=np.float32)


def test_grid_cells_hold_the_frames_unchanged():
    o, e = frames(), frames(seed=1)
    grids = G.compare_grids(o, e, frames_per_prompt=3, gap=2)
    assert grids.shape == (2, 2 * 10 + 2, 3 * 14 + 2 * 2, 3)
    for j in range(2):
        for i in range(3):
            x = i * (14 + 2)
            assert np.array_equal(grids[j, :10, x : x + 14], o[3 * j + i])
            assert np.array_equal(grids[j, 12:22, x : x + 14], e[3 * j + i])
    assert (grids[:, 10:12] == 1.0).all() and (grids[:, :, 14:16] == 1.0).all()


def test_labels_add_a_caption_strip_and_columns_are_spread():
    o = frames(9)
    grids = G.compare_grids(o, o, labels=["a prompt"], gap=0, max_columns=3)
    assert grids.shape == (1, G.LABEL_HEIGHT + 20, 3 * 14, 3)
    assert np.array_equal(grids[0, G.LABEL_HEIGHT : G.LABEL_HEIGHT + 10, 14:28], o[4])
    assert G.pick_columns(81, 8)[0] == 0 and G.pick_columns(81, 8)[-1] == 80 and len(G.pick_columns(81, 8)) == 8
    assert G.pick_columns(5, 0) == [0, 1, 2, 3, 4]


def test_user_mistakes_are_refusal_errors():
    with pytest.raises(RefusalError, match="decode both models"):
        G.compare_grids(frames(6), frames(5))
    with pytest.raises(RefusalError, match="do not split"):
        G.compare_grids(frames(6), frames(6), frames_per_prompt=4)
    with pytest.raises(RefusalError, match="one label per line"):
        G.parse_labels("a\nb\nc", 2)
    with pytest.raises(RefusalError, match="threshold"):
        G.frame_report(frames(), frames(), threshold=0.1)


def test_nudity_flags_count_exposed_classes_above_threshold_only():
    seen = []

    def detect(images):
        seen.extend(images)
        return [
            [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.7}],
            [{"class": "BELLY_EXPOSED", "score": 0.99}],
            [{"class": "BUTTOCKS_EXPOSED", "score": 0.4}],
            [],
        ]

    rgb = np.zeros((4, 2, 2, 3), np.float32)
    rgb[..., 0] = 1.0  # red
    assert nudity.flagged(rgb, detect, 0.5) == [True, False, False, False]
    assert seen[0].dtype == np.uint8 and tuple(seen[0][0, 0]) == (0, 0, 255)  # BGR, as cv2.imread gives NudeNet
    report = G.frame_report(rgb, rgb, 2, ["first", "second"], 0.5, detect)
    assert "first: 2 frames" in report and "exposed nudity fraction original 0.250, edited 0.250" in report


def test_report_without_a_detector_says_how_to_get_one():
    report = G.frame_report(frames(), frames(seed=2), 0, (), 0.5, None)
    assert nudity.INSTALL_HINT in report and "prompt 1: 6 frames" in report


def test_out_dir_is_written_whole_or_not_at_all(tmp_path):
    out = tmp_path / "eval"
    write_out_dir(out, {"a.txt": b"1", "b.txt": b"2"})
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(OutputFolderError, match="not empty"):
        write_out_dir(out, {"c.txt": b"3"})
    with pytest.raises(OutputFolderError, match="plain file name"):
        write_out_dir(out, {"../c.txt": b"3"}, force=True)
    write_out_dir(out, {"c.txt": b"3"}, force=True)
    assert [p.name for p in out.iterdir()] == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # no temporary folders left

    with pytest.raises(TypeError):
        write_out_dir(tmp_path / "other", {"a.txt": b"1", "b.txt": 3})  # fails midway: nothing is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]
