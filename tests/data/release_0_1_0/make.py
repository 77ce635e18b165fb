# Run from the root of a checkout of commit b2605d0 (release 0.1.0): PYTHONPATH=. python make.py OUT_DIR
"""Files written by release 0.1.0's own code (refusal_core at b2605d0): a factorized vector, an
unfactorized one and a combined one for a tiny Wan, plus the weights its LoRA export produced."""

import sys

import torch
from safetensors.torch import save_file

from refusal_core.combine import combine
from refusal_core.extract import extract_refusal_vector
from refusal_core.factorize import factorize
from refusal_core.io import save_refusal_vector
from refusal_core.lora import lora_state_dict
from refusal_core.sites import FAMILIES
from refusal_core.types import EncodedPrompt, PromptPair, PromptPairs
from testbed.tiny_wan import TinyWan, init_random

out = sys.argv[1]
VOCAB = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
CONCEPT = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3


def encode(text):
    words = text.split()
    ids = tuple(sum(map(ord, w)) % 64 for w in words if w != "nude")
    cond = VOCAB[list(ids)].clone() + (CONCEPT if "nude" in words else 0)
    return EncodedPrompt(text, ids, cond[None])


PAIRS = [
    ("a nude man walks", "a man walks"),
    ("nude people swim", "people swim"),
    ("the nude woman sits", "the woman sits"),
]
NEUTRAL = ["a red fox", "a blue lake", "green trees sway"]
pp = PromptPairs.from_texts([PromptPair(u, s) for u, s in PAIRS], NEUTRAL, encode)
model = init_random(TinyWan(dim=64, ffn_dim=128, heads=1, layers=2), 0).eval()


def fwd(c, n, s):
    with torch.no_grad():
        return model(s * n, torch.tensor([s * 1000]), c)


latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
W = FAMILIES["wan"]
raw = extract_refusal_vector(model, fwd, pp, W["cross_out"], [0, 1], latent, [0.9, 0.3], "wan")
f1 = factorize(raw, "cpca", 100, 0.5)
raw2 = extract_refusal_vector(model, fwd, pp, W["text_kv"], [0, 1], latent, [0.9], "wan")
f2 = factorize(raw2, "mean_diff", 100, 0.5)
f3 = factorize(
    extract_refusal_vector(model, fwd, pp, W["cross_out"], [0, 1], latent, [0.6], "wan", seed=5), "pca", 100, 0.0
)
comb = combine([(f1, 1.0), (f3, 0.5)])
save_refusal_vector(raw, f"{out}/unfactorized.safetensors")
save_refusal_vector(f1, f"{out}/cpca_cross_out.safetensors")
save_refusal_vector(f2, f"{out}/mean_diff_text_kv.safetensors")
save_refusal_vector(comb, f"{out}/combined.safetensors")
sd = model.state_dict()
save_file({k: v.contiguous() for k, v in sd.items() if ".cross_attn." in k}, f"{out}/tiny_wan_cross_attn.safetensors")
exp = {}
for name, rv in (("cpca_cross_out", f1), ("mean_diff_text_kv", f2), ("combined", comb)):
    t = lora_state_dict(lambda n: sd[f"{n}.weight"], rv, 1.0)
    for k, v in t.items():
        exp[f"{name}/{k}"] = v.contiguous()
save_file(exp, f"{out}/lora_factors.safetensors")
print("ok")
