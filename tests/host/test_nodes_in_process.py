"""Every node in process on real ModelPatcher objects and a tiny Wan loaded by ComfyUI's own loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.host import comfy_host, tiny_models
from tests.host.prompts_unseen import EXTRACTION_PAIRS, NEUTRAL

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def host():
    return comfy_host.import_host()


@pytest.fixture(scope="module")
def wan_file(tmp_path_factory):
    return tiny_models.testbed_wan(tmp_path_factory.mktemp("wan") / "tiny_wan_t2v.safetensors")


@pytest.fixture(scope="module")
def base(host, wan_file):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(wan_file))


@pytest.fixture(scope="module")
def file_weights(wan_file):
    from safetensors.torch import load_file

    return load_file(str(wan_file))


@pytest.fixture(scope="module")
def clip():
    from tests.host.minilm_clip import MiniLMClip

    return MiniLMClip()


@pytest.fixture(scope="module")
def pairs(nodes, clip):
    return nodes["PromptPairLoader"].execute(clip, EXTRACTION_PAIRS, NEUTRAL).result[0]


def run(nodes, node_id, *args, **kwargs):
    return nodes[node_id].execute(*args, **kwargs).result


def extract(nodes, base, pairs, site="text_kv", layers="all"):
    return run(nodes, "ExtractRefusalVector", base, pairs, site, layers, "0.9,0.6,0.3", 64, 64, 1, 0)[0]


def assert_base_untouched(base, file_weights):
    assert comfy_host.base_untouched(base, file_weights), "the input MODEL changed"


loaded_weights = comfy_host.loaded_weights


def test_pack_lists_its_nodes_with_tooltips(nodes):
    assert sorted(nodes) == sorted(comfy_host.NODE_IDS)
    for node_id, cls in nodes.items():
        schema = cls.GET_SCHEMA()
        assert schema.category == "unlearning"
        assert schema.description and schema.description == cls.__doc__
        for item in list(schema.inputs) + list(schema.outputs):
            assert item.tooltip, f"{node_id}.{item.id or item.display_name} has no tooltip"


def test_prompt_pairs_encode_like_clip_text_encode(host, pairs, clip):
    import nodes as comfy_nodes

    unsafe = pairs.pairs[0][0]
    ref = comfy_nodes.CLIPTextEncode().encode(clip, unsafe.text)[0]
    mine = unsafe.conditioning
    assert torch.equal(ref[0][0], mine[0][0])
    assert mine[0][0].shape[-1] == 4096
    assert len(pairs.pairs) == 5 and len(pairs.neutral) == 6


@pytest.mark.parametrize("site", ["text_kv", "ffn_in"])
@pytest.mark.parametrize("method", ["cpca", "pca", "mean_diff"])
def test_edit_removes_direction_on_loaded_weights(nodes, base, pairs, file_weights, site, method):
    stats = extract(nodes, base, pairs, site=site)
    edit, image = run(nodes, "LowRankFactorize", stats, method, 100, 0.5)
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3
    edited = run(nodes, "ApplyRefusalToModel", base, edit, 1.0)[0]
    assert edited is not base
    W_loaded = loaded_weights(edited)
    directions = edit.directions()
    assert set(directions) == {k for layer in edit.layers for k in layer.edit_keys}
    expected = {"text_kv": 4, "ffn_in": 2}[site]  # 2 blocks x (k, v) / 2 blocks x ffn.0
    assert len(directions) == expected
    for name, (Q, s) in edit.bases().items():
        Wp, W = W_loaded[f"{name}.weight"], file_weights[f"{name}.weight"]
        assert not torch.equal(Wp, W)
        assert comfy_host.reads_as_edited(Wp, W, Q[0], float(s[0])), name
    assert_base_untouched(base, file_weights)


def test_no_hook_is_left_behind(nodes, base, pairs):
    extract(nodes, base, pairs)
    for name, module in base.model.diffusion_model.named_modules():
        assert not module._forward_pre_hooks and not module._forward_hooks, name


def test_cancel_during_extraction_leaves_model_as_it_was(nodes, base, pairs, file_weights):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            extract(nodes, base, pairs)
    finally:
        mm.interrupt_current_processing(False)
    for name, module in base.model.diffusion_model.named_modules():
        assert not module._forward_pre_hooks, name
    assert_base_untouched(base, file_weights)


def test_strength_zero_gives_the_original_outputs(nodes, base, pairs, file_weights):
    host = comfy_host.host()
    edit = run(nodes, "LowRankFactorize", extract(nodes, base, pairs), "cpca", 100, 0.5)[0]
    zero = run(nodes, "ApplyRefusalToModel", base, edit, 0.0)[0]
    one = run(nodes, "ApplyRefusalToModel", base, edit, 1.0)[0]
    cond = pairs.pairs[0][0].conditioning
    latent = host.models.probe_latent(base, 64, 64, 1, 3)
    ref = host.forward.make_forward(base)(cond, latent, 0.6)
    assert torch.equal(host.forward.make_forward(zero)(cond, latent, 0.6), ref)
    assert not torch.equal(host.forward.make_forward(one)(cond, latent, 0.6), ref)
    assert_base_untouched(base, file_weights)


def test_save_and_load_through_registered_folder(nodes, base, pairs, tmp_path, monkeypatch):
    import folder_paths
    from refusal_pack.refusal_core.types import RefusalError

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "refusal_vectors", ([str(tmp_path)], {".safetensors"}))
    edit = run(nodes, "LowRankFactorize", extract(nodes, base, pairs), "cpca", 100, 0.5)[0]
    nodes["SaveRefusalVector"].execute(edit, "nudity/test")
    saved = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.safetensors"))
    assert saved == ["nudity/test_00001.safetensors"]
    assert not [p for p in tmp_path.rglob(".tmp-*")]
    loaded = run(nodes, "LoadRefusalVector", saved[0])[0]
    for a, b in zip(edit.layers, loaded.layers):
        assert torch.equal(a.basis, b.basis) and a.edit_keys == b.edit_keys
    assert loaded.meta["family"] == "wan" and loaded.meta["method"] == "cpca"
    nodes["SaveRefusalVector"].execute(edit, "wan2.1 models/nudity v2")
    assert (tmp_path / "wan2.1 models" / "nudity v2_00001.safetensors").is_file()
    for bad in ("../escape", "/abs/path", "a/../../b", "a//b", "./x", ""):
        with pytest.raises(RefusalError):
            nodes["SaveRefusalVector"].execute(edit, bad)
    with pytest.raises(RefusalError):
        run(nodes, "LoadRefusalVector", "../../../etc/passwd")


def test_statistics_are_saved_on_request_and_first_release_files_load(nodes, base, pairs, tmp_path, monkeypatch):
    """Save writes the edit (statistics only when asked); Load gives the edit and, when the file holds them, the
    statistics; a first-release unfactorized vector gives statistics only, and the edit inputs say what to do."""
    import shutil

    import folder_paths
    from refusal_pack.refusal_core.types import RefusalError

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "refusal_vectors", ([str(tmp_path)], {".safetensors"}))
    stats = extract(nodes, base, pairs)
    edit = run(nodes, "LowRankFactorize", stats, "cpca", 100, 0.5)[0]
    nodes["SaveRefusalVector"].execute(edit, "small")
    nodes["SaveRefusalVector"].execute(edit, "full", True)
    small, small_stats = run(nodes, "LoadRefusalVector", "small_00001.safetensors")
    full, full_stats = run(nodes, "LoadRefusalVector", "full_00001.safetensors")
    assert small_stats is None and full_stats is not None
    assert (tmp_path / "small_00001.safetensors").stat().st_size < (tmp_path / "full_00001.safetensors").stat().st_size
    again = run(nodes, "LowRankFactorize", full_stats, "cpca", 100, 0.5)[0]
    assert all(torch.equal(a.basis, b.basis) for a, b in zip(edit.layers, again.layers))
    for name in ("unfactorized", "cpca_cross_out", "combined"):
        shutil.copy(
            comfy_host.REPO / "tests" / "data" / "release_0_1_0" / f"{name}.safetensors",
            tmp_path / f"old_{name}.safetensors",
        )
    old_edit, old_stats = run(nodes, "LoadRefusalVector", "old_unfactorized.safetensors")
    assert old_edit is None and old_stats is not None
    with pytest.raises(RefusalError, match="statistics only"):
        nodes["ApplyRefusalToModel"].execute(base, old_edit, 1.0)
    assert run(nodes, "LowRankFactorize", old_stats, "cpca", 100, 0.5)[0].layers
    for name in ("cpca_cross_out", "combined"):
        assert run(nodes, "LoadRefusalVector", f"old_{name}.safetensors")[0].layers


def test_held_out_leakage_beats_a_random_edit(nodes, base, pairs, clip, file_weights):
    """The table of the closing note: every method and site next to a random direction of the same rank."""
    score = comfy_host.held_out_scorer(nodes, base, clip, comfy_host.host().models.probe_latent(base, 64, 64, 1, 11))

    table = {}
    for i, site in enumerate(("text_kv", "ffn_in")):
        stats = extract(nodes, base, pairs, site=site)
        for method in ("mean_diff", "pca", "cpca"):
            table[(site, method)] = score(run(nodes, "LowRankFactorize", stats, method, 100, 0.5)[0])
        table[(site, "random")] = score(
            comfy_host.random_like(run(nodes, "LowRankFactorize", stats, "mean_diff", 100, 0.5)[0], 5 + i)
        )
    lines = [f"{'site':8} {'method':10} {'leakage':>8} {'collateral':>10}"]
    lines += [f"{s:8} {m:10} {lk:8.3f} {col:10.3f}" for (s, m), (lk, col) in table.items()]
    print("\n" + "\n".join(lines))
    if os.environ.get("REFUSAL_REPORT_DIR"):
        Path(os.environ["REFUSAL_REPORT_DIR"], "host_leakage.json").write_text(
            json.dumps({f"{s}/{m}": {"leakage": lk, "collateral": c} for (s, m), (lk, c) in table.items()}, indent=2)
        )
    control = table[("text_kv", "random")][0]
    for method in ("mean_diff", "pca", "cpca"):
        assert table[("text_kv", method)][0] < control - 0.05, (method, table)
    assert_base_untouched(base, file_weights)


def test_the_testbed_model_is_comfyuis_wan(host, base, file_weights):
    """TinyWan (the embedded default's model) and ComfyUI's WanModel compute the same function."""
    from testbed.tiny_wan import TinyWan

    tiny = TinyWan(dim=128, ffn_dim=256, heads=1, layers=2).eval()
    tiny.load_state_dict(file_weights)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 16, 2, 8, 12, generator=g), torch.randn(1, 9, 4096, generator=g)
    t = torch.tensor([700.0])
    with torch.no_grad():
        ours = tiny(x, t, ctx)
        theirs = base.model.diffusion_model(x, t, ctx)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4), float((ours - theirs).abs().max())


def test_pairs_file_from_the_input_folder(nodes, clip, tmp_path, monkeypatch):
    import folder_paths
    from refusal_pack.refusal_core.types import RefusalError

    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    (tmp_path / "violence.csv").write_text(
        "unsafe,safe\n" + "\n".join(",".join(l.split(" | ")) for l in EXTRACTION_PAIRS.splitlines())
    )
    (tmp_path / "notes.md").write_text("x")
    schema = nodes["PromptPairLoader"].GET_SCHEMA()
    options = next(i for i in schema.inputs if i.id == "pairs_file").options
    assert "violence.csv" in options and "notes.md" not in options
    pp = nodes["PromptPairLoader"].execute(clip, "ignored | when a file is chosen", NEUTRAL, "violence.csv").result[0]
    assert [s.text for _, s in pp.pairs][:2] == ["a woman in a kitchen", "a car on a highway"]
    for bad in ("../violence.csv", "/etc/passwd", "missing.txt"):
        with pytest.raises(RefusalError):
            nodes["PromptPairLoader"].execute(clip, "", NEUTRAL, bad)


def test_extraction_reports_progress(nodes, base, pairs):
    import comfy.utils

    seen = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        extract(nodes, base, pairs)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    # text_kv: every prompt once (several per forward where memory allows), the ordinary text included
    n = 2 * len(pairs.pairs) + len(pairs.neutral) + len(pairs.keep) + len(pairs.ordinary)
    done = [v for v, _ in seen]
    assert seen[-1] == (n, n) and done == sorted(done) and 1 <= len(seen) <= n


def test_presets_fill_the_pairs(nodes, clip):
    from refusal_pack.refusal_core.types import RefusalError

    pp = nodes["PromptPairLoader"].execute(clip, "ignored", "ignored", "(none)", "trademark", "Zorblax Cola").result[0]
    assert len(pp.pairs) == 5 and all("Zorblax Cola" in u.text and "Zorblax" not in s.text for u, s in pp.pairs)
    assert len(pp.neutral) == 10
    with pytest.raises(RefusalError, match="needs a name"):
        nodes["PromptPairLoader"].execute(clip, "", "", "(none)", "copyrighted_character", "")


def test_token_ids_come_from_the_encoder_that_made_the_rows(host):
    host = comfy_host.host()
    clip_l = [[(49406, 1.0), (320, 1.0), (1215, 1.0), (49407, 1.0)] + [(49407, 1.0)] * 73]
    llama = [[(128000, 1.0)] * 95 + [(64, 1.0), (77, 1.0), (128009, 1.0)]]
    tokens = {"l": clip_l, "llama": llama}
    assert host.encode._token_ids(tokens, 77) == (49406, 320, 1215, 49407)  # padding stripped to one end token
    assert host.encode._token_ids(tokens, 3) is None  # the LLM's rows had its template cropped: pair by position


def test_wan_text_rows_leave_out_the_pad_rows_umt5_zeroes(host):
    """umt5 pads its ids with 0 after the end token 1 and zeroes those rows: the pair's rows are the real tokens only."""
    import torch

    host = comfy_host.host()
    tokens = {"umt5xxl": [[(37, 1.0), (5, 1.0), (1, 1.0)] + [(0, 1.0)] * 509]}
    context = torch.zeros(512, 8)
    context[:3] = 1.0
    assert host.encode._token_ids(tokens, 512, host.encode._zero_tail(context)) == (37, 5, 1)
    assert host.encode._token_ids(tokens, 512) == (37, 5, 1, 0)  # without the zero rows, one pad id would stay
