"""Train a world's small Wan on its prompts, deterministically; one checkpoint per world and training seed.

    python -m testbed.train [--world hard] [--seed N] [--ship]

Flow matching as Wan is trained: x_sigma = (1 - sigma) x0 + sigma eps, target v = eps - x0, timestep
1000 sigma, sigma logit-normal. The text is MiniLM mapped to 4096 wide and zero-padded, as ComfyUI pads Wan's
umt5 context; where the world is sampled with guidance, a share of the prompts (drawn per step) is replaced by
the empty prompt, as text-to-video models are trained for it. Seed 0 of each world is shipped (testbed/data/,
fp16); other seeds train on first use into the cache (the hard world: about 13 minutes each on 2 cores).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from refusal_core.io import save_atomic
from . import text, tiny_wan, world, worlds
from .progress import Progress
from .text import minilm_text
from .tiny_wan import TinyWan, init_random
from .world import World, WorldPrompt
from .worlds import WORLDS


@dataclass(frozen=True)
class TrainConfig:
    world: str = "hard"
    dim: int = 256
    heads: int = 2  # ComfyUI reads a Wan checkpoint's head count as dim // 128: the same model in both
    layers: int = 8
    prompts: int = 8000
    steps: int = 4000
    batch: int = 32
    lr: float = 1.5e-3
    dropout: float = 0.1  # share of prompts replaced by the empty prompt (guidance)
    seed: int = 0
    text_seed: int = 0

    @property
    def spec(self) -> World:
        return WORLDS[self.world]

    def model(self) -> TinyWan:
        return TinyWan(dim=self.dim, ffn_dim=4 * self.dim, heads=self.heads, layers=self.layers)

    def key(self) -> str:
        return _key(self)


# Each world's released configuration: its shipped model is training seed 0 of it.
CONFIGS = {"first": TrainConfig(world="first", dim=128, heads=1, layers=6, prompts=2400, steps=1500, lr=2e-3, dropout=0.0),
           "hard": TrainConfig()}


def config(world_name: str, seed: int = 0) -> TrainConfig:
    return replace(CONFIGS[world_name], seed=seed)


@lru_cache(maxsize=16)
def _key(cfg: TrainConfig) -> str:
    """Changes with every setting, the training prompts, and the source of what builds the training data (the world
    machinery and the worlds' data), the model, the text encoder and the training loop; not with the scoring code,
    and never with the machine (float results are not hashed: another CPU rounds them differently)."""
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    for p in training_prompts(cfg):
        h.update(p.text.encode())
    for module in (world, worlds, tiny_wan, text):
        h.update(inspect.getsource(module).encode())
    h.update(inspect.getsource(train).encode())
    return h.hexdigest()[:12]


def cache_dir() -> Path:
    """$REFUSAL_TESTBED_CACHE, else the user's cache folder."""
    env = os.environ.get("REFUSAL_TESTBED_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "refusal-vector-unlearning"


DATA = Path(__file__).resolve().parent / "data"
SHIPPED = {name: DATA / f"{name}_wan_seed0.safetensors" for name in CONFIGS}
# What `python -m testbed.train --world W --ship` wrote on the machine that shipped it; another machine's BLAS may
# round the training differently (the evaluation reads the shipped file, never a retrained one).
SHIPPED_SHA256 = {"first": "1ea8117a15963685ebd95de5be98f5b00dd5e5bfa26131f5ed61d08a4bc2f751", "hard": "f2ff86b0d2cc85aeba534e6fa7310a88a5cce26308e3357495b813a6ab0c596b"}


def _file_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("key")


def checkpoint_path(cfg: TrainConfig) -> Path:
    """The shipped model when cfg is the one it was trained with, else cfg's file in the cache."""
    shipped = SHIPPED[cfg.world]
    return shipped if _file_key(shipped) == cfg.key() else cache_dir() / f"{cfg.world}_wan_{cfg.key()}.safetensors"


def training_prompts(cfg: TrainConfig) -> list[WorldPrompt]:
    rng = random.Random(f"{cfg.world}-train/{cfg.seed}")
    seen: dict[str, WorldPrompt] = {}
    while len(seen) < cfg.prompts:
        p = cfg.spec.sample_prompt(rng)
        seen.setdefault(p.text, p)
    return list(seen.values())


def encode_hidden(texts: list[str], pad: int, text_seed: int = 0, batch: int = 128) -> torch.Tensor:
    """MiniLM token states, zero-padded to `pad` rows [N, max(pad, longest), 384]."""
    enc = minilm_text(text_seed)
    out = [enc.hidden([enc.tokenize(t) for t in texts[i : i + batch]], pad) for i in range(0, len(texts), batch)]
    width = max(x.shape[1] for x in out)
    return torch.cat([F.pad(x, (0, 0, 0, width - x.shape[1])) for x in out])


def contexts(texts: list[str], pad: int, text_seed: int = 0) -> torch.Tensor:
    """[N, pad, 4096] conditioning as the models were trained on ("" is the empty prompt of guidance)."""
    return encode_hidden(texts, pad, text_seed) @ minilm_text(text_seed).proj


def train(cfg: TrainConfig, log=print, step_done: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """The trained state dict (ComfyUI WanModel key names), rounded to fp16 as it is stored."""
    torch.manual_seed(cfg.seed)
    spec = cfg.spec
    prompts = training_prompts(cfg)
    t0 = time.perf_counter()
    H = encode_hidden([p.text for p in prompts], spec.text_pad, cfg.text_seed)
    if H.shape[1] != spec.text_pad:
        raise ValueError(f"a training prompt of the {cfg.world} world has {H.shape[1]} tokens, more than its text_pad {spec.text_pad}")
    empty = encode_hidden([""], spec.text_pad, cfg.text_seed)[0]
    X0 = torch.stack([spec.clean_latent(p) for p in prompts])
    log(f"encoded {len(prompts)} prompts of the {cfg.world} world in {time.perf_counter() - t0:.0f} s")
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
        if cfg.dropout > 0:
            h[torch.rand(cfg.batch, generator=g) < cfg.dropout] = empty
        eps = torch.randn(x0.shape, generator=g)
        sigma = torch.sigmoid(torch.randn(cfg.batch, generator=g))  # logit-normal, as SD3 / Wan train
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


class _ThroughMap(nn.Module):
    """text_embedding.0 applied to MiniLM states h through the fixed map: W (h proj) = (W proj^T) h.
    The same function and gradients as on the 4096-wide context, at a tenth of the cost (the
    context always lies in proj's row space, so W learns only there either way)."""

    def __init__(self, linear: nn.Linear, proj: torch.Tensor):
        super().__init__()
        self.linear, self.proj = linear, proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.linear.weight @ self.proj.T, self.linear.bias)


def load_or_train(cfg: TrainConfig, log=print, progress: Callable[[int, str], Callable[[int], None]] | None = None) -> TinyWan:
    """The model of cfg: shipped, cached, or trained now and cached (progress(total, what) -> advance)."""
    path = checkpoint_path(cfg)
    if not path.exists():
        log(f"training the {cfg.world} world's model, seed {cfg.seed} (first use; cached at {path})")
        sd = train(cfg, log, progress(cfg.steps, f"training {cfg.world} seed {cfg.seed}") if progress else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(sd, path, {"testbed": json.dumps(asdict(cfg)), "key": cfg.key()})
    model = cfg.model()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def ship(cfg: TrainConfig, log=print, progress=None) -> Path:
    """Copy the world's seed-0 checkpoint (cached or trained now) to testbed/data/."""
    if cfg.seed != 0 or replace(cfg, seed=0) != CONFIGS[cfg.world]:
        raise ValueError("only a world's released configuration, training seed 0, is shipped")
    load_or_train(cfg, log=log, progress=progress)
    src, dst = checkpoint_path(cfg), SHIPPED[cfg.world]
    if src != dst:
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(load_file(str(src)), dst, {"testbed": json.dumps(asdict(cfg)), "key": cfg.key()})
    return dst


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default="hard", choices=sorted(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", action="store_true", help="write seed 0's model to testbed/data/")
    args = ap.parse_args(argv)
    cfg = config(args.world, args.seed)
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
