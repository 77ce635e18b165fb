import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.file_format import save_refusal_edit
from refusal_core.presets import default_texts, held_out, load_preset, pairs_text, preset_keep, preset_names
from refusal_core.prompts import parse_pair_lines, parse_prompt_lines, validate_pairs
from refusal_core.types import EncodedPrompt, PromptPairs, RefusalError
from testbed.tiny_wan import TinyWan, init_random

ROOT = Path(__file__).resolve().parents[2]


def test_every_preset_is_five_valid_pairs():
    assert set(preset_names()) == {"nudity", "graphic_violence", "copyrighted_character", "trademark", "public_figure"}
    for name in preset_names():
        pairs, neutral = load_preset(name, "Zorblax")
        assert len(pairs) == 5
        validate_pairs(pairs, neutral, preset_keep(name))
        assert all("{" not in p.unsafe + p.safe for p in pairs) and all("{" not in t for t in preset_keep(name))
    # only the character preset keeps look-alikes (the testbed measured it; brands and people have no look-alikes there)
    assert {name for name in preset_names() if preset_keep(name)} == {"copyrighted_character"}
    assert all("Zorblax" in p.unsafe and "Zorblax" not in p.safe for p in load_preset("trademark", "Zorblax")[0])
    pairs, neutral = default_texts()
    assert load_preset("nudity")[0] == parse_pair_lines(pairs) and load_preset("nudity")[1] == parse_prompt_lines(
        neutral
    )
    held_pairs, held_neutral = held_out("nudity")
    validate_pairs(held_pairs, held_neutral)
    assert not set(held_pairs) & set(load_preset("nudity")[0])  # held out: none of the extraction pairs
    with pytest.raises(RefusalError, match="no held-out"):
        held_out("trademark")
    assert pairs_text(held_pairs).count(" | ") == len(held_pairs)
    with pytest.raises(RefusalError, match="needs a name"):
        load_preset("public_figure", " ")
    with pytest.raises(RefusalError, match="does not exist"):
        load_preset("weapons")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = init_random(TinyWan(dim=64, ffn_dim=128, heads=1, layers=2), 0).eval()
    base = d / "wan.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(base))
    g = torch.Generator().manual_seed(0)
    vocab = torch.randn(50, 4096, generator=g)

    def enc(t):
        ids = tuple(sum(map(ord, w)) % 50 for w in t.split())
        return EncodedPrompt(t, ids, vocab[list(ids)][None])

    pp = PromptPairs.from_texts(*load_preset("nudity"), enc)

    def forward(cond, noise, sigma):
        with torch.no_grad():
            return model(sigma * noise, torch.tensor([sigma * 1000]), cond)

    edit = factorize(
        extract_refusal_stats(
            model,
            forward,
            pp,
            torch.randn(1, 16, 1, 8, 8),
            ExtractSettings(FAMILIES["wan"].sites["text_kv"], [0, 1], [0.5], "wan"),
        )
    )
    return base, save_refusal_edit(edit, d / "vector.safetensors"), edit, model.state_dict(), d


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "refusal_core", *map(str, args)], cwd=ROOT, capture_output=True, text=True
    )


def test_cli_exports_a_lora_that_removes_the_direction(saved):
    base, vector, edit, weights, d = saved
    out = d / "lora.safetensors"
    res = cli("export-lora", "--base", base, "--vector", vector, "--out", out, "--concept", "nudity")
    assert res.returncode == 0, res.stderr
    lora = load_file(str(out))
    assert len(lora) == 3 * len(edit.bases())
    for name, direction in edit.directions().items():
        W = weights[f"{name}.weight"]
        Wp = W + lora[f"diffusion_model.{name}.lora_up.weight"] @ lora[f"diffusion_model.{name}.lora_down.weight"]
        assert float((Wp @ direction).norm()) <= 1e-5 * float(W.norm())
    assert cli("export-lora", "--base", base, "--vector", vector, "--out", out).returncode == 2  # no silent overwrite


def test_cli_refuses_a_vector_for_another_model(saved, tmp_path):
    base, vector, edit, weights, d = saved
    other = TinyWan(dim=128, ffn_dim=256, heads=1, layers=2)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "wide.safetensors"))
    res = cli(
        "export-lora", "--base", tmp_path / "wide.safetensors", "--vector", vector, "--out", tmp_path / "x.safetensors"
    )
    assert res.returncode == 2 and "64 wide" in res.stderr and "128 wide" in res.stderr
    assert not (tmp_path / "x.safetensors").exists() and not list(tmp_path.glob(".tmp-*"))
    res = cli("export-lora", "--base", vector, "--vector", vector, "--out", tmp_path / "x.safetensors")
    assert res.returncode == 2 and "not a video model" in res.stderr
