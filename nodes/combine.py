"""CombineRefusalVectors: erase several concepts at once, each at its own strength."""

from __future__ import annotations

from comfy_api.latest import io

from ..refusal_core import defaults
from ..refusal_core.edit import RefusalEdit
from . import widgets
from .sockets import CATEGORY, RefusalEditSocket, need_edit


class CombineRefusalVectors(io.ComfyNode):
    """Erases several concepts at once: stacks the refusal directions of each layer and removes the whole subspace,
    W (I - Q diag(s) Q^T), each concept with its own strength (0 leaves it out entirely)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        def pair(tag: str, optional: bool) -> list:
            return [
                RefusalEditSocket.Input(
                    f"refusal_vector_{tag}",
                    optional=optional,
                    tooltip=f"Concept {tag.upper()}: a factorized refusal vector.",
                ),
                widgets.strength(
                    f"strength_{tag}",
                    f"Strength of concept {tag.upper()} (1 removes it exactly, 0 leaves it out).",
                    optional,
                ),
            ]

        return io.Schema(
            node_id="CombineRefusalVectors",
            display_name="Combine Refusal Vectors",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=pair("a", False) + pair("b", False) + pair("c", True) + pair("d", True),
            outputs=[
                RefusalEditSocket.Output(
                    display_name="refusal_vector", tooltip="All concepts; apply or export it like one vector."
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        refusal_vector_a,
        strength_a: float,
        refusal_vector_b,
        strength_b: float,
        refusal_vector_c=None,
        strength_c: float = defaults.STRENGTH,
        refusal_vector_d=None,
        strength_d: float = defaults.STRENGTH,
    ) -> io.NodeOutput:
        given = [
            (refusal_vector_a, strength_a),
            (refusal_vector_b, strength_b),
            (refusal_vector_c, strength_c),
            (refusal_vector_d, strength_d),
        ]
        required = [(need_edit(e), s) for e, s in given[:2]]
        return io.NodeOutput(RefusalEdit.combine(required + [(e, s) for e, s in given[2:] if e is not None]))
