"""ApplyRefusalToModel: MODEL + REFUSAL_VECTOR -> a cloned MODEL with W (I - lambda d d^T) as patches."""

from __future__ import annotations

import logging
import time

from comfy_api.latest import io

from ..refusal_core.weights import check_strength
from . import widgets
from .host import patch
from .sockets import CATEGORY, RefusalEditSocket, need_edit

log = logging.getLogger(__name__)


class ApplyRefusalToModel(io.ComfyNode):
    """Folds the refusal direction into the weights, W' = W (I - strength s d d^T) with s the edit's own strength
    (1 for the paper's edit, more for one kept off the ordinary text), as rank-1 patches on a copy
    of the model: the concept can no longer be read at the edited layers. The input model is not modified."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ApplyRefusalToModel",
            display_name="Apply Refusal To Model",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                io.Model.Input("model", tooltip="The model to edit; it stays as it is, the output is an edited copy."),
                RefusalEditSocket.Input(
                    "refusal_vector",
                    tooltip="The edit: from Low-Rank Factorize, Combine Refusal Vectors or Load Refusal Vector.",
                ),
                widgets.strength(),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model with the concept erased at the edited layers.")],
        )

    @classmethod
    def execute(cls, model, refusal_vector, strength: float) -> io.NodeOutput:
        edit = need_edit(refusal_vector)
        check_strength(strength)
        t0 = time.perf_counter()
        edited = patch.apply_refusal(model, edit, strength)
        log.info("refusal edit: %d layers patched in %.3f s", len(edit.bases()), time.perf_counter() - t0)
        return io.NodeOutput(edited)
