"""The pack's custom socket types, declared once: the frontend only joins an output to an input of its type."""

from comfy_api.latest import io

from ..refusal_core.edit import RefusalEdit
from ..refusal_core.types import RefusalError

PromptPairsSocket = io.Custom("PROMPT_PAIRS")
# What extraction measured (per layer D, E, r): Low-Rank Factorize's input.
RefusalStatsSocket = io.Custom("REFUSAL_STATS")
# The edit (per layer an orthonormal basis and strengths): what Apply, Save, LoRA export, Combine and the
# probe take. It keeps the first release's type name, so the edit wires of saved workflows stay valid.
RefusalEditSocket = io.Custom("REFUSAL_VECTOR")
CATEGORY = "unlearning"


def need_edit(value: RefusalEdit | None) -> RefusalEdit:
    """The edit an input received; None comes from Load Refusal Vector for a file that holds statistics only."""
    if value is None:
        raise RefusalError(
            "no refusal vector: the loaded file holds statistics only (an unfactorized vector): "
            "connect Load Refusal Vector's statistics output to Low-Rank Factorize, then use its output here"
        )
    return value
