"""Two attacks that try to bring an erased concept back on the harder testbed.

inversion     learns a few pseudo-token embeddings through the frozen (edited) model, as concept
              inversion does: rows appended to safe prompts' text states, trained by the flow-matching
              loss to render the concept's clean latents of dev prompts, then used on test prompts.
text search   a greedy search over the world's vocabulary (Ring-A-Bell style, discrete): appends the one or
              two words that most raise the concept in the guided one-step prediction of dev prompts, then
              samples test prompts with them.

Success: the render rate of the concept on the test prompts with the attack.
"""
from __future__ import annotations

import re

import torch

from . import guided
from .hard_train import TEXT_PAD, contexts, encode_hidden
from .hard_world import LATENT_SHAPE, MARKS, SCENES, SUBJECTS, VERBS, WorldPrompt, clean_latent, mark_scores, render_rate
from .text import minilm_text


_STATES: dict[str, torch.Tensor] = {}


def _states_with_rows(texts: list[str], rows: torch.Tensor) -> torch.Tensor:
    """[N, TEXT_PAD, 384] text states with `rows` [n, 384] placed right after each prompt's tokens."""
    H = _cached_states(texts)
    tok = minilm_text()
    out = []
    for i, t in enumerate(texts):
        at = min(len(tok.tokenize(t)), TEXT_PAD - rows.shape[0])
        out.append(torch.cat([H[i, :at], rows, H[i, at + rows.shape[0]:]]))
    return torch.stack(out)


def inversion(model: torch.nn.Module, train: list[tuple[WorldPrompt, WorldPrompt]], test: list[tuple[WorldPrompt, WorldPrompt]],
              marks: tuple[str, ...], negative: str, noise_seed: int, tokens: int = 2, steps: int = 60, lr: float = 0.1) -> float:
    """Render rate on the test safe twins with learned rows; train: (unsafe, safe) pairs whose unsafe clean
    latents the rows are trained to bring back from the safe twins' text."""
    proj = minilm_text().proj
    g = torch.Generator().manual_seed(3_000 + noise_seed)
    rows = (0.1 * torch.randn(tokens, proj.shape[0], generator=g)).requires_grad_(True)
    x0 = torch.stack([clean_latent(u) for u, _ in train])
    base = _cached_states([s.text for _, s in train])
    at = [min(len(minilm_text().tokenize(s.text)), TEXT_PAD - tokens) for _, s in train]
    opt = torch.optim.Adam([rows], lr=lr)
    for _ in range(steps):
        H = torch.stack([torch.cat([base[i, :a], rows, base[i, a + tokens:]]) for i, a in enumerate(at)])
        eps = torch.randn(x0.shape, generator=g)
        sigma = torch.sigmoid(torch.randn(x0.shape[0], generator=g))
        s = sigma.view(-1, 1, 1, 1, 1)
        v = model((1 - s) * x0 + s * eps, sigma * 1000.0, H @ proj)
        loss = (v - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        ctx = _states_with_rows([s.text for _, s in test], rows.detach()) @ proj
        noise = torch.randn(len(test), *LATENT_SHAPE, generator=torch.Generator().manual_seed(4_000 + noise_seed))
        lat = guided.generate(model, ctx, contexts([negative]), noise)
    return render_rate(lat, [u for u, _ in test], marks)


def vocabulary() -> list[str]:
    """Every word the world's prompts use (subjects, scenes, verbs and every mark's phrasings)."""
    texts = [p for ps in SUBJECTS.values() for p in ps] + [p for ps in SCENES.values() for p in ps] + list(VERBS)
    texts += [p for m in MARKS.values() for p in m.phrasings]
    return sorted({w for t in texts for w in re.findall(r"[\w'-]+", t.lower())} - {"a", "an", "the"})


def _cached_states(texts: list[str]) -> torch.Tensor:
    """encode_hidden(texts) [N, TEXT_PAD, 384], keeping every text's states: the search scores the same texts
    on every model it attacks, and the text encoder costs more than the model."""
    new = [t for t in dict.fromkeys(texts) if t not in _STATES]
    if new:
        _STATES.update(zip(new, encode_hidden(new)))
    return torch.stack([_STATES[t] for t in texts])


def _cached_contexts(texts: list[str]) -> torch.Tensor:
    return _cached_states(texts) @ minilm_text().proj


@torch.no_grad()
def _one_step_score(model: torch.nn.Module, prompts: list[WorldPrompt], suffixes: list[str], marks: tuple[str, ...],
                    negative: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """[len(suffixes)] mean over prompts of the marks' best frame score in the guided one-step prediction from noise."""
    texts = [f"{p.text} {s}" for s in suffixes for p in prompts]
    ctx = _cached_contexts(texts)
    x = noise.repeat(len(suffixes), 1, 1, 1, 1)
    out = []
    for i in range(0, len(texts), 256):
        xi, ci = x[i : i + 256], ctx[i : i + 256]
        out.append(xi - guided.guided_velocity(model, xi, 1.0, ci, negative.expand(ci.shape[0], -1, -1)))
    x0 = torch.cat(out)
    rep = prompts * len(suffixes)
    score = torch.stack([mark_scores(x0, rep, m).amax(1) for m in marks]).amax(0)
    return score.view(len(suffixes), len(prompts)).mean(1)


@torch.no_grad()
def text_search(model: torch.nn.Module, search: list[WorldPrompt], test: list[tuple[WorldPrompt, WorldPrompt]],
                marks: tuple[str, ...], negative: str, noise_seed: int, beam: int = 24) -> tuple[float, str]:
    """(render rate on the test safe twins with the found words appended, the words): every word of the
    vocabulary scored alone, then the best one followed by each of the `beam` best (a greedy second word)."""
    vocab = vocabulary()
    neg = contexts([negative])
    noise = torch.randn(len(search), *LATENT_SHAPE, generator=torch.Generator().manual_seed(5_000 + noise_seed))
    first = _one_step_score(model, search, vocab, marks, neg, noise)
    top = [vocab[i] for i in first.argsort(descending=True)[:beam].tolist()]
    pairs = [f"{top[0]} {w}" for w in top if w != top[0]]
    second = _one_step_score(model, search, pairs, marks, neg, noise)
    found = pairs[int(second.argmax())] if float(second.max()) > float(first.max()) else top[0]
    ctx = _cached_contexts([f"{s.text} {found}" for _, s in test])
    lat = guided.generate(model, ctx, neg, torch.randn(len(test), *LATENT_SHAPE, generator=torch.Generator().manual_seed(4_000 + noise_seed)))
    return render_rate(lat, [u for u, _ in test], marks), found
