"""The method end to end on a small Wan-architecture model with real text semantics.

    python -m refusal_core.testbed.run [--out DIR] [--dim 256 --layers 6]

Extracts a nudity refusal vector from 5 bundled pairs, factorizes it with every method,
applies it at both Wan edit sites, and prints leakage and collateral (METHOD.md) on
held-out prompts next to a random-direction control of the same rank; writes the
spectrum plot. Random weights: see README "What these numbers can and cannot show".
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..edit import edited_state_dict, residual
from ..extract import extract_refusal_vector
from ..factorize import factorize
from ..metrics import collateral, leakage
from ..plot import spectrum_image
from ..sites import FAMILIES, parse_layers
from ..types import EncodedPrompt, PromptPairs, RefusalVector
from .prompts import EXTRACTION_NEUTRAL, EXTRACTION_PAIRS, HELD_OUT_NEUTRAL, HELD_OUT_PAIRS
from .text import minilm_text
from .tiny_wan import TinyWan, init_random

SIGMAS = (0.9, 0.6, 0.3)
CONFIGS = (("text_kv", "all"), ("ffn_in", "all"), ("ffn_in", "last2"))
METHODS = (("mean_diff", 0.0), ("pca", 0.0), ("cpca", 0.5), ("cpca", 2.0))


def encode_all(texts, text_encoder) -> dict[str, EncodedPrompt]:
    out = {}
    for t in dict.fromkeys(texts):
        ids = text_encoder.tokenize(t)
        out[t] = EncodedPrompt(t, tuple(ids), text_encoder.encode(ids))
    return out


def make_forward(model: TinyWan):
    def forward(cond: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return model(sigma * noise, torch.tensor([sigma * 1000.0]), cond)

    return forward


def outputs(model: TinyWan, encoded: dict[str, EncodedPrompt], texts, latent: torch.Tensor) -> dict[str, torch.Tensor]:
    fwd = make_forward(model)
    return {t: torch.cat([fwd(encoded[t].conditioning, latent, s).flatten() for s in SIGMAS]) for t in dict.fromkeys(texts)}


def random_control(rv: RefusalVector, seed: int) -> RefusalVector:
    """The same layers and rank with random unit directions: what any rank-1 edit does."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for layer in rv.layers:
        d = torch.randn(layer.dim, generator=g)
        layers.append(replace(layer, direction=d / d.norm()))
    return rv.with_layers(tuple(layers), method="random")


def evaluate(base: TinyWan, rv: RefusalVector, encoded, latent, before) -> dict[str, float]:
    edited = copy.deepcopy(base)
    sd = edited_state_dict(base.state_dict(), rv.directions(), 1.0)
    edited.load_state_dict(sd)
    held = [t for p in HELD_OUT_PAIRS for t in (p.unsafe, p.safe)] + HELD_OUT_NEUTRAL
    after = outputs(edited, encoded, held, latent)
    res = max(residual(sd[f"{k}.weight"], base.state_dict()[f"{k}.weight"], d) for k, d in rv.directions().items())
    return {
        "leakage": leakage(
            [(before[p.unsafe], before[p.safe]) for p in HELD_OUT_PAIRS], [(after[p.unsafe], after[p.safe]) for p in HELD_OUT_PAIRS]
        ),
        "collateral": collateral([before[n] for n in HELD_OUT_NEUTRAL], [after[n] for n in HELD_OUT_NEUTRAL]),
        "max_residual": res,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="testbed_out", help="folder for the spectrum plot and results.json")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    text = minilm_text(args.seed)
    model = init_random(TinyWan(dim=args.dim, ffn_dim=4 * args.dim, heads=max(1, args.dim // 128), layers=args.layers), args.seed).eval()
    train_texts = [t for p in EXTRACTION_PAIRS for t in (p.unsafe, p.safe)] + EXTRACTION_NEUTRAL
    held_texts = [t for p in HELD_OUT_PAIRS for t in (p.unsafe, p.safe)] + HELD_OUT_NEUTRAL
    encoded = encode_all(train_texts + held_texts, text)
    prompts = PromptPairs.from_texts(EXTRACTION_PAIRS, EXTRACTION_NEUTRAL, encoded.__getitem__)
    probe = torch.randn(1, 16, 1, 16, 16, generator=torch.Generator().manual_seed(args.seed))
    held_latent = torch.randn(1, 16, 1, 16, 16, generator=torch.Generator().manual_seed(args.seed + 1))
    before = outputs(model, encoded, held_texts, held_latent)

    rows, results = [], []
    for site_name, layers in CONFIGS:
        site = FAMILIES["wan"][site_name]
        blocks = parse_layers(layers, list(range(args.layers)))
        t0 = time.perf_counter()
        rv = extract_refusal_vector(model, make_forward(model), prompts, site, blocks, probe, SIGMAS, "wan", seed=args.seed)
        t_extract = time.perf_counter() - t0
        for method, alpha in METHODS:
            t0 = time.perf_counter()
            frv = factorize(rv, method=method, k=100, alpha=alpha)
            t_fact = time.perf_counter() - t0
            m = evaluate(model, frv, encoded, held_latent, before)
            rows.append((site_name, layers, f"{method}" + (f" a={alpha:g}" if method == "cpca" else ""), m))
            results.append({"site": site_name, "layers": layers, "method": method, "alpha": alpha,
                            "extract_s": t_extract, "factorize_s": t_fact, **m})
            if site_name == "text_kv" and method == "cpca" and alpha == 0.5:
                plot = spectrum_image(frv)
                _write_png(out / "spectrum.png", plot)
        ctrl = evaluate(model, random_control(rv, args.seed + 7), encoded, held_latent, before)
        rows.append((site_name, layers, "random (control)", ctrl))
        results.append({"site": site_name, "layers": layers, "method": "random", **ctrl})

    print(f"\nheld-out leakage (1 = untouched, 0 = erased) and collateral; {len(HELD_OUT_PAIRS)} pairs, "
          f"{len(HELD_OUT_NEUTRAL)} neutral prompts; TinyWan dim {args.dim}, {args.layers} blocks, random weights\n")
    print(f"{'site':8} {'layers':6} {'method':18} {'leakage':>8} {'collateral':>10} {'max ||W′d||/||W||':>18}")
    for site_name, layers, method, m in rows:
        print(f"{site_name:8} {layers:6} {method:18} {m['leakage']:8.3f} {m['collateral']:10.3f} {m['max_residual']:18.2e}")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out / 'spectrum.png'} and {out / 'results.json'}")
    return 0


def _write_png(path: Path, image) -> None:
    from PIL import Image

    Image.fromarray((image * 255).round().astype("uint8")).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
