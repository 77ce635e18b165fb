"""Train the testbed's small Wan on the synthetic world, deterministically, in a few CPU minutes.
The released model is shipped (testbed/data/, fp16); another configuration, or a change to the world,
the model or the trainer, trains on first use and is cached (keyed by every setting that shapes it).

    python -m testbed.train [--force] [--ship]

Flow matching as Wan is trained: x_sigma = (1 - sigma) x0 + sigma eps, target v = eps - x0,
timestep = 1000 sigma. The text is MiniLM mapped to 4096 wide and zero-padded, as ComfyUI pads
Wan's umt5 context.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from refusal_core.io import save_atomic
from .progress import Progress
from .text import minilm_text
from .tiny_wan import TinyWan, init_random
from .world import WorldPrompt, clean_latent, sample_prompt

TEXT_PAD = 24  # zero-padded context length (Wan pads to 512; 24 holds every world prompt, the longest has 21 tokens)


@dataclass(frozen=True)
class TrainConfig:
    dim: int = 128
    heads: int = 1  # ComfyUI reads a Wan checkpoint's head count as dim // 128: the same model in both
    layers: int = 6
    prompts: int = 2400
    steps: int = 1500
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    text_seed: int = 0

    def model(self) -> TinyWan:
        return TinyWan(dim=self.dim, ffn_dim=4 * self.dim, heads=self.heads, layers=self.layers)

    def key(self) -> str:
        """Changes with every setting and the source of the world, the model and the training (not with the
        torch version: the shipped model must serve every torch)."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        here = Path(__file__).resolve().parent
        for name in ("world.py", "tiny_wan.py", "text.py", "train.py"):
            blob += (here / name).read_bytes()
        return hashlib.sha256(blob).hexdigest()[:12]


def cache_dir() -> Path:
    """$REFUSAL_TESTBED_CACHE, else the user's cache folder."""
    env = os.environ.get("REFUSAL_TESTBED_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "refusal-vector-unlearning"


# The released testbed model, shipped with the repository (fp16): the main job and the tests need no training.
SHIPPED = Path(__file__).resolve().parent / "data" / "testbed_wan.safetensors"


def shipped_key() -> str | None:
    """The TrainConfig key the shipped model was trained with (None without a shipped file)."""
    if not SHIPPED.is_file():
        return None
    with safe_open(str(SHIPPED), "pt") as f:
        return (f.metadata() or {}).get("key")


def checkpoint_path(cfg: TrainConfig) -> Path:
    """The shipped model when it was trained with cfg, else cfg's file in the cache (trained on first use)."""
    return SHIPPED if shipped_key() == cfg.key() else cache_dir() / f"testbed_wan_{cfg.key()}.safetensors"


def training_prompts(cfg: TrainConfig) -> list[WorldPrompt]:
    rng = random.Random(f"train/{cfg.seed}")
    seen: dict[str, WorldPrompt] = {}
    while len(seen) < cfg.prompts:
        p = sample_prompt(rng)
        seen.setdefault(p.text, p)
    return list(seen.values())


def encode_hidden(texts: list[str], text_seed: int, batch: int = 64) -> torch.Tensor:
    """MiniLM token states of the prompts, zero-padded to TEXT_PAD [N, TEXT_PAD, 384]."""
    text = minilm_text(text_seed)
    out = [text.hidden([text.tokenize(t) for t in texts[i : i + batch]], TEXT_PAD) for i in range(0, len(texts), batch)]
    return torch.cat(out)


def train(cfg: TrainConfig, log=print, step_done: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """The trained state dict (ComfyUI WanModel key names); step_done(1) after every training step."""
    torch.manual_seed(cfg.seed)
    prompts = training_prompts(cfg)
    t0 = time.perf_counter()
    H = encode_hidden([p.text for p in prompts], cfg.text_seed)
    proj = minilm_text(cfg.text_seed).proj
    X0 = torch.stack([clean_latent(p) for p in prompts])
    log(f"encoded {len(prompts)} world prompts in {time.perf_counter() - t0:.0f} s")
    model = init_random(cfg.model(), cfg.seed).train()
    first = model.text_embedding[0]
    model.text_embedding[0] = _ThroughMap(first, proj)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(len(prompts), (cfg.batch,), generator=g)
        x0 = X0[idx]
        eps = torch.randn(x0.shape, generator=g)
        sigma = torch.sigmoid(torch.randn(cfg.batch, generator=g))  # logit-normal, as SD3 / Wan train
        s = sigma.view(-1, 1, 1, 1, 1)
        v = model((1 - s) * x0 + s * eps, sigma * 1000.0, H[idx])
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step_done is not None:
            step_done(1)
        if step % 200 == 0 or step == cfg.steps - 1:
            log(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:.0f} s")
    model.text_embedding[0] = first
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


class _ThroughMap(nn.Module):
    """text_embedding.0 applied to MiniLM states h through the fixed map: W (h proj) = (W proj^T) h.
    The same function and gradients as on the 4096-wide context, at a tenth of the cost (the
    context always lies in proj's row space, so W learns only there either way)."""

    def __init__(self, linear: nn.Linear, proj: torch.Tensor):
        super().__init__()
        self.linear, self.proj = linear, proj

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.linear.weight @ self.proj.T, self.linear.bias)


def load_or_train(cfg: TrainConfig = TrainConfig(), force: bool = False, log=print,
                  progress: Callable[[int, str], Callable[[int], None]] | None = None) -> TinyWan:
    """The trained testbed model: shipped, cached, or trained now (and cached); progress(total, what) -> advance.
    force: train again into the cache (the shipped file changes only through ship())."""
    path = cache_dir() / f"testbed_wan_{cfg.key()}.safetensors" if force else checkpoint_path(cfg)
    if force or not path.exists():
        log(f"training the testbed model (first use; cached at {path})")
        sd = train(cfg, log, progress(cfg.steps, "training the testbed") if progress else None)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(sd, path, {"testbed": json.dumps(asdict(cfg))})
    model = cfg.model()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)


def ship(cfg: TrainConfig = TrainConfig(), log=print, progress=None) -> Path:
    """Write the shipped model: cfg's training (cached or done now) in fp16, with its key."""
    trained = load_or_train(cfg, log=log, progress=progress) if checkpoint_path(cfg) != SHIPPED else None
    sd = trained.state_dict() if trained is not None else load_file(str(SHIPPED))
    SHIPPED.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({k: v.half().contiguous() for k, v in sd.items()}, SHIPPED, {"testbed": json.dumps(asdict(cfg)), "key": cfg.key()})
    return SHIPPED


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="train again even if a cached checkpoint exists")
    ap.add_argument("--steps", type=int, default=TrainConfig.steps)
    ap.add_argument("--ship", action="store_true", help="write the shipped model (testbed/data/) from this training")
    args = ap.parse_args(argv)
    cfg = TrainConfig(steps=args.steps)
    shown = Progress()
    if args.ship:
        print(ship(cfg, log=shown.say, progress=shown.bar))
        return 0
    load_or_train(cfg, force=args.force, log=shown.say, progress=shown.bar)
    print(checkpoint_path(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

