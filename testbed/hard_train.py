"""Train the harder testbed's Wan (256 wide, 8 blocks, 2 heads) on hard_world, with text dropout so
that classifier-free guidance works, deterministically; one checkpoint per training seed, cached.
Seed 0 is shipped (testbed/data/, fp16); the others train on first use (about 13 minutes each on 2 cores).

    python -m testbed.hard_train [--seed N] [--ship]

Flow matching as Wan is trained (see train.py); a tenth of the prompts, drawn per step, are replaced
by the empty prompt, as text-to-video models are trained for guidance.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from refusal_core.io import save_atomic
from .hard_world import WorldPrompt, clean_latent, sample_prompt
from .progress import Progress
from .text import minilm_text
from .tiny_wan import TinyWan, init_random
from .train import _ThroughMap, cache_dir

TEXT_PAD = 32  # zero-padded context length: every hard-world prompt fits (the longest has 27 tokens)


@dataclass(frozen=True)
class HardConfig:
    dim: int = 256
    heads: int = 2  # ComfyUI reads a Wan checkpoint's head count as dim // 128
    layers: int = 8
    prompts: int = 8000
    steps: int = 2400
    batch: int = 32
    lr: float = 1.5e-3
    dropout: float = 0.1
    seed: int = 0
    text_seed: int = 0

    def model(self) -> TinyWan:
        return TinyWan(dim=self.dim, ffn_dim=4 * self.dim, heads=self.heads, layers=self.layers)

    def key(self) -> str:
        return _key(self)


@lru_cache(maxsize=8)
def _key(cfg: HardConfig) -> str:
    """Changes with every setting, the training data (prompts and clean latents), the model's and the text
    encoder's source and the training loop; not with the scoring code, nor with comments elsewhere."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for p in training_prompts(cfg):
        h.update(p.text.encode())
        h.update(clean_latent(p).numpy().tobytes())
    here = Path(__file__).resolve().parent
    for name in ("tiny_wan.py", "text.py"):
        h.update((here / name).read_bytes())
    h.update(inspect.getsource(train).encode())
    return h.hexdigest()[:12]


SHIPPED = Path(__file__).resolve().parent / "data" / "hard_wan_seed0.safetensors"
# What `python -m testbed.hard_train --ship` wrote on the machine that shipped it; another machine's BLAS may
# round the training differently (the evaluation reads the shipped file, never a retrained one).
SHIPPED_SHA256 = "636ba9991baf2c378cbeff6959f40ef70a5f5f72f88b07d46d38f7118b3978e9"


def _file_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("key")


def checkpoint_path(cfg: HardConfig) -> Path:
    """The shipped model when cfg is the one it was trained with, else cfg's file in the cache."""
    return SHIPPED if _file_key(SHIPPED) == cfg.key() else cache_dir() / f"hard_wan_{cfg.key()}.safetensors"


def training_prompts(cfg: HardConfig) -> list[WorldPrompt]:
    rng = random.Random(f"hard-train/{cfg.seed}")
    seen: dict[str, WorldPrompt] = {}
    while len(seen) < cfg.prompts:
        p = sample_prompt(rng)
        seen.setdefault(p.text, p)
    return list(seen.values())


def encode_hidden(texts: list[str], text_seed: int = 0, batch: int = 128) -> torch.Tensor:
    """MiniLM token states, zero-padded to TEXT_PAD [N, TEXT_PAD, 384]."""
    text = minilm_text(text_seed)
    out = [text.hidden([text.tokenize(t) for t in texts[i : i + batch]], TEXT_PAD) for i in range(0, len(texts), batch)]
    return torch.cat(out)


def contexts(texts: list[str], text_seed: int = 0) -> torch.Tensor:
    """[N, TEXT_PAD, 4096] conditioning as the model was trained on ("" is the empty prompt of guidance)."""
    return encode_hidden(texts, text_seed) @ minilm_text(text_seed).proj


def train(cfg: HardConfig, log=print, step_done: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """The trained state dict (ComfyUI WanModel key names), rounded to fp16 as it is stored."""
    torch.manual_seed(cfg.seed)
    prompts = training_prompts(cfg)
    t0 = time.perf_counter()
    H = encode_hidden([p.text for p in prompts], cfg.text_seed)
    empty = encode_hidden([""], cfg.text_seed)[0]
    X0 = torch.stack([clean_latent(p) for p in prompts])
    log(f"encoded {len(prompts)} hard-world prompts in {time.perf_counter() - t0:.0f} s")
    model = init_random(cfg.model(), cfg.seed).train()
    first = model.text_embedding[0]
    model.text_embedding[0] = _ThroughMap(first, minilm_text(cfg.text_seed).proj)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(prompts), (cfg.batch,), generator=g)
        x0, h = X0[idx], H[idx].clone()
        h[torch.rand(cfg.batch, generator=g) < cfg.dropout] = empty
        eps = torch.randn(x0.shape, generator=g)
        sigma = torch.sigmoid(torch.randn(cfg.batch, generator=g))
        s = sigma.view(-1, 1, 1, 1, 1)
        v = model((1 - s) * x0 + s * eps, sigma * 1000.0, h)
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step_done is not None:
            step_done(1)
        if step % 250 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s")
    model.text_embedding[0] = first
    return {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}


def load_or_train(cfg: HardConfig = HardConfig(), log=print,
                  progress: Callable[[int, str], Callable[[int], None]] | None = None) -> TinyWan:
    """The model of cfg's seed: shipped, cached, or trained now and cached (progress(total, what) -> advance)."""
    path = checkpoint_path(cfg)
    if not path.exists():
        log(f"training the hard testbed model, seed {cfg.seed} (first use; cached at {path})")
        sd = train(cfg, log, progress(cfg.steps, f"training seed {cfg.seed}") if progress else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(sd, path, {"testbed": json.dumps(asdict(cfg)), "key": cfg.key()})
    model = cfg.model()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def ship(cfg: HardConfig = HardConfig(), log=print, progress=None) -> Path:
    """Copy seed 0's checkpoint (cached or trained now) to testbed/data/."""
    load_or_train(cfg, log=log, progress=progress)
    src = checkpoint_path(cfg)
    if src != SHIPPED:
        SHIPPED.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(load_file(str(src)), SHIPPED, {"testbed": json.dumps(asdict(cfg)), "key": cfg.key()})
    return SHIPPED


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=HardConfig.steps)
    ap.add_argument("--ship", action="store_true", help="write seed 0's model to testbed/data/")
    args = ap.parse_args(argv)
    cfg = HardConfig(seed=args.seed, steps=args.steps)
    shown = Progress()
    if args.ship:
        path = ship(cfg, log=shown.say, progress=shown.bar)
        print(path, sha256(path))
        return 0
    load_or_train(cfg, log=shown.say, progress=shown.bar)
    print(checkpoint_path(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
