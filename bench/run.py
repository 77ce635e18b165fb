"""Speed and memory of the method, as ratios measured side by side in one run (pure torch, no ComfyUI).

    python -m bench.run [--threads 1 --size 128 --text-len 32 --batch 4 --reps 9]    (quick: --layers 2 --reps 3)

Model: TinyWan (testbed/tiny_wan.py: the math and key names of ComfyUI's WanModel) at
the Wan 2.1 1.3B shape (dim 1536, 30 blocks, ffn 8960, 12 heads, text_dim 4096), random weights,
fp32, CPU. Site: Wan's default (text_kv: blocks.N.cross_attn.k and .v, all 30 blocks = 60 edited
weights, text-token rows; every block reads the same text context, so its rows are taken once). Prompts: the pack's
5 default pairs + 10 neutral prompts (20 forwards at one sigma; the node reads three, which triples both sides of the
extraction ratio). Conditioning: one random 4096-wide row per word plus an end token, padded with zero rows to
--text-len as ComfyUI pads Wan's umt5 output (to 512); the default 32 keeps the run short, and padding only adds the
same k/v rows to both sides of every ratio. The factorization is timed at dims 1536, 3072 and 5120 (Wan 1.3B, 5B,
14B) on rows of the same counts, and at 1536 and 5120 on the row budget a template run fills (512 + 512 rows).

Every timed ratio comes from interleaved repeats (bench/paired.py): its variants run in rotating order, each
repetition gives one paired ratio, the figure is their median and results.json records their quartiles, min, max and
count. Extraction and sampling also time the base against itself in the same rotation (the control). The verdict:
the interval is the ratio's [q1, q3], widened on both sides by the control's noise (divided and multiplied by its
larger factor away from 1) where there is one; pass when its upper end is
<= the goal, FAIL when its lower end is above it, otherwise "within noise" (this run cannot tell). Figures measured
once (bytes, the apply and erase seconds, memory) are judged by their value. Repeats: --reps for the sampling step
and the factorization at 1536; fewer for the slow ones (SLOW_REPS: an extraction runs for tens of seconds, a float32
dense eigh at 5120 for ~20 s at 1 thread, so 2 pairs there, and their quartiles are only those two).
Times are this process's CPU seconds (see timed). Prints a table with each figure's goal, spread and verdict and writes
bench/results.json (each figure with its goal, spread, control, verdict and how it was measured; docs/results.md is
made from it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import statistics
import time
import zlib
from pathlib import Path

import torch

from bench import paired
from refusal_core import (
    EncodedPrompt,
    ExtractSettings,
    LayerStats,
    PromptPairs,
    RefusalEdit,
    RefusalStats,
    defaults,
    extract_refusal_stats,
    factorize,
)
from refusal_core.families import FAMILIES
from refusal_core.lora import LORA_PREFIX, lora_state_dict
from refusal_core.presets import load_preset
from refusal_core.stats import as_moments
from testbed.tiny_wan import TinyWan

ROOT = Path(__file__).resolve().parents[1]

# Wan 1.3B, 5B and 14B widths, with the goal of each: never slower than a dense eigendecomposition, and at 14B a small fraction
FACTORIZE_WIDTHS = ((1536, 1.0), (3072, 1.0), (5120, 0.05))
# the template's full row budget (MAX_ROWS of D and of E) at Wan 1.3B's and 14B's widths, with the goals
ROW_BUDGET_GOALS = {1536: 1.0, 5120: 0.05}
# the most repetitions of the slow comparisons: an extraction (tens of seconds per run) and the float32 dense eigh
# at 3072 (~4 s) and 5120 (~20 s at 1 thread)
# extraction over full forwards: at the default site, where no block runs, a small fraction (the issue: from 140 s to
# <= 10 s at 1.3B); at a video site never slower than the forwards it reads (the hooks' copies within 15 %)
EXTRACTION_GOALS = {True: 0.1, False: 1.15}
SLOW_REPS = {"extract": 3, 3072: 3, 5120: 2}
# a site in the video stream, read in every block: its extraction runs the blocks, but never the head
VIDEO_SITE = "cross_out"
CHARACTERS = 8  # concepts erased together (issue: 8 named characters at once in under 10 s at Wan 1.3B's dims)
POOL = 4_194_319  # prime, so that weights filled from one random pool do not repeat row by row


def random_wan(dim: int, layers: int, ffn: int, heads: int, seed: int) -> TinyWan:
    """TinyWan with init_random's scales, filled from one seeded N(0, 1) pool: seconds instead of a
    minute of randn for 1.4 B values; speed and memory do not depend on the values."""
    with torch.device("meta"):
        model = TinyWan(dim=dim, ffn_dim=ffn, heads=heads, layers=layers)
    model = model.to_empty(device="cpu").eval().requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(POOL, generator=g)
    for name, p in model.named_parameters():
        flat, i, start = p.view(-1), 0, int(torch.randint(POOL, (1,), generator=g))
        while i < flat.numel():
            n = min(flat.numel() - i, POOL - start)
            flat[i : i + n].copy_(pool[start : start + n])
            i, start = i + n, 0
        if name.endswith("modulation"):
            p.div_(p.shape[-1] ** 0.5)
        elif p.ndim >= 2:
            p.div_(p[0].numel() ** 0.5)
        elif name.endswith("bias"):
            p.mul_(0.02)
        else:
            p.fill_(1.0)
    return model


def word_vec(word: str) -> torch.Tensor:
    return torch.randn(4096, generator=torch.Generator().manual_seed(zlib.crc32(word.encode())))


def encode(text: str, text_len: int) -> EncodedPrompt:
    """Stand-in umt5 output: per word a fixed random row plus a share of the prompt's mean (so every
    token depends on its context, as in a real encoder), an end token, zero padding to text_len."""
    words = text.split()
    ids = tuple(zlib.crc32(w.encode()) % 32000 + 2 for w in words) + (1,)
    rows = torch.stack([word_vec(w) for w in words] + [word_vec("</s>")])
    rows = rows + 0.3 * rows.mean(0)
    cond = torch.zeros(1, max(text_len, rows.shape[0]), 4096)
    cond[0, : rows.shape[0]] = rows
    return EncodedPrompt(text, ids, cond, text_len=cond.shape[1])


def make_forward(model: TinyWan):
    def forward(cond: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
        with torch.no_grad():
            return model(sigma * noise, torch.tensor([sigma * 1000.0]), cond)

    return forward


def proc_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def reset_peak() -> bool:
    """Return freed heap to the OS and restart the peak-RSS counter (VmHWM); False where not supported."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed(fn, *args, **kwargs):
    """(result, CPU seconds of this process). CPU time, not wall time: on cores shared with other work the
    wall clock also counts the time other processes ran (it spread by 20 % between identical steps here),
    while every figure is a ratio of this process's own work."""
    t0 = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 by default: on cores shared with other work, 2 threads stall at every "
        "parallel op waiting for the descheduled one (measured 2x slower and noisier)",
    )
    ap.add_argument(
        "--size", type=int, default=128, help="probe / sampling latent width = height in pixels (128: 64 video tokens)"
    )
    ap.add_argument(
        "--text-len", type=int, default=32, help="rows of the padded text context (ComfyUI pads Wan's to 512)"
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=4,
        help="prompts per forward in extraction (1: the ExtractRefusalVector node's way)",
    )
    ap.add_argument(
        "--reps",
        type=int,
        default=9,
        help="interleaved repetitions of each timed ratio (the slow ones take fewer: see SLOW_REPS)",
    )
    ap.add_argument(
        "--layers", type=int, default=30, help="blocks (30 is the real shape; fewer only for a quick check)"
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()

    model, t_build = timed(random_wan, 1536, args.layers, 8960, 12, 0)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    print(
        f"model: Wan 2.1 1.3B shape (dim 1536, {args.layers} blocks), {model_bytes / 2**30:.2f} GiB fp32, built in {t_build:.1f} s; "
        f"{args.threads} torch threads"
    )
    site = FAMILIES["wan"].sites[FAMILIES["wan"].default_site]
    pairs, neutral = load_preset(defaults.PRESET)
    pp = PromptPairs.from_texts(pairs, neutral, lambda t: encode(t, args.text_len))
    latent = torch.randn(1, 16, 1, args.size // 8, args.size // 8, generator=torch.Generator().manual_seed(0))
    forward = make_forward(model)
    names = [name for name, _ in model.named_modules()]
    settings = {
        s.name: ExtractSettings(s, s.blocks(names), [defaults.SIGMAS[0]], "wan", batch_size=args.batch)
        for s in (site, FAMILIES["wan"].sites[VIDEO_SITE])
    }
    stats, rows = extraction(model, forward, pp, latent, settings, model_bytes, min(args.reps, SLOW_REPS["extract"]))

    edit, t_fact = timed(factorize, stats)
    layer = stats.layers[0]
    print(
        f"factorize, dim 1536, {len(stats.layers)} layers (D {layer.diffs.shape[0]} rows, E {layer.neutral.shape[0]} rows): {t_fact:.2f} s"
    )
    for d, goal in FACTORIZE_WIDTHS:
        rows.update(factorize_vs_dense(d, goal, layer.diffs.shape[0], layer.neutral.shape[0], args.reps))

    # apply: the rank-1 factors of every edited weight (what ApplyRefusalToModel hands to ComfyUI)
    state = {n[: -len(".weight")]: p for n, p in model.named_parameters() if n.endswith(".weight")}
    patch, t_apply = timed(lora_state_dict, state.__getitem__, edit, 1.0)
    patch_bytes = sum(t.numel() * t.element_size() for k, t in patch.items() if not k.endswith(".alpha"))
    rows["apply_seconds"] = figure(t_apply, None, f"{len(edit.directions())} weights, rank-1 factors, no dense copy")
    rows["patch_bytes_ratio"] = figure(
        patch_bytes / model_bytes, 0.01, f"{patch_bytes / 1024:.0f} KiB / {model_bytes / 2**30:.2f} GiB"
    )
    many, how = erase_at_once(stats, state, CHARACTERS)
    rows[f"erase_{CHARACTERS}_at_once_seconds"] = figure(many, 10.0, how)
    rows.update(sampling(model, forward, pp.neutral[0].conditioning, latent, edit, state, patch, args.reps))

    order = [
        *(f"extraction_{name}_vs_forwards" for name in settings),
        *(f"factorize_vs_dense_d{d}" for d, _ in FACTORIZE_WIDTHS),
        *(f"factorize_vs_dense_d{d}_row_budget" for d in ROW_BUDGET_GOALS),
        "sampling_overhead_edit",
        "sampling_overhead_runtime_hooks",
        "patch_bytes_ratio",
        "apply_seconds",
        f"erase_{CHARACTERS}_at_once_seconds",
        "extraction_peak_memory_ratio",
    ]
    figures = {k: rows[k] for k in order}
    print_table(figures)
    meta = {
        "threads": args.threads,
        "layers": args.layers,
        "batch": args.batch,
        "size": args.size,
        "text_len": args.text_len,
        "reps": args.reps,
        "factorize_widths": [d for d, _ in FACTORIZE_WIDTHS],
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps({"figures": figures, "run": meta}, indent=2) + "\n")
    print(f"\nwrote {args.out}; wall time {time.perf_counter() - wall0:.0f} s")


def figure(value: float | None, goal: float | None, how: str, ratios=None, control=None) -> dict:
    """One figure of results.json: with paired ratios, their median and spread (and the control's), else the value
    measured once; the verdict by bench/paired.py's rule."""
    s, c = (paired.spread(ratios) if ratios else None), (paired.spread(control) if control else None)
    value = s["median"] if s else float(value)
    return {
        "value": value,
        "goal": goal,
        "verdict": paired.verdict(value, goal, s, c),
        "spread": s,
        "control": c,
        "how": how,
    }


def print_table(figures: dict) -> None:
    """The figures as docs/results.md shows them (scripts/make_docs.py, bench_section)."""
    print(
        "\n| figure | value | [q1, q3] of n | base vs itself | goal | verdict | measured |\n|---|---|---|---|---|---|---|"
    )
    for key, f in figures.items():
        s = paired.span_text(f["spread"]) if f["spread"] else "once"
        c = f"{f['control']['median']:.3f} {paired.span_text(f['control'])}" if f["control"] else "-"
        goal = "-" if f["goal"] is None else f"<= {f['goal']:g}"
        print(f"| {key} | {f['value']:.4g} | {s} | {c} | {goal} | {f['verdict']} | {f['how']} |")


def extraction(
    model, forward, pp, latent, settings: dict[str, ExtractSettings], model_bytes: int, reps: int
) -> tuple[RefusalStats, dict]:
    """Extraction at each site of `settings` (the default one first) against the same forwards run to their end
    without hooks (batched the same way), and those bare forwards again as the control, interleaved; each run's peak
    resident memory over what was resident before it. (the default site's statistics, figures)"""
    conds = [e.conditioning for pair in pp.pairs for e in pair] + [e.conditioning for e in pp.neutral]
    batch = next(iter(settings.values())).batch_size
    groups = [conds[i : i + batch] for i in range(0, len(conds), batch)]
    forward(torch.cat(groups[0]), latent.expand(len(groups[0]), *latent.shape[1:]), 0.9)  # warm-up
    peaks: dict[str, int] = {}
    out: dict[str, RefusalStats] = {}
    peak_ok = True

    def bare_pass() -> None:
        for g in groups:
            forward(torch.cat(g), latent.expand(len(g), *latent.shape[1:]), 0.9)

    def run(kind: str, fn) -> float:
        nonlocal peak_ok
        peak_ok = reset_peak() and peak_ok
        rss0 = proc_kib("VmRSS")
        result, seconds = timed(fn)
        peaks[kind] = max(peaks.get(kind, 0), proc_kib("VmHWM") - rss0)
        if result is not None:
            out.setdefault(kind, result)
        return seconds

    def extract(name: str):
        return lambda: run(name, lambda: extract_refusal_stats(model, forward, pp, latent, settings[name]))

    times = paired.interleave(
        {
            "bare": lambda: run("bare", bare_pass),
            **{n: extract(n) for n in settings},
            "control": lambda: run("bare", bare_pass),
        },
        reps,
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    default, *others = settings
    figures = {}
    for name in settings:
        blocks_run = "none (the text context only)" if settings[name].site.shared else "up to the last one read"
        figures[f"extraction_{name}_vs_forwards"] = figure(
            None,
            EXTRACTION_GOALS[name == default],
            f"median of {reps} paired ratios extraction at {name} / the same forwards run to their end without hooks: "
            f"{med[name]:.2f} s / {med['bare']:.1f} s ({len(conds)} prompts in {len(groups)} forwards of <= {batch}; "
            f"blocks run: {blocks_run}); control: the bare "
            "forwards again",
            paired.paired(times, name, "bare"),
            paired.paired(times, "control", "bare"),
        )
    figures["extraction_peak_memory_ratio"] = figure(
        peaks[default] * 1024 / model_bytes,
        None,
        f"at {default}: {peaks[default] / 1024:.0f} MiB over the resident model (the most of {reps} runs); at "
        + ", ".join(f"{n}: {peaks[n] / 1024:.0f} MiB" for n in others)
        + f"; bare forwards {peaks['bare'] / 1024:.0f} MiB"
        + ("" if peak_ok else " (peak counter not resettable: includes the build)"),
    )
    return out[default], figures


def erase_at_once(stats: RefusalStats, state: dict, n: int) -> tuple[float, str]:
    """n concepts erased together from statistics of stats' shapes (its layers, rows of D and E) plus 3 keep prompts'
    rows: n factorizations with the keep list, their combination and its patch factors (what n Low-Rank Factorize,
    Combine Refusal Vectors and Apply Refusal To Model compute once the model has been read). CPU seconds."""
    g = torch.Generator().manual_seed(2)
    keep = torch.randn(30, stats.layers[0].dim, generator=g)
    concepts = []
    for _ in range(n):
        shift = torch.randn(stats.layers[0].dim, generator=g)  # each concept its own difference rows, in stats' shapes
        layers = tuple(
            LayerStats(L.point, L.edit_keys, L.diffs + shift, L.neutral, L.r + shift, keep=keep) for L in stats.layers
        )
        concepts.append(RefusalStats(layers, stats.meta))

    def erase() -> dict:
        joined = RefusalEdit.combine([(factorize(c), defaults.STRENGTH) for c in concepts])
        return lora_state_dict(state.__getitem__, joined, 1.0)

    _, seconds = timed(erase)
    layer = stats.layers[0]
    return seconds, (
        f"{n} concepts x {len(stats.layers)} layers at width {layer.dim} (D {layer.diffs.shape[0]}, E {layer.neutral.shape[0]}, "
        f"keep {keep.shape[0]} rows each): factorize with the keep list, combine, rank-{n} patch factors"
    )


def factorize_vs_dense(d: int, goal: float, n: int, m: int, reps: int) -> dict[str, dict]:
    """One layer at width d: the pack's factorization (cpca, k 100, alpha 0.5, auto moment; the solver it chooses) on n
    difference and m neutral rows, and at ROW_BUDGET_GOALS' widths also on the row budget a template run fills
    (extraction keeps at most MAX_ROWS rows of D and of E per layer), each against one dense eigendecomposition of the
    same C as a d x d float32 matrix (torch.linalg.eigh), all interleaved. At d <= 3072 also the pack's own dense
    solver (float64, from the moments; once), the exact alternative the size decides against. Figures by name."""
    cases = {f"factorize_vs_dense_d{d}": (n, m, goal)}
    if d in ROW_BUDGET_GOALS:
        cases[f"factorize_vs_dense_d{d}_row_budget"] = (defaults.MAX_ROWS, defaults.MAX_ROWS, ROW_BUDGET_GOALS[d])
    reps = min(reps, SLOW_REPS.get(d, reps))
    g = torch.Generator().manual_seed(1)
    variants, notes = {}, {}
    for name, (rows_d, rows_e, _) in cases.items():
        D = torch.randn(rows_d, d, generator=g) + 2 * torch.randn(d, generator=g)
        E = 3 * torch.randn(rows_e, d, generator=g)
        stats = RefusalStats((LayerStats("blocks.0.cross_attn.o", ("blocks.0.cross_attn.o",), D, E, D.mean(0)),), {})
        Dc, Ec = D - D.mean(0), E - E.mean(0)
        C = Dc.T @ Dc / rows_d - 0.5 * (Ec.T @ Ec) / rows_e
        factorize(stats)  # warm-up
        variants[f"{name}/ours"] = lambda s=stats: timed(factorize, s)[1]
        variants[f"{name}/dense"] = lambda c=C: timed(torch.linalg.eigh, c)[1]
        notes[name] = exact_dense_note(D, E) if d <= 3072 else ""
    times = paired.interleave(variants, reps)
    out = {}
    for name, (rows_d, rows_e, want) in cases.items():
        ours, dense = (statistics.median(times[f"{name}/{v}"]) for v in ("ours", "dense"))
        how = (
            f"one layer, median of {reps} paired ratios: {ours * 1e3:.0f} ms (span of {rows_d}+{rows_e} rows) / "
            f"{dense:.2f} s float32 dense eigh{notes[name]}"
        )
        out[name] = figure(None, want, how, paired.paired(times, f"{name}/ours", f"{name}/dense"))
    return out


def exact_dense_note(D: torch.Tensor, E: torch.Tensor) -> str:
    """'; the pack's exact dense solver (float64) ...' timed once: the exact alternative to the span."""
    layer = LayerStats("blocks.0.cross_attn.o", ("blocks.0.cross_attn.o",), as_moments(D), as_moments(E), D.mean(0))
    exact = timed(factorize, RefusalStats((layer,), {}))[1]
    return f"; the pack's exact dense solver (float64, once) {exact:.2f} s"


def sampling(model, forward, cond, latent, edit, state: dict, patch: dict, reps: int) -> dict[str, dict]:
    """Step time (one forward, batch 1, sigma 0.6) with the edit folded into the weights (as a full load does) and with
    runtime hooks, over the base model's, and the base model again as the control: the four interleaved, each
    figure the median of the repetitions' paired ratios (single steps spread by tens of % on shared cores)."""
    base_w = {k: state[k] for k in edit.directions()}
    folded, t_fold = timed(
        lambda: {
            k: torch.addmm(W, patch[f"{LORA_PREFIX}{k}.lora_up.weight"], patch[f"{LORA_PREFIX}{k}.lora_down.weight"])
            for k, W in base_w.items()
        }
    )
    modules = {k: model.get_submodule(k) for k in base_w}
    dirs = {k: d.float() for k, d in edit.directions().items()}

    def project(d):
        return lambda _m, a: (a[0] - (a[0] @ d)[..., None] * d,)

    def step(variant: str) -> float:
        handles = []
        if variant == "edit":
            for k, m in modules.items():
                m.weight = torch.nn.Parameter(folded[k], requires_grad=False)
        if variant == "hooks":
            handles = [m.register_forward_pre_hook(project(dirs[k])) for k, m in modules.items()]
        try:
            return timed(forward, cond, latent, 0.6)[1]
        finally:
            for h in handles:
                h.remove()
            for k, m in modules.items():
                m.weight = base_w[k]

    times = paired.interleave({v: lambda v=v: step(v) for v in ("base", "edit", "hooks", "control")}, reps)
    control = paired.paired(times, "control", "base")
    base = statistics.median(times["base"])
    return {
        "sampling_overhead_edit": figure(
            None,
            1.01,
            f"median of {reps} paired ratios; base step {base:.2f} s; edit folded in {t_fold:.2f} s (dense, as a full "
            "load does); control: the base model again",
            paired.paired(times, "edit", "base"),
            control,
        ),
        "sampling_overhead_runtime_hooks": figure(
            None,
            None,
            f"x - (x.d) d in a pre-hook on each of the {len(base_w)} edited layers",
            paired.paired(times, "hooks", "base"),
            control,
        ),
    }


if __name__ == "__main__":
    main()
