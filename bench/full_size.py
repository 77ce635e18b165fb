"""Wan at its real size inside a real ComfyUI on CPU: what the erasure part of the Wan 2.1 template costs.

    python -m bench.full_size [--out bench/full_size.json] [--tiny]    (from the repository's root: it uses tests/host)

1. A Wan 2.1 T2V 1.3B-shaped checkpoint (ComfyUI's WanModel keys and shapes: 30 blocks x 1536, 12 heads, ffn 8960,
   text 4096; random weights, fp16; written once into the cache, $REFUSAL_BENCH_CACHE or ~/.cache).
2. A headless ComfyUI (the provisioned host, --cpu) runs the template "erase a concept from Wan 2.1" up to its
   saved files, with the pack's defaults: UNETLoader, ModelSamplingSD3, Prompt Pairs (nudity), Extract, Factorize,
   its preview, Save Refusal Vector, Apply, Save Refusal As LoRA. The umt5-xxl text encoder (5.7 B parameters, its
   size fixed by ComfyUI) is replaced by the tests' MiniLM encoder mapped to umt5's 4096 channels and padded to
   umt5's 512 rows. Per node: seconds (wall clock between ComfyUI's "executing" messages) and the server's peak
   resident memory during the node (VmHWM, reset at every node); the size of every file the graph wrote. The
   residual ||W'd - (1 - s) Wd|| / ||Wd|| (s the edit's strength) on the weights ComfyUI computes with is checked by a
   test node.
3. Sampling: KSampler runs of --steps steps on the original model, on the edited one (ComfyUI's ModelPatcher, full
   load) and on the original again (the control), in rotating order for --rounds rounds, at the probe size; the step
   time is the wall clock between progress messages (the first step, which includes loading and patching, is left
   out). Step i of a round on the edited (or control) model over step i of that round on the original is one paired
   ratio; the figure is their median, with their spread, the control's, and the verdict against the goal 1.01 by
   bench/paired.py's rule (pass / FAIL / within noise).
4. Wan 14B's width (5120, 40 heads, ffn 13824) with 1 and 2 blocks: per-block costs, extrapolated to 40 blocks.

--tiny runs the same at toy sizes in seconds (the test of this script). Writes bench/full_size.json.
--gpu runs ComfyUI without --cpu on the machine's GPU and writes bench/full_size_gpu.json (meant for one NVIDIA GPU in
<= 5 minutes, writing the checkpoints included; not yet run); each node's memory is then the server's peak resident RAM
and the GPU memory its torch holds after the node (reserved, as ComfyUI's /system_stats reports it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import torch

from bench import paired
from testbed.progress import Progress
from tests.host import comfy_host
from tests.host.server import ComfyServer
from tests.host.ui_graph import to_api

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = ROOT / "example_workflows" / "erase a concept from Wan 2.1.json"
# the template's nodes that erase and save; its samplers, VAE and video nodes are measured apart (sampling) or left out
ERASURE = {
    "UNETLoader",
    "CLIPLoader",
    "ModelSamplingSD3",
    "PromptPairLoader",
    "ExtractRefusalVector",
    "LowRankFactorize",
    "PreviewImage",
    "SaveRefusalVector",
    "ApplyRefusalToModel",
    "SaveRefusalAsLoRA",
}
SHAPES = {
    "wan21_1.3B": dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan_14B_width": dict(dim=5120, ffn_dim=13824, num_heads=40),
}
TINY = {
    "wan21_1.3B": dict(dim=256, ffn_dim=512, num_heads=2, num_layers=2),
    "wan_14B_width": dict(dim=384, ffn_dim=768, num_heads=3),
}
BLOCKS_14B = (1, 2)
REAL_BLOCKS_14B = 40
UMT5_ROWS = 512  # ComfyUI pads Wan's umt5 context to 512 rows
FORMAT = 1  # of the cached checkpoints: bump when what they hold changes
SAMPLING_GOAL = 1.01  # a step on the edited model over one on the original
# sampling (rounds, steps) by device: a CPU step at 256 x 256 takes ~13 s, a GPU step well under one
SAMPLING = {"cpu": (3, 4), "gpu": (6, 8)}


def cache_dir() -> Path:
    return Path(os.environ.get("REFUSAL_BENCH_CACHE", Path.home() / ".cache" / "refusal-vector-unlearning" / "bench"))


def write_wan(path: Path, shape: dict, seed: int, progress: Progress) -> Path:
    """A Wan 2.1 T2V checkpoint of ComfyUI's WanModel keys and `shape`, random fp16 weights: linear weights
    N(0, 1 / fan_in), norm weights 1, biases N(0, 0.02^2). Written to a temporary name, then renamed."""
    if path.exists():
        return path
    comfy_host.import_host()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel
    from safetensors.torch import save_file

    model = WanModel(
        model_type="t2v",
        in_dim=16,
        out_dim=16,
        text_dim=4096,
        device="meta",
        operations=comfy.ops.disable_weight_init,
        **shape,
    )
    norms = {name for name, m in model.named_modules() if "norm" in type(m).__name__.lower()}
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    advance = progress.bar(sum(s.numel() for s in shapes.values()), f"writing {path.name}")
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, size in shapes.items():
        owner, _, leaf = key.rpartition(".")
        if owner in norms or "norm" in key:
            t = torch.ones(size) if leaf == "weight" else torch.zeros(size)
        elif len(size) >= 2:
            t = torch.randn(size, generator=g) * size[1:].numel() ** -0.5
        else:
            t = torch.randn(size, generator=g) * 0.02
        tensors[key] = t.half().contiguous()
        advance(size.numel())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    save_file(tensors, str(partial))
    partial.rename(path)
    return path


class Monitor:
    """ComfyUI's websocket messages with the time they arrived; at every "executing" message the server's peak
    resident memory since the last one is read (VmHWM) and the counter reset, so each node gets its own peak."""

    def __init__(self, server: ComfyServer, progress: Progress, gpu: bool = False):
        self.server, self.client_id, self.progress, self.gpu = server, uuid.uuid4().hex, progress, gpu
        self._bar: tuple[str, int, object] | None = None
        self.events: list[tuple[float, str, dict, dict]] = []
        self.graph_types: dict[str, str] = {}
        self.pid = server.proc.pid
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("could not connect to ComfyUI's websocket")

    def _memory(self) -> dict:
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = {
            line.split(":")[0]: int(line.split()[1])
            for line in status.splitlines()
            if line.startswith(("VmHWM", "VmRSS"))
        }
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            fields["reset"] = 0
        if self.gpu:
            fields["gpu_kib"] = self._gpu_kib()
        return fields

    def _gpu_kib(self) -> int | None:
        """GPU memory the server's torch holds now (ComfyUI's /system_stats: reserved by its caching allocator, which
        keeps what a node reserved until ComfyUI empties it); None where the server does not answer."""
        try:
            return self.server.get("/system_stats")["devices"][0]["torch_vram_total"] // 1024
        except (OSError, KeyError, IndexError, ValueError):
            return None

    async def _listen(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{self.server.url}/ws?clientId={self.client_id}", max_msg_size=0) as ws:
                self._ready.set()
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    memory = self._memory() if event.get("type") in ("executing", "execution_start") else {}
                    self.events.append((time.monotonic(), event.get("type", ""), event.get("data", {}), memory))
                    self._show(event.get("type", ""), event.get("data", {}))

    def _show(self, kind: str, data: dict) -> None:
        """ComfyUI's progress bars (extraction, sampling) on this terminal."""
        if kind != "progress":
            return
        key = (data.get("prompt_id"), data.get("node"), int(data.get("max", 0)))
        if self._bar is None or self._bar[0] != key:
            self._bar = (key, 0, self.progress.bar(key[2], f"  node {key[1]} ({self.graph_types.get(key[1], '?')})"))
        _, done, advance = self._bar
        value = int(data.get("value", 0))
        if value > done:
            advance(value - done)
            self._bar = (key, value, advance)

    def run(self, graph: dict, timeout: float) -> tuple[dict, list]:
        """Queue `graph`, wait for it; (history entry, this prompt's events)."""
        self.graph_types = {nid: node["class_type"] for nid, node in graph.items()}
        code, body = self.server.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        if code != 200 or body.get("node_errors"):
            raise RuntimeError(f"ComfyUI refused the graph: {json.dumps(body)[:2000]}")
        result = self.server.wait(body["prompt_id"], timeout)
        if result.get("status", {}).get("status_str") != "success":
            raise RuntimeError(
                f"the graph failed: {json.dumps(result.get('status'))[:3000]}\n{self.server.log.read_text()[-3000:]}"
            )
        time.sleep(0.5)  # the last messages may trail the history entry
        return result, [e for e in self.events if e[2].get("prompt_id") == body["prompt_id"]]


def per_node(events: list, graph: dict) -> list[dict]:
    """[{node, type, seconds, peak_mib, added_mib, rss_after_mib}] in the order the nodes ran: the server's peak
    resident memory during the node, that peak over the resident memory when the node started, and what stayed."""
    starts = [(t, data.get("node"), mem) for t, kind, data, mem in events if kind == "executing"]
    rows = []
    for (t0, node, before), (t1, _, mem) in zip(starts, starts[1:]):
        if node is None:
            continue
        mib = {k: mem.get(k, 0) / 1024 for k in ("VmHWM", "VmRSS")}
        row = {
            "node": node,
            "type": graph[node]["class_type"],
            "seconds": round(t1 - t0, 3),
            "peak_mib": round(mib["VmHWM"], 1),
            "added_mib": round(mib["VmHWM"] - before.get("VmRSS", 0) / 1024, 1),
            "rss_after_mib": round(mib["VmRSS"], 1),
        }
        if "gpu_kib" in mem:
            row["gpu_after_mib"] = None if mem["gpu_kib"] is None else round(mem["gpu_kib"] / 1024, 1)
        rows.append(row)
    return rows


def step_times(events: list, node: str) -> list[float]:
    """Seconds between a sampler's successive progress messages (steps 2..n)."""
    ts = [t for t, kind, data, _ in events if kind == "progress" and data.get("node") == node]
    return [b - a for a, b in zip(ts, ts[1:])]


def erasure_graph(unet: str, tag: str, tiny: bool, object_info: dict) -> dict:
    """The template's erasure nodes as an API prompt, the text encoder replaced, saving under bench/<tag>; plus the
    residual check on the edited model (a test node, reported apart)."""
    api = to_api(json.loads(TEMPLATE.read_text()), object_info)
    graph = {nid: node for nid, node in api.items() if node["class_type"] in ERASURE}
    for nid, node in graph.items():
        t, inp = node["class_type"], node["inputs"]
        if t == "UNETLoader":
            inp["unet_name"] = unet
        elif t == "CLIPLoader":
            graph[nid] = {"class_type": "RefusalTestMiniLMCLIPLoader", "inputs": {"pad_to": UMT5_ROWS}}
        elif t in ("SaveRefusalVector", "SaveRefusalAsLoRA"):
            inp["filename_prefix"] = f"bench/{tag}"
        elif t == "ExtractRefusalVector" and tiny:
            inp.update(width=64, height=64)
    ids = {graph[nid]["class_type"]: nid for nid in graph}
    graph["residual"] = {
        "class_type": "RefusalTestResidual",
        "inputs": {
            "edited": [ids["ApplyRefusalToModel"], 0],
            "reference": [ids["ModelSamplingSD3"], 0],
            "refusal_vector": [ids["LowRankFactorize"], 0],
        },
    }
    return graph


def sampling_graph(erasure: dict, model: list, seed: int, steps: int, size: int) -> dict:
    """A KSampler on `model` with the template's settings (uni_pc, simple, cfg 6) at `size`, its latent saved."""
    ids = {node["class_type"]: nid for nid, node in erasure.items()}
    clip = [ids["RefusalTestMiniLMCLIPLoader"], 0]
    outputs = {"residual", ids["PreviewImage"], ids["SaveRefusalVector"], ids["SaveRefusalAsLoRA"]}
    graph = {k: v for k, v in erasure.items() if k not in outputs}
    graph.update(
        {
            "pos": {
                "class_type": "CLIPTextEncode",
                "inputs": {"clip": clip, "text": "an unclothed woman walking along the beach at sunset"},
            },
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": "blurry, low quality"}},
            "lat": {
                "class_type": "EmptyHunyuanLatentVideo",
                "inputs": {"width": size, "height": size, "length": 1, "batch_size": 1},
            },
            "sampler": {
                "class_type": "KSampler",
                "inputs": {
                    "model": model,
                    "positive": ["pos", 0],
                    "negative": ["neg", 0],
                    "latent_image": ["lat", 0],
                    "seed": seed,
                    "steps": steps,
                    "cfg": 6.0,
                    "sampler_name": "uni_pc",
                    "scheduler": "simple",
                    "denoise": 1.0,
                },
            },
            "save": {
                "class_type": "SaveLatent",
                "inputs": {"samples": ["sampler", 0], "filename_prefix": f"bench/sample_{seed}"},
            },
        }
    )
    return graph  # the erasure nodes it needs are cached from the first graph


def written_files(base: Path, since: float) -> list[dict]:
    out = []
    for folder in ("models/refusal_vectors", "models/loras", "output", "temp"):
        for p in sorted((base / folder).rglob("*")):
            if p.is_file() and p.stat().st_mtime >= since:
                out.append({"file": p.relative_to(base).as_posix(), "bytes": p.stat().st_size})
    return out


def run_model(
    monitor: Monitor, base: Path, unet: str, tag: str, tiny: bool, timeout: float, progress: Progress
) -> tuple[dict, dict]:
    """(what the erasure graph cost and wrote, the graph)."""
    object_info = monitor.server.get("/object_info")
    graph = erasure_graph(unet, tag, tiny, object_info)
    progress.say(f"[full_size] {tag}: the template's erasure part ({len(graph) - 1} nodes)")
    since = time.time() - 1
    result, events = monitor.run(graph, timeout)
    rows = per_node(events, graph)
    residual = json.loads(result["outputs"]["residual"]["text"][0])
    check = [r for r in rows if r["node"] == "residual"]
    return {
        "unet": unet,
        "nodes": [r for r in rows if r["node"] != "residual"],
        "residual_check_seconds": check[0]["seconds"] if check else None,
        "residual_max": max(residual.values()),
        "edited_weights": len(residual),
        "files": written_files(base, since),
    }, graph


def sampling(
    monitor: Monitor, graph: dict, rounds: int, steps: int, size: int, timeout: float, progress: Progress
) -> dict:
    """KSampler runs on the original, the edited and the original model again (the control), in rotating order; the
    paired ratios of their steps (step i of a round over the original's step i), their spread and the verdict."""
    ids = {node["class_type"]: nid for nid, node in graph.items()}
    original = [ids["ModelSamplingSD3"], 0]
    models = {"original": original, "edited": [ids["ApplyRefusalToModel"], 0], "control": original}
    runs: dict[str, list[list[float]]] = {k: [] for k in models}
    for i, (rnd, name) in enumerate(paired.rotations(list(models), rounds)):
        progress.say(f"[full_size] sampling {steps} steps on the {name} model ({rnd + 1} of {rounds})")
        # a seed of its own per run: ComfyUI would answer a graph it ran before from its cache
        g = sampling_graph(graph, models[name], seed=100 + i, steps=steps, size=size)
        _, events = monitor.run(g, timeout)
        runs[name].append(step_times(events, "sampler"))
    ratios = {
        k: [a / b for run, base in zip(runs[k], runs["original"]) for a, b in zip(run, base)]
        for k in ("edited", "control")
    }
    edited, control = paired.spread(ratios["edited"]), paired.spread(ratios["control"])
    times = {k: [t for run in v for t in run] for k, v in runs.items()}
    return {
        "steps_per_run": steps,
        "rounds": rounds,
        "size": size,
        "step_seconds": times,
        "median_step_seconds": {k: statistics.median(v) for k, v in times.items()},
        "edited_over_original": edited["median"],
        "spread": edited,
        "control": control,
        "goal": SAMPLING_GOAL,
        "verdict": paired.verdict(edited["median"], SAMPLING_GOAL, edited, control),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="default bench/full_size.json, with --gpu bench/full_size_gpu.json")
    ap.add_argument("--tiny", action="store_true", help="toy sizes: a check that the script runs, in seconds")
    ap.add_argument("--gpu", action="store_true", help="ComfyUI on the machine's GPU (without --cpu)")
    ap.add_argument(
        "--rounds",
        type=int,
        help=f"sampling rounds: original, edited, original again in rotating order (default {SAMPLING['cpu'][0]}, "
        f"with --gpu {SAMPLING['gpu'][0]})",
    )
    ap.add_argument(
        "--steps",
        type=int,
        help=f"KSampler steps per sampling run (default {SAMPLING['cpu'][1]}, with --gpu {SAMPLING['gpu'][1]})",
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: torch sees no CUDA GPU on this machine")
    rounds, steps = SAMPLING["gpu" if args.gpu else "cpu"]
    args.rounds, args.steps = args.rounds or rounds, args.steps or steps
    args.out = args.out or str(ROOT / "bench" / ("full_size_gpu.json" if args.gpu else "full_size.json"))
    progress = Progress(args.quiet)
    if comfy_host.missing_reason():
        raise SystemExit(
            f"no ComfyUI host: {comfy_host.missing_reason()} (scripts/provision_comfyui.sh provisions one)"
        )
    shapes = TINY if args.tiny else SHAPES
    cache = cache_dir() / ("tiny" if args.tiny else "")
    files = {
        "wan21_1.3B": write_wan(cache / f"wan21_1.3B_shape_v{FORMAT}.safetensors", shapes["wan21_1.3B"], 0, progress)
    }
    for n in BLOCKS_14B:
        files[f"wan_14B_width_{n}"] = write_wan(
            cache / f"wan_14B_width_{n}_blocks_v{FORMAT}.safetensors",
            {**shapes["wan_14B_width"], "num_layers": n},
            n,
            progress,
        )
    timeout = 600 if args.tiny else 7200
    wall0 = time.monotonic()
    report = {"run": machine(args)}
    # each model in a server of its own, so that every node's peak memory holds that model only
    with host(files["wan21_1.3B"], progress, args.gpu) as (monitor, base):
        report["run"]["device"] = device_name(monitor.server, args.gpu)
        small, graph = run_model(monitor, base, files["wan21_1.3B"].name, "wan21_1.3B", args.tiny, timeout, progress)
        report["wan21_1.3B"] = {**small, "shape": shapes["wan21_1.3B"]}
        report["wan21_1.3B"]["sampling"] = sampling(
            monitor, graph, args.rounds, args.steps, 64 if args.tiny else 256, timeout, progress
        )
    wide = {}
    for n in BLOCKS_14B:
        with host(files[f"wan_14B_width_{n}"], progress, args.gpu) as (monitor, base):
            wide[str(n)], _ = run_model(
                monitor, base, files[f"wan_14B_width_{n}"].name, f"wan_14B_width_{n}", args.tiny, timeout, progress
            )
    report["wan_14B_width"] = {"shape": shapes["wan_14B_width"], "blocks": wide, "per_block": per_block(wide)}
    report["run"]["wall_seconds"] = round(time.monotonic() - wall0, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    progress.say(f"[full_size] wrote {args.out} in {report['run']['wall_seconds']:.0f} s")


@contextlib.contextmanager
def host(checkpoint: Path, progress: Progress, gpu: bool = False):
    """A fresh headless ComfyUI in a temporary base directory with `checkpoint` in models/diffusion_models; on the
    CPU (--cpu) unless gpu."""
    with tempfile.TemporaryDirectory(prefix="refusal-full-size-") as tmp:
        base = Path(tmp)
        server = ComfyServer(base, cpu=not gpu)
        (base / "models" / "diffusion_models" / checkpoint.name).symlink_to(checkpoint)
        server.start()
        try:
            yield Monitor(server, progress, gpu), base
        finally:
            server.stop()


# the nodes whose cost grows with the model's depth; the text encoder and the prompt pairs do not see the model
DEPTH = (
    "UNETLoader",
    "ExtractRefusalVector",
    "LowRankFactorize",
    "SaveRefusalVector",
    "ApplyRefusalToModel",
    "SaveRefusalAsLoRA",
)


def per_block(wide: dict) -> dict:
    """The cost of one more block (2 blocks - 1 block) and at 40 blocks = 1 block + 39 x that: seconds per node
    that sees the model, the server's peak resident memory over the run, the size of each saved file."""
    one, two = wide[str(BLOCKS_14B[0])], wide[str(BLOCKS_14B[1])]
    span, more = BLOCKS_14B[1] - BLOCKS_14B[0], REAL_BLOCKS_14B - BLOCKS_14B[0]

    def line(a: float, b: float) -> dict:
        step = (b - a) / span
        return {"one_block": a, "per_block": step, "at_40": a + more * step}

    seconds = {r["type"]: r["seconds"] for r in two["nodes"]}
    out = {
        "seconds": {r["type"]: line(r["seconds"], seconds[r["type"]]) for r in one["nodes"] if r["type"] in DEPTH},
        "peak_mib": line(*(max(r["peak_mib"] for r in w["nodes"]) for w in (one, two))),
        "file_bytes": {},
    }
    sizes = {f["file"].split("/")[1]: f["bytes"] for f in two["files"] if f["file"].startswith("models/")}
    for f in one["files"]:
        if f["file"].startswith("models/"):
            kind = f["file"].split("/")[1]
            out["file_bytes"][kind] = line(f["bytes"], sizes[kind])
    return out


def machine(args) -> dict:
    import platform

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "torch": torch.__version__,
        "tiny": args.tiny,
        "gpu": args.gpu,
        "comfyui": comfy_version(),
    }


def device_name(server: ComfyServer, gpu: bool) -> str:
    """The device ComfyUI computes on, as it reports it; refuses a GPU run that ComfyUI put on the CPU."""
    device = server.get("/system_stats")["devices"][0]
    if gpu and device["type"] != "cuda":
        raise SystemExit(f"--gpu, but ComfyUI computes on {device['name']}")
    return device["name"]


def comfy_version() -> str:
    path = comfy_host.comfy_path() / "comfyui_version.py"
    return path.read_text().split('"')[1] if path.exists() else "unknown"


if __name__ == "__main__":
    main()
