"""SaveRefusalAsLoRA and CombineRefusalVectors: share an erasure as a standard LoRA, erase several concepts."""
from __future__ import annotations

import logging
from pathlib import Path

from comfy_api.latest import io, ui

from ..refusal_core.combine import combine
from ..refusal_core.io import save_atomic
from ..refusal_core.lora import lora_metadata
from ..refusal_core.edit import check_strength
from . import comfy_bridge as bridge
from .sockets import CATEGORY, RefusalVectorSocket

log = logging.getLogger(__name__)


class SaveRefusalAsLoRA(io.ComfyNode):
    """Exports the edit as a standard LoRA file in models/loras: W (I - strength d d^T) = W + up @ down per layer.
    Anyone can load it with the stock LoraLoaderModelOnly (strength 1), without this pack."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SaveRefusalAsLoRA",
            display_name="Save Refusal As LoRA",
            category=CATEGORY,
            description=cls.__doc__,
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model the LoRA is for (its weights give up = -W d); LoRAs applied before are included."),
                RefusalVectorSocket.Input("refusal_vector", tooltip="Factorized (or combined) refusal vector of this model."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.05, tooltip="lambda baked into the LoRA; load it at strength 1."),
                io.String.Input("filename_prefix", default="refusal/concept", tooltip="Name under models/loras; a counter and .safetensors are appended."),
                io.String.Input("concept", default="", optional=True, tooltip="Name of the erased concept, written into the file's metadata."),
            ],
            outputs=[],
        )

    @classmethod
    def execute(cls, model, refusal_vector, strength: float, filename_prefix: str, concept: str = "") -> io.NodeOutput:
        check_strength(strength)
        tensors = bridge.refusal_lora(model, refusal_vector, strength)
        path = save_atomic(tensors, bridge.new_lora_path(filename_prefix), lora_metadata(refusal_vector, strength, concept))
        rank = max(int(t.shape[0]) for k, t in tensors.items() if k.endswith("lora_down.weight"))
        log.info("refusal LoRA: %s, %d layers, rank %d", path.name, len(refusal_vector.bases()), rank)
        shown = (Path(filename_prefix).parent / path.name).as_posix()
        return io.NodeOutput(ui=ui.PreviewText(f"saved loras/{shown} ({len(refusal_vector.bases())} layers, rank {rank})"))


class CombineRefusalVectors(io.ComfyNode):
    """Erases several concepts at once: stacks the refusal directions of each layer and removes the whole subspace,
    W (I - Q diag(s) Q^T), each concept with its own strength (0 leaves it out entirely)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        def pair(tag: str, optional: bool) -> list:
            return [
                RefusalVectorSocket.Input(f"refusal_vector_{tag}", optional=optional, tooltip=f"Concept {tag.upper()}: a factorized refusal vector."),
                io.Float.Input(f"strength_{tag}", default=1.0, min=0.0, max=4.0, step=0.05, optional=optional,
                               tooltip=f"Strength of concept {tag.upper()} (1 removes it exactly, 0 leaves it out)."),
            ]

        return io.Schema(
            node_id="CombineRefusalVectors",
            display_name="Combine Refusal Vectors",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=pair("a", False) + pair("b", False) + pair("c", True) + pair("d", True),
            outputs=[RefusalVectorSocket.Output(display_name="refusal_vector", tooltip="All concepts; apply or export it like one vector.")],
        )

    @classmethod
    def execute(cls, refusal_vector_a, strength_a: float, refusal_vector_b, strength_b: float, refusal_vector_c=None, strength_c: float = 1.0,
                refusal_vector_d=None, strength_d: float = 1.0) -> io.NodeOutput:
        given = [(refusal_vector_a, strength_a), (refusal_vector_b, strength_b), (refusal_vector_c, strength_c), (refusal_vector_d, strength_d)]
        return io.NodeOutput(combine([(rv, s) for rv, s in given if rv is not None]))
