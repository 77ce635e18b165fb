"""SaveRefusalVector / LoadRefusalVector: .safetensors files in models/refusal_vectors."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..refusal_core.io import load_refusal_vector, save_refusal_vector
from . import comfy_bridge as bridge
from .sockets import CATEGORY, RefusalVectorSocket


class SaveRefusalVector(io.ComfyNode):
    """Saves a refusal vector (directions, differences, metadata) as .safetensors in models/refusal_vectors."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveRefusalVector",
            display_name="Save Refusal Vector",
            category=CATEGORY,
            description=cls.__doc__,
            is_output_node=True,
            inputs=[
                RefusalVectorSocket.Input("refusal_vector", tooltip="The vector to save."),
                io.String.Input(
                    "filename_prefix",
                    default="refusal/concept",
                    tooltip="Name under models/refusal_vectors; a counter and .safetensors are appended. Letters, digits, - _ and /.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, refusal_vector, filename_prefix: str) -> io.NodeOutput:
        path = save_refusal_vector(refusal_vector, bridge.new_vector_path(filename_prefix))
        return io.NodeOutput(ui=ui.PreviewText(f"saved {path.name}"))


class LoadRefusalVector(io.ComfyNode):
    """Loads a refusal vector saved by Save Refusal Vector from models/refusal_vectors."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LoadRefusalVector",
            display_name="Load Refusal Vector",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Combo.Input("vector_name", options=bridge.vector_files(), tooltip="A .safetensors file in models/refusal_vectors."),
            ],
            outputs=[RefusalVectorSocket.Output(display_name="refusal_vector", tooltip="The loaded vector.")],
        )

    @classmethod
    def execute(cls, vector_name: str) -> io.NodeOutput:
        return io.NodeOutput(load_refusal_vector(bridge.vector_path(vector_name)))
