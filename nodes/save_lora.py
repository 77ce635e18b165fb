"""SaveRefusalAsLoRA: share an erasure as a standard LoRA file that the stock loader applies exactly."""

from __future__ import annotations

import logging
from pathlib import Path

from comfy_api.latest import io, ui

from ..refusal_core import save_atomic
from ..refusal_core.weights import check_strength
from . import widgets
from .host import patch, paths
from .sockets import CATEGORY, RefusalEditSocket, need_edit

log = logging.getLogger(__name__)


class SaveRefusalAsLoRA(io.ComfyNode):
    """Exports the edit as a standard LoRA file in models/loras: W (I - strength s d d^T) = W + up @ down per layer
    (s the edit's own strength).
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
                io.Model.Input(
                    "model",
                    tooltip="The model the LoRA is for (its weights give up = -W d); LoRAs applied before are included.",
                ),
                RefusalEditSocket.Input(
                    "refusal_vector", tooltip="Factorized (or combined) refusal vector of this model."
                ),
                widgets.strength(
                    tooltip="lambda baked into the LoRA, times the edit's own strength (1 applies the edit as made); "
                    "load the LoRA at strength 1."
                ),
                io.String.Input(
                    "filename_prefix",
                    default="refusal/concept",
                    tooltip="Name under models/loras; a counter and .safetensors are appended.",
                ),
                io.String.Input(
                    "concept",
                    default="",
                    optional=True,
                    tooltip="Name of the erased concept, written into the file's metadata.",
                ),
            ],
            outputs=[],
        )

    @classmethod
    def validate_inputs(cls, filename_prefix: str | None = None) -> bool | str:
        return widgets.first_problem((paths.check_prefix, filename_prefix))

    @classmethod
    def execute(cls, model, refusal_vector, strength: float, filename_prefix: str, concept: str = "") -> io.NodeOutput:
        edit = need_edit(refusal_vector)
        check_strength(strength)
        tensors = patch.refusal_lora(model, edit, strength)
        path = save_atomic(tensors, paths.new_lora_path(filename_prefix), edit.lora_metadata(strength, concept))
        rank = max(int(t.shape[0]) for k, t in tensors.items() if k.endswith("lora_down.weight"))
        log.info("refusal LoRA: %s, %d layers, rank %d", path.name, len(edit.bases()), rank)
        shown = (Path(filename_prefix).parent / path.name).as_posix()
        return io.NodeOutput(ui=ui.PreviewText(f"saved loras/{shown} ({len(edit.bases())} layers, rank {rank})"))
