"""Pure-torch core of the low-rank refusal vector method (arXiv 2506.07891).

Nothing in this package imports ComfyUI: it works on torch modules, tensors and callables, so it runs and
is tested anywhere torch runs. The method in four calls:

    stats = extract_refusal_stats(model, forward, prompts, latent, ExtractSettings(...))   # steps 1-2
    edit = factorize(stats)                        # step 3: a RefusalEdit (rank-1 d per layer, or a map)
    edit.edited_state_dict(model.state_dict())     # step 4: W (I - lambda d d^T); or edit.to_lora(...)
    edit.save("nudity.safetensors"); RefusalEdit.load(...); RefusalEdit.combine([(a, 1.0), (b, 1.0)])
"""

__version__ = "0.4.0"

from .edit import RefusalEdit, load_refusal_file
from .extract import ExtractSettings, extract_refusal_stats
from .factorize import SOLVERS, factorize
from .io import save_atomic
from .prompts import parse_sigmas
from .types import EncodedPrompt, LayerEdit, LayerStats, PromptPair, PromptPairs, RefusalError, RefusalStats

__all__ = [
    "EncodedPrompt",
    "ExtractSettings",
    "LayerEdit",
    "LayerStats",
    "PromptPair",
    "PromptPairs",
    "RefusalEdit",
    "RefusalError",
    "RefusalStats",
    "SOLVERS",
    "extract_refusal_stats",
    "factorize",
    "load_refusal_file",
    "parse_sigmas",
    "save_atomic",
]
