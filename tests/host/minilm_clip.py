"""A CLIP-like text encoder that the pack has never seen: MiniLM token embeddings mapped to
Wan's 4096-wide text space, with the two methods ComfyUI's CLIPTextEncode calls."""
from __future__ import annotations

from refusal_core.testbed.text import minilm_text

SEED = 1234  # not the seed of the embedded default run


class MiniLMClip:
    def __init__(self, seed: int = SEED, width: int = 4096):
        self.text = minilm_text(seed, width)

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        return {"minilm": [[(i, 1.0) for i in self.text.tokenize(text)]]}

    def encode_from_tokens_scheduled(self, tokens: dict, unprojected: bool = False, add_dict: dict | None = None, show_pbar: bool = True) -> list:
        ids = [t[0] for batch in tokens["minilm"] for t in batch]
        return [[self.text.encode(ids), {"pooled_output": None, **(add_dict or {})}]]
