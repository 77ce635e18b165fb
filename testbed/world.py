"""One machinery for the testbed's synthetic worlds (their data: worlds.py): prompts with ground truth.

A prompt names a subject, a scene and at most a few marks (an unsafe concept, a look-alike, a word-sense
near-miss, a named character, or a filler phrase that renders nothing). Its clean latent [C, T, H, W] is
  base    the subject's pattern (moving one pixel per frame) plus the scene's, everywhere;
  marks   each of a mark's parts painted into one cell of the frames the mark appears in (the cell is chosen by
          the part and the scene). Parts are what marks share: nudity and a swimsuit both paint skin, a named
          mouse and a cartoon mouse both paint the mouse. In a non-linear world a part is tanh of one of its
          variants (chosen by subject and scene) drifting over time, modulated by the subject; in a linear
          world it is one fixed pattern.
What a generated latent renders is read exactly from these patterns (scoring.py). Only what shapes a model's
training data lives here: training keys the models by this file's source (train.py).
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from functools import cached_property

import torch

GROUPS = ("unsafe", "lookalike", "wordsense", "character", "filler")
NEAR_KINDS = ("lookalike", "wordsense")  # the two kinds of safe near-miss


@dataclass(frozen=True)
class Mark:
    """Phrasings by kind: 'pre' goes before the subject's noun ("a nude woman"), 'post' after it ("a woman in the
    nude"), 'name' replaces the subject, which becomes 'cartoon'. group: one of GROUPS. near: the erased mark a
    look-alike or word-sense near-miss sits next to. parts: what it paints (default: a part of its own; a filler
    paints nothing). frames: the frames it appears in (None: all)."""

    group: str
    pre: tuple[str, ...] = ()
    post: tuple[str, ...] = ()
    name: tuple[str, ...] = ()
    frames: tuple[int, ...] | None = None
    near: str = ""
    parts: tuple[str, ...] = ()

    @property
    def phrasings(self) -> tuple[str, ...]:
        return self.pre + self.post + self.name

    def kind(self, phrase: str) -> str:
        return "pre" if phrase in self.pre else "post" if phrase in self.post else "name"


@dataclass(frozen=True)
class WorldPrompt:
    text: str
    subject: str
    scene: str
    marks: tuple[str, ...] = ()
    variant: int = 0  # which rendering of the marks (set by subject and scene)


def article_swap(subject_phrase: str, adjective: str) -> str:
    """'a woman' + 'nude' -> 'a nude woman'; 'an old man' + 'naked' -> 'a naked old man'."""
    words = subject_phrase.split(" ", 1)
    if len(words) == 2 and words[0] in ("a", "an"):
        art = "an" if adjective[0].lower() in "aeiou" else "a"
        return f"{art} {adjective} {words[1]}"
    return f"{adjective} {subject_phrase}"


def _stable(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:4], "little")


@dataclass(eq=False)
class World:
    """A world's data (subjects, scenes, marks, latent geometry, how it renders) and everything built on it.

    concepts: what the pack erases, each as the marks that render it; cells: (y, x) corners of the regions a part
    may occupy, each `cell` [h, w] large; linear: one fixed pattern per part (else tanh, variants, drift over frames
    and a modulation by the subject)."""

    name: str
    subjects: dict[str, tuple[str, ...]]
    people: tuple[str, ...]
    scenes: dict[str, tuple[str, ...]]
    verbs: tuple[str, ...]
    marks: dict[str, Mark]
    concepts: dict[str, tuple[str, ...]]
    latent_shape: tuple[int, int, int, int]
    cell: tuple[int, int]
    cells: tuple[tuple[int, int], ...]
    variants: int
    linear: bool
    mark_rms: float
    pattern_seed: int
    text_pad: int  # zero-padded context length of its model (every prompt fits)
    mark_rate: float  # share of training prompts with a mark
    second_rate: float  # share of those with a second mark
    unsafe_weight: float  # how much more often an unsafe mark is drawn than any other
    guidance: float  # how its videos are sampled: guidance against the negative (1: none), shift, Euler steps
    shift: float
    steps: int
    memo: dict = field(default_factory=dict, repr=False)  # patterns and filters computed once

    # --- prompts -------------------------------------------------------------------------------------------------
    @cached_property
    def parts(self) -> tuple[str, ...]:
        """Every part some mark paints, in mark order."""
        return tuple(dict.fromkeys(p for m in self.marks for p in self.parts_of(m)))

    def parts_of(self, mark: str) -> tuple[str, ...]:
        spec = self.marks[mark]
        return () if spec.group == "filler" else (spec.parts or (mark,))

    def frames_of(self, mark: str) -> tuple[int, ...]:
        return self.marks[mark].frames or tuple(range(self.latent_shape[1]))

    def of_group(self, *groups: str) -> tuple[str, ...]:
        return tuple(m for m, spec in self.marks.items() if spec.group in groups)

    def near(self, concept: str, kind: str | None = None) -> tuple[str, ...]:
        """The near-misses next to a concept's marks (of one kind, or both)."""
        kinds = (kind,) if kind else NEAR_KINDS
        return tuple(m for m, spec in self.marks.items() if spec.group in kinds and spec.near in self.concepts[concept])

    def variant_of(self, subject: str, scene: str) -> int:
        return _stable("variant", subject, scene) % self.variants

    def cells_of(self, mark: str, scene: str) -> tuple[int, ...]:
        """The cell of each of the mark's parts in this scene: the first part's by hash, the next ones in the cells after
        it, so that a shared part (always listed first) sits where it sits for every mark that paints it."""
        parts = self.parts_of(mark)
        first = _stable("cell", parts[0], scene) % len(self.cells) if parts else 0
        return tuple((first + i) % len(self.cells) for i in range(len(parts)))

    def compose_pair(self, subject: str, scene: str, marks: dict[str, str], rng: random.Random) -> tuple[WorldPrompt, WorldPrompt]:
        """marks: mark -> phrasing. The prompt and its safe twin (the same words without the marks; a named
        character becomes a generic cartoon character)."""
        subj = safe_subj = rng.choice(self.subjects[subject])
        for name, phrase in marks.items():
            if self.marks[name].kind(phrase) == "name":
                subj, subject = phrase, "cartoon"
                safe_subj = rng.choice(self.subjects["cartoon"])
        tail = []
        for name, phrase in marks.items():
            if self.marks[name].kind(phrase) == "pre":
                subj = article_swap(subj, phrase)
            elif self.marks[name].kind(phrase) == "post":
                tail.append(phrase)
        verb, where = rng.choice(self.verbs), rng.choice(self.scenes[scene])
        text = lambda *parts: " ".join(p for p in parts if p)  # noqa: E731
        v = self.variant_of(subject, scene)
        return (WorldPrompt(text(subj, *tail, verb, where), subject, scene, tuple(sorted(marks)), v),
                WorldPrompt(text(safe_subj, verb, where), subject, scene, (), v))

    def _fits(self, mark: str, subject: str) -> str:
        """The subject a mark may attach to: people for clothing, wounds and objects, any for a name."""
        if self.marks[mark].name:
            return "cartoon"
        return subject if subject in self.people else random.Random(subject + mark).choice(self.people)

    def sample_prompt(self, rng: random.Random) -> WorldPrompt:
        """A training prompt: with probability mark_rate one mark (an unsafe one unsafe_weight times as likely as another),
        sometimes a second that shares no part with it."""
        subject, scene = rng.choice(sorted(self.subjects)), rng.choice(sorted(self.scenes))
        chosen: dict[str, str] = {}
        if rng.random() < self.mark_rate:
            names = sorted(self.marks)
            first = rng.choices(names, [self.unsafe_weight if self.marks[m].group == "unsafe" else 1.0 for m in names])[0]
            chosen[first] = rng.choice(self.marks[first].phrasings)
            subject = self._fits(first, subject)
            if rng.random() < self.second_rate:
                shared = set(self.parts_of(first))
                second = rng.choice([m for m in sorted(self.marks) if m != first and not self.marks[m].name
                                     and not shared & set(self.parts_of(m))])
                chosen[second] = rng.choice(self.marks[second].phrasings)
                if not self.marks[first].name:
                    subject = self._fits(second, subject)
        return self.compose_pair(subject, scene, chosen, rng)[0]

    def mark_prompts(self, mark: str, phrasings: list[str], n: int, seed: str) -> list[tuple[WorldPrompt, WorldPrompt]]:
        """n (prompt with the mark, safe twin) over the given phrasings, cycling, with seeded subjects and scenes."""
        rng = random.Random(f"prompts/{mark}/{seed}")
        out = []
        for i in range(n):
            subject = "cartoon" if self.marks[mark].name else rng.choice(self.people)
            out.append(self.compose_pair(subject, rng.choice(sorted(self.scenes)), {mark: phrasings[i % len(phrasings)]}, rng))
        return out

    def clean_prompts(self, n: int, seed: str) -> list[WorldPrompt]:
        rng = random.Random(f"clean/{seed}")
        return [self.compose_pair(rng.choice(sorted(self.subjects)), rng.choice(sorted(self.scenes)), {}, rng)[0] for _ in range(n)]

    # --- rendering -----------------------------------------------------------------------------------------------
    @cached_property
    def base_names(self) -> tuple[str, ...]:
        return tuple([f"subject:{s}" for s in self.subjects] + [f"scene:{s}" for s in self.scenes])

    def patterns(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """Seeded random patterns: 'base' [n_base, C, T, H, W] (unit RMS), 'part' [n_parts, variants, C, *cell],
        'drift' [n_parts, C, *cell], 'mod' [n_subjects, C, *cell]."""
        key = ("patterns", seed)
        if key not in self.memo:
            g = torch.Generator().manual_seed(self.pattern_seed + seed)
            C, T, H, W = self.latent_shape
            subj = torch.randn(len(self.subjects), C, 1, H, W, generator=g)
            base_subj = torch.cat([torch.roll(subj, t, dims=-1) for t in range(T)], dim=2)  # moves one pixel per frame
            base_scene = torch.randn(len(self.scenes), C, 1, H, W, generator=g).expand(-1, -1, T, -1, -1)
            base = torch.cat([base_subj, base_scene])
            base = base / base.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1, 1)
            n = len(self.parts)
            self.memo[key] = {"base": base.contiguous(), "part": torch.randn(n, self.variants, C, *self.cell, generator=g),
                                "drift": torch.randn(n, C, *self.cell, generator=g),
                                "mod": torch.randn(len(self.subjects), C, *self.cell, generator=g)}
        return self.memo[key]

    def rendering(self, part: str, subject: str, variant: int, frame: int, seed: int = 0) -> torch.Tensor:
        """The part's [C, *cell] content in one frame for this subject and variant, of RMS mark_rms."""
        P = self.patterns(seed)
        i = self.parts.index(part)
        if self.linear:
            x = P["part"][i, variant]
        else:
            s = list(self.subjects).index(subject)
            x = torch.tanh(1.5 * (P["part"][i, variant] + 0.4 * frame * P["drift"][i])) * (1 + 0.5 * torch.tanh(P["mod"][s]))
        return x * (self.mark_rms / x.pow(2).mean().sqrt())

    def clean_latent(self, prompt: WorldPrompt, seed: int = 0) -> torch.Tensor:
        """The latent the prompt should render [C, T, H, W]."""
        P = self.patterns(seed)
        x = P["base"][self.base_names.index(f"subject:{prompt.subject}")] + P["base"][self.base_names.index(f"scene:{prompt.scene}")]
        h, w = self.cell
        for mark in prompt.marks:
            for part, cell in zip(self.parts_of(mark), self.cells_of(mark, prompt.scene)):
                y, xx = self.cells[cell]
                for t in self.frames_of(mark):
                    x[:, t, y : y + h, xx : xx + w] += self.rendering(part, prompt.subject, prompt.variant, t, seed)
        return x
