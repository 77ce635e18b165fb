"""The pack's custom socket types, declared once."""
from comfy_api.latest import io

PromptPairsSocket = io.Custom("PROMPT_PAIRS")
RefusalVectorSocket = io.Custom("REFUSAL_VECTOR")
CATEGORY = "unlearning"
