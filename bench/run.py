"""Speed and memory of the method, as ratios measured side by side in one run (pure torch, no ComfyUI).

    python -m bench.run [--threads 1 --size 128 --text-len 32 --batch 4 --reps 3]

Model: TinyWan (testbed/tiny_wan.py: the math and key names of ComfyUI's WanModel) at
the Wan 2.1 1.3B shape (dim 1536, 30 blocks, ffn 8960, 12 heads, text_dim 4096), random weights,
fp32, CPU. Site: Wan's default (text_kv: blocks.N.cross_attn.k and .v, all 30 blocks = 60 edited
weights, text-token rows; every block reads the same text context, so its rows are taken once). Prompts: the pack's 5 default pairs + 10 neutral prompts (20 forwards
at one sigma; the node reads three, which triples both sides of the extraction ratio). Conditioning: one random 4096-wide row per word plus
an end token, padded with zero rows to --text-len as ComfyUI pads Wan's umt5 output (to 512);
the default 32 keeps the run short, and padding only adds the same k/v rows to both sides of every
ratio. The factorization is timed at dims 1536, 3072 and 5120 (Wan 1.3B, 5B, 14B) on rows of the same counts, and at
1536 on the row budget a template run fills.
Times are this process's CPU seconds (see timed). Prints a table with each figure's goal and writes
bench/results.json (each figure with its goal and how it was measured; docs/results.md is made from it).
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
    ap.add_argument("--reps", type=int, default=9, help="interleaved repetitions of each sampling step")
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
    conds = [e.conditioning for pair in pp.pairs for e in pair] + [e.conditioning for e in pp.neutral]
    groups = [conds[i : i + args.batch] for i in range(0, len(conds), args.batch)]

    def bare_pass() -> None:  # the forwards extraction runs, batched the same way, without hooks
        for g in groups:
            forward(torch.cat(g), latent.expand(len(g), *latent.shape[1:]), 0.9)

    forward(torch.cat(groups[0]), latent.expand(len(groups[0]), *latent.shape[1:]), 0.9)  # warm-up
    rows = {}
    reset_peak()
    rss0 = proc_kib("VmRSS")
    _, t_bare0 = timed(bare_pass)
    bare_peak = proc_kib("VmHWM") - rss0
    blocks = site.blocks(name for name, _ in model.named_modules())
    peak_ok = reset_peak()
    rss0 = proc_kib("VmRSS")
    settings = ExtractSettings(site, blocks, [defaults.SIGMAS[0]], "wan", batch_size=args.batch)
    stats, t_extract = timed(extract_refusal_stats, model, forward, pp, latent, settings)
    extract_peak = proc_kib("VmHWM") - rss0
    _, t_bare1 = timed(bare_pass)  # bare passes before and after: their mean brackets drifts of the machine's load
    t_bare = (t_bare0 + t_bare1) / 2
    rows["extraction_overhead"] = (
        t_extract / t_bare,
        1.15,
        f"{t_extract:.1f} s / {t_bare:.1f} s bare (mean of {t_bare0:.1f}, {t_bare1:.1f}; "
        f"{len(conds)} prompts in {len(groups)} forwards of <= {args.batch})",
    )
    rows["extraction_peak_memory_ratio"] = (
        extract_peak * 1024 / model_bytes,
        None,
        f"{extract_peak / 1024:.0f} MiB over the resident model; bare forwards {bare_peak / 1024:.0f} MiB"
        + ("" if peak_ok else " (peak counter not resettable: includes the build)"),
    )

    edit, t_fact = timed(factorize, stats)
    layer = stats.layers[0]
    print(
        f"factorize, dim 1536, {len(stats.layers)} layers (D {layer.diffs.shape[0]} rows, E {layer.neutral.shape[0]} rows): {t_fact:.2f} s"
    )
    n, m = layer.diffs.shape[0], layer.neutral.shape[0]
    for d, goal in FACTORIZE_WIDTHS:
        ratio, how = factorize_vs_dense(d, n, m, exact_dense=d <= 3072)
        rows[f"factorize_vs_dense_d{d}"] = (ratio, goal, f"one layer: {how}")
    # the row budget a template run fills (extraction keeps at most MAX_ROWS rows of D and of E per layer)
    ratio, how = factorize_vs_dense(1536, defaults.MAX_ROWS, defaults.MAX_ROWS, exact_dense=True)
    rows["factorize_vs_dense_d1536_row_budget"] = (ratio, None, f"one layer: {how}")

    # apply: the rank-1 factors of every edited weight (what ApplyRefusalToModel hands to ComfyUI)
    state = {n[: -len(".weight")]: p for n, p in model.named_parameters() if n.endswith(".weight")}
    patch, t_apply = timed(lora_state_dict, state.__getitem__, edit, 1.0)
    patch_bytes = sum(t.numel() * t.element_size() for k, t in patch.items() if not k.endswith(".alpha"))
    rows["apply_seconds"] = (t_apply, None, f"{len(edit.directions())} weights, rank-1 factors, no dense copy")
    rows["patch_bytes_ratio"] = (
        patch_bytes / model_bytes,
        0.01,
        f"{patch_bytes / 1024:.0f} KiB / {model_bytes / 2**30:.2f} GiB",
    )

    many, how = erase_at_once(stats, state, CHARACTERS)
    rows[f"erase_{CHARACTERS}_at_once_seconds"] = (many, 10.0, how)

    base_w = {k: state[k] for k in edit.directions()}
    folded, t_fold = timed(
        lambda: {
            k: torch.addmm(W, patch[f"{LORA_PREFIX}{k}.lora_up.weight"], patch[f"{LORA_PREFIX}{k}.lora_down.weight"])
            for k, W in base_w.items()
        }
    )
    ratios = sampling_ratios(model, forward, pp.neutral[0].conditioning, latent, edit, base_w, folded, args.reps)
    rows["sampling_overhead_edit"] = (
        ratios["edit"],
        1.01,
        f"median of {args.reps} paired ratios; base step {ratios['t_base']:.2f} s (its runs spread "
        f"{ratios['spread']:.0%}; base vs itself {ratios['control']:.3f}); edit folded in {t_fold:.2f} s (dense, as a full load does)",
    )
    rows["sampling_overhead_runtime_hooks"] = (
        ratios["hooks"],
        None,
        f"x - (x.d) d in a pre-hook on each of the {len(base_w)} edited layers",
    )

    order = [
        "extraction_overhead",
        *(f"factorize_vs_dense_d{d}" for d, _ in FACTORIZE_WIDTHS),
        "factorize_vs_dense_d1536_row_budget",
        "sampling_overhead_edit",
        "sampling_overhead_runtime_hooks",
        "patch_bytes_ratio",
        "apply_seconds",
        f"erase_{CHARACTERS}_at_once_seconds",
        "extraction_peak_memory_ratio",
    ]
    print("\n| figure | value | goal | pass | measured |\n|---|---|---|---|---|")
    for key in order:
        value, goal, note = rows[key]
        verdict = "-" if goal is None else ("pass" if value <= goal else "FAIL")
        print(f"| {key} | {value:.4g} | {'-' if goal is None else f'<= {goal:g}'} | {verdict} | {note} |")
    figures = {k: {"value": float(rows[k][0]), "goal": rows[k][1], "how": rows[k][2]} for k in order}
    meta = {
        "threads": args.threads,
        "layers": args.layers,
        "batch": args.batch,
        "size": args.size,
        "text_len": args.text_len,
        "factorize_widths": [d for d, _ in FACTORIZE_WIDTHS],
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps({"figures": figures, "run": meta}, indent=2) + "\n")
    print(f"\nwrote {args.out}; wall time {time.perf_counter() - wall0:.0f} s")


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


def factorize_vs_dense(d: int, n: int, m: int, exact_dense: bool) -> tuple[float, str]:
    """One layer at width d with n difference rows and m neutral rows: the pack's factorization (cpca, k 100,
    alpha 0.5, auto moment; the solver it chooses) against one dense eigendecomposition of the same C as a d x d
    float32 matrix (torch.linalg.eigh). exact_dense: also against the pack's own dense solver (float64, from the
    moments), the exact alternative the size decides against. Returns (ratio to float32 eigh, how)."""
    g = torch.Generator().manual_seed(1)
    D = torch.randn(n, d, generator=g) + 2 * torch.randn(d, generator=g)
    E = 3 * torch.randn(m, d, generator=g)
    stats = RefusalStats((LayerStats("blocks.0.cross_attn.o", ("blocks.0.cross_attn.o",), D, E, D.mean(0)),), {})
    factorize(stats)  # warm-up
    ours = statistics.median(timed(factorize, stats)[1] for _ in range(5))
    Dc, Ec = D - D.mean(0), E - E.mean(0)
    C = Dc.T @ Dc / n - 0.5 * (Ec.T @ Ec) / m
    dense = statistics.median(timed(torch.linalg.eigh, C)[1] for _ in range(3 if d <= 3072 else 1))
    how = f"{ours * 1e3:.0f} ms (span of {n}+{m} rows) / {dense:.2f} s float32 dense eigh"
    if exact_dense:
        mo = RefusalStats(
            (LayerStats("blocks.0.cross_attn.o", ("blocks.0.cross_attn.o",), as_moments(D), as_moments(E), D.mean(0)),),
            {},
        )
        exact = timed(factorize, mo)[1]
        how += f"; the pack's exact dense solver (float64) {exact:.2f} s, {ours / exact:.2f} of it"
    return ours / dense, how


def sampling_ratios(model, forward, cond, latent, edit, base_w, folded, reps) -> dict[str, float]:
    """Step time (one forward, batch 1, sigma 0.6) of edit folded / runtime hooks / base again over base: the four run back to
    back in rotating order, and the median over repetitions of each repetition's ratio (neighbouring runs see
    the same load from other work on the machine; single steps spread by tens of % here)."""
    modules = {k: model.get_submodule(k) for k in base_w}
    # "control" is the base model again: its ratio to base shows how far two identical steps differ here
    times: dict[str, list[float]] = {"base": [], "edit": [], "hooks": [], "control": []}
    dirs = {k: d.float() for k, d in edit.directions().items()}

    def project(d):
        return lambda _m, a: (a[0] - (a[0] @ d)[..., None] * d,)

    for rep in range(reps):
        names = list(times)
        for variant in names[rep % 4 :] + names[: rep % 4]:
            handles = []
            if variant == "edit":
                for k, m in modules.items():
                    m.weight = torch.nn.Parameter(folded[k], requires_grad=False)
            if variant == "hooks":
                handles = [m.register_forward_pre_hook(project(dirs[k])) for k, m in modules.items()]
            try:
                times[variant].append(timed(forward, cond, latent, 0.6)[1])
            finally:
                for h in handles:
                    h.remove()
                for k, m in modules.items():
                    m.weight = base_w[k]
    ratio = {k: statistics.median(t / b for t, b in zip(times[k], times["base"])) for k in ("edit", "hooks", "control")}
    return {**ratio, "t_base": statistics.median(times["base"]), "spread": max(times["base"]) / min(times["base"]) - 1}


if __name__ == "__main__":
    main()
