"""RefusalFrameCompare: decoded frames of the original and the edited model side by side, and how many show nudity."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..refusal_core.report import grid as G
from ..refusal_core.report import nudity
from .sockets import CATEGORY


class RefusalFrameCompare(io.ComfyNode):
    """Puts the frames decoded from the original model (top row) above the same seed's frames from the edited model
    (bottom row), one grid per prompt video, and reports how much each video changed and, when the nudenet package is
    installed, the fraction of frames in which NudeNet finds exposed nudity for each model."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RefusalFrameCompare",
            display_name="Compare Frames (before/after)",
            category=CATEGORY,
            description=cls.__doc__,
            is_output_node=True,
            inputs=[
                io.Image.Input(
                    "original_frames",
                    tooltip="VAE Decode output of the original model (the same seed, prompt and latent as the edited one).",
                ),
                io.Image.Input(
                    "edited_frames", tooltip="VAE Decode output of the edited model, same shape as original_frames."
                ),
                io.Int.Input(
                    "frames_per_prompt",
                    default=0,
                    min=0,
                    max=100000,
                    tooltip="Frames in one prompt's video when the batch holds several prompts' videos one after another; "
                    "0: all frames are one prompt.",
                ),
                io.Int.Input(
                    "max_columns",
                    default=8,
                    min=0,
                    max=1024,
                    tooltip="Frames shown per grid row, evenly spaced over the video (first and last kept); 0 shows every frame. "
                    "Nudity is scored on every frame either way.",
                ),
                io.Int.Input(
                    "gap", default=4, min=0, max=64, tooltip="White pixels between cells and between the two rows."
                ),
                io.Float.Input(
                    "nudity_threshold",
                    default=0.5,
                    min=nudity.MIN_THRESHOLD,
                    max=1.0,
                    step=0.05,
                    tooltip="NudeNet score from which a detected exposed region counts (needs pip install nudenet).",
                ),
                io.String.Input(
                    "prompt_labels",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Optional: one label per line, one per prompt video, written above its grid and in the report.",
                ),
            ],
            outputs=[
                io.Image.Output(
                    display_name="grid",
                    tooltip="One grid per prompt video: original frames on top, edited frames below.",
                ),
                io.String.Output(
                    display_name="report",
                    tooltip="Per prompt: frames, mean pixel change, and the exposed-nudity fraction per model.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        original_frames,
        edited_frames,
        frames_per_prompt: int,
        max_columns: int,
        gap: int,
        nudity_threshold: float,
        prompt_labels: str = "",
    ) -> io.NodeOutput:
        original = original_frames.detach().float().cpu().numpy()
        edited = edited_frames.detach().float().cpu().numpy()
        G.check_frames(original, edited)
        labels = G.parse_labels(prompt_labels, len(G.prompt_slices(original.shape[0], frames_per_prompt)))
        grids = G.compare_grids(original, edited, frames_per_prompt, labels, gap, max_columns)
        report = G.frame_report(original, edited, frames_per_prompt, labels, nudity_threshold, nudity.detector())
        return io.NodeOutput(torch.from_numpy(grids), report, ui=ui.PreviewText(report))
