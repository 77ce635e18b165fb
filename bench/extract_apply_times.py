"""Extraction, apply and LoRA-export costs through the real nodes on a Wan-2.1-1.3B-shaped model (random
weights, dim 1536, 30 blocks, fp32, CPU), next to the bare forward passes extraction needs.

    python bench/extract_apply_times.py [--dim 1536 --layers 30 --size 128]

Needs a ComfyUI checkout ($COMFYUI_PATH, default ~/ComfyUI). Prints one table; times are
ratios against the bare forwards measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.host import comfy_host  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--size", type=int, default=128, help="probe latent width = height in pixels")
    args = ap.parse_args()
    pack = comfy_host.import_host()
    import asyncio

    import comfy.sd

    from refusal_core.testbed.tiny_wan import TinyWan, init_random

    nodes = {c.GET_SCHEMA().node_id: c for c in asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())}
    bridge = comfy_host.pack_module("nodes.comfy_bridge")
    types = comfy_host.pack_module("refusal_core.types")
    prompts_mod = comfy_host.pack_module("refusal_core.prompts")
    save_atomic = comfy_host.pack_module("refusal_core.io").save_atomic
    lora_metadata = comfy_host.pack_module("refusal_core.lora").lora_metadata

    t0 = time.perf_counter()
    sd = init_random(TinyWan(dim=args.dim, ffn_dim=8960 if args.dim == 1536 else 4 * args.dim, heads=args.dim // 128, layers=args.layers), 0).state_dict()
    model_bytes = sum(v.numel() * v.element_size() for v in sd.values())
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    print(f"model: dim {args.dim}, {args.layers} blocks, {model_bytes / 2**30:.2f} GiB, built in {time.perf_counter() - t0:.1f} s")

    g = torch.Generator().manual_seed(0)
    pairs = prompts_mod.parse_pair_lines(prompts_mod.DEFAULT_PAIRS)
    neutral = prompts_mod.parse_neutral(prompts_mod.DEFAULT_NEUTRAL)
    texts = [t for p in pairs for t in (p.unsafe, p.safe)] + neutral
    encoded = {}
    for t in texts:  # 4096-wide stand-in conditioning, 12 tokens, ids so pairs align
        ids = tuple(hash(w) % 1000 for w in t.split())
        encoded[t] = types.EncodedPrompt(t, ids, [[torch.randn(1, len(ids), 4096, generator=g), {"pooled_output": None}]])
    pp = types.PromptPairs.from_texts(pairs, neutral, encoded.__getitem__)

    fwd = bridge.make_forward(model)
    latent = bridge.probe_latent(model, args.size, args.size, 1, 0)
    t0 = time.perf_counter()
    for t in texts:
        fwd(encoded[t].conditioning, latent, 0.9)
    bare = time.perf_counter() - t0

    rows = []
    for site, layers, n_sig in (("text_kv", "all", 1), ("ffn_in", "all", 1), ("ffn_in", "last2", 1)):
        t0 = time.perf_counter()
        rv = nodes["ExtractRefusalVector"].execute(model, pp, site, layers, "0.9", args.size, args.size, 1, 0).result[0]
        t_ex = time.perf_counter() - t0
        t0 = time.perf_counter()
        frv = nodes["LowRankFactorize"].execute(rv, "cpca", 100, 0.5).result[0]
        t_f = time.perf_counter() - t0
        t0 = time.perf_counter()
        edited = nodes["ApplyRefusalToModel"].execute(model, frv, 1.0).result[0]
        t_ap = time.perf_counter() - t0
        patch_bytes = sum(t.numel() * t.element_size() for ps in edited.patches.values() for p in ps for t in p[1].weights[:2])
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            lora = save_atomic(bridge.refusal_lora(model, frv, 1.0), Path(tmp) / "lora.safetensors", lora_metadata(frv, 1.0))
            t_lora, lora_bytes = time.perf_counter() - t0, lora.stat().st_size
        rows.append((site, layers, len(frv.directions()), t_ex, t_ex / bare, t_f, t_ap, patch_bytes / model_bytes, t_lora, lora_bytes, lora_bytes / model_bytes))
    print(f"bare forwards ({len(texts)} prompts, one sigma, {latent.shape[-1] * latent.shape[-2] // 4} video tokens): {bare:.2f} s")
    print(f"{'site':8} {'layers':6} {'keys':>5} {'extract s':>10} {'/bare':>6} {'factorize s':>12} {'apply s':>8} {'patch/model':>12} "
          f"{'LoRA s':>7} {'LoRA bytes':>11} {'LoRA/model':>11}")
    for site, layers, keys, t_ex, ratio, t_f, t_ap, pb, t_l, lb, lr in rows:
        print(f"{site:8} {layers:6} {keys:5d} {t_ex:10.2f} {ratio:6.2f} {t_f:12.3f} {t_ap:8.3f} {pb:12.2e} {t_l:7.2f} {lb:11d} {lr:11.2e}")


if __name__ == "__main__":
    main()
