"""ApplyRefusalToModel: MODEL + REFUSAL_VECTOR -> a cloned MODEL with W (I - lambda d d^T) as patches."""
from __future__ import annotations

import logging
import time

from comfy_api.latest import io

from ..refusal_core.edit import check_strength
from . import comfy_bridge as bridge
from .sockets import CATEGORY, RefusalVectorSocket

log = logging.getLogger(__name__)


class ApplyRefusalToModel(io.ComfyNode):
    """Folds the refusal direction into the weights, W' = W (I - strength d d^T), as rank-1 patches on a copy
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
                RefusalVectorSocket.Input(
                    "refusal_vector", tooltip="Factorized directions (an unfactorized vector uses d = r / |r|, i.e. mean_diff)."
                ),
                io.Float.Input(
                    "strength",
                    default=1.0,
                    min=0.0,
                    max=4.0,
                    step=0.05,
                    tooltip="lambda: 1 removes the direction exactly (paper); 0 gives back the original model; above 1 over-suppresses.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="A copy of the model with the concept erased at the edited layers.")],
        )

    @classmethod
    def execute(cls, model, refusal_vector, strength: float) -> io.NodeOutput:
        check_strength(strength)
        t0 = time.perf_counter()
        edited = bridge.apply_refusal(model, refusal_vector, strength)
        log.info("refusal edit: %d layers patched in %.3f s", len(refusal_vector.directions()), time.perf_counter() - t0)
        return io.NodeOutput(edited)
