"""A CLIP-like text encoder that the pack has never seen: MiniLM token embeddings mapped to
Wan's 4096-wide text space, with the two methods ComfyUI's CLIPTextEncode calls."""

from __future__ import annotations

from testbed.text import minilm_text

SEED = 1234  # not the seed of the embedded default run
PAD = 0


class MiniLMClip:
    """width: the text width the model reads; pooled_width: a pooled vector too (HunyuanVideo's CLIP-L
    pooled output), the mean of the first pooled_width channels; pad_to: pad ids in the tokens and zero rows in the
    context up to that length, as ComfyUI's umt5 pads Wan's text. An attention mask comes with every
    conditioning, as ComfyUI's T5 encoders give one (LTX-Video and Mochi need it)."""

    def __init__(self, seed: int = SEED, width: int = 4096, pooled_width: int | None = None, pad_to: int | None = None):
        self.text = minilm_text(seed, width)
        self.pooled_width, self.pad_to = pooled_width, pad_to

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        ids = self.text.tokenize(text)
        # as umt5's tokenizer: pad ids (0, MiniLM's [PAD]) after the end token up to the padded length
        return {"minilm": [[(i, 1.0) for i in ids + [PAD] * max(0, (self.pad_to or 0) - len(ids))]]}

    def encode_from_tokens_scheduled(
        self, tokens: dict, unprojected: bool = False, add_dict: dict | None = None, show_pbar: bool = True
    ) -> list:
        import torch

        ids = [t[0] for batch in tokens["minilm"] for t in batch if t[0] != PAD]
        cond = self.text.encode(ids, self.pad_to)
        pooled = cond.mean(1)[:, : self.pooled_width] if self.pooled_width else None
        mask = torch.zeros(1, cond.shape[1], dtype=torch.long)
        mask[:, : len(ids)] = 1
        return [[cond, {"pooled_output": pooled, "attention_mask": mask, **(add_dict or {})}]]
