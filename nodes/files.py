"""SaveRefusalVector / LoadRefusalVector: .safetensors files in models/refusal_vectors."""

from __future__ import annotations

import os

from comfy_api.latest import io, ui

from ..refusal_core.edit import load_refusal_file
from . import widgets
from .host import paths
from .sockets import CATEGORY, RefusalEditSocket, RefusalStatsSocket, need_edit


class SaveRefusalVector(io.ComfyNode):
    """Saves a refusal vector (the edit: directions, strengths, metadata) as .safetensors in models/refusal_vectors;
    with include_statistics, also the statistics it was factorized from, so it can be factorized again later."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveRefusalVector",
            display_name="Save Refusal Vector",
            category=CATEGORY,
            description=cls.__doc__,
            is_output_node=True,
            inputs=[
                RefusalEditSocket.Input("refusal_vector", tooltip="The edit to save."),
                io.String.Input(
                    "filename_prefix",
                    default="refusal/concept",
                    tooltip="Name under models/refusal_vectors; a counter and .safetensors are appended. Letters, digits, - _ and /.",
                ),
                io.Boolean.Input(
                    "include_statistics",
                    default=False,
                    optional=True,
                    tooltip="Also write the statistics (per layer up to d x d numbers: tens of MB for a large model), "
                    "so that Low-Rank Factorize can run again on the loaded file.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        return widgets.first_problem((paths.check_prefix, filename_prefix))

    @classmethod
    def execute(cls, refusal_vector, filename_prefix: str, include_statistics: bool = False) -> io.NodeOutput:
        path = need_edit(refusal_vector).save(paths.new_vector_path(filename_prefix), include_statistics)
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name} ({path.stat().st_size / 1e6:.2f} MB)"))


class LoadRefusalVector(io.ComfyNode):
    """Loads a refusal vector saved by Save Refusal Vector (or by the first release) from models/refusal_vectors:
    its edit, and its statistics when the file holds them."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadRefusalVector",
            display_name="Load Refusal Vector",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Combo.Input(
                    "vector_name",
                    options=paths.vector_files(),
                    tooltip="A .safetensors file in models/refusal_vectors.",
                ),
            ],
            outputs=[
                RefusalEditSocket.Output(
                    display_name="refusal_vector",
                    tooltip="The edit, for Apply Refusal To Model and the other edit inputs.",
                ),
                RefusalStatsSocket.Output(
                    display_name="statistics",
                    tooltip="The statistics, when the file holds them: for Low-Rank Factorize with other settings.",
                ),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, vector_name: str = "", **_) -> str:
        try:
            st = os.stat(paths.vector_path(vector_name))
        except (ValueError, OSError):
            return f"missing:{vector_name}"
        return f"{st.st_mtime_ns}:{st.st_size}"

    @classmethod
    def execute(cls, vector_name: str) -> io.NodeOutput:
        edit, stats = load_refusal_file(paths.vector_path(vector_name))
        return io.NodeOutput(edit, stats)
