import pytest
import torch
from safetensors.torch import load_file, save_file

from refusal_core.edit import RefusalEdit, load_refusal_file
from refusal_core.factorize import factorize
from refusal_core.file_format import save_refusal_edit
from refusal_core.lora import lora_state_dict
from refusal_core.types import LayerStats, RefusalError, RefusalStats
from tests.core.toy_wan import DATA

RELEASE_0_1_0 = DATA / "release_0_1_0"


def stats():
    g = torch.Generator().manual_seed(0)
    layers = []
    for i in range(2):
        D = torch.randn(7, 16, generator=g) + 2 * torch.randn(16, generator=g)
        layers.append(
            LayerStats(
                f"blocks.{i}.cross_attn.k",
                (f"blocks.{i}.cross_attn.k", f"blocks.{i}.cross_attn.v"),
                D,
                torch.randn(9, 16, generator=g),
                D.mean(0),
            )
        )
    return RefusalStats(tuple(layers), {"family": "wan", "site": "text_kv", "blocks": "0,1", "dims": "16,16"})


def test_round_trip_keeps_the_edit_and_statistics_only_on_request(tmp_path):
    edit = factorize(stats(), "cpca", 100, 0.5)
    small = load_refusal_file(save_refusal_edit(edit, tmp_path / "sub" / "v.safetensors"))
    full = load_refusal_file(save_refusal_edit(edit, tmp_path / "sub" / "v_stats.safetensors", include_statistics=True))
    assert small[1] is None and full[1] is not None
    for back, _ in (small, full):
        assert back.meta["family"] == "wan" and back.meta["method"] == "cpca"
        for a, b in zip(edit.layers, back.layers):
            assert (a.point, a.edit_keys, a.k_used, a.strengths) == (b.point, b.edit_keys, b.k_used, b.strengths)
            assert torch.equal(a.basis, b.basis) and torch.equal(a.spectrum, b.spectrum)
    for a, b in zip(edit.source.layers, full[1].layers):
        assert all(torch.equal(getattr(a, n), getattr(b, n)) for n in ("diffs", "neutral", "r"))
    assert (tmp_path / "sub" / "v.safetensors").stat().st_size < (
        tmp_path / "sub" / "v_stats.safetensors"
    ).stat().st_size
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["v.safetensors", "v_stats.safetensors"]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import refusal_core.io as io_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod, "save_file", boom)
    with pytest.raises(OSError):
        save_refusal_edit(factorize(stats()), tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path):
    good = save_refusal_edit(factorize(stats()), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    for name, msg in (
        ("trunc", "truncated or corrupt"),
        ("junk", "truncated or corrupt"),
        ("lora", "not a refusal vector"),
        ("none", "does not exist"),
    ):
        with pytest.raises(RefusalError, match=msg):
            load_refusal_file(tmp_path / f"{name}.safetensors")


@pytest.mark.parametrize("name", ["cpca_cross_out", "mean_diff_text_kv", "combined"])
def test_a_first_release_file_loads_and_gives_that_release_s_edit(name):
    """The LoRA factors release 0.1.0 computed from its own file (tests/data/release_0_1_0/make.py) equal ours."""
    weights = load_file(RELEASE_0_1_0 / "tiny_wan_cross_attn.safetensors")
    expected = load_file(RELEASE_0_1_0 / "lora_factors.safetensors")
    edit, stats = load_refusal_file(RELEASE_0_1_0 / f"{name}.safetensors")
    assert (stats is None) == (name == "combined")
    ours = lora_state_dict(lambda n: weights[f"{n}.weight"], edit, 1.0)
    assert sorted(ours) == sorted(k.split("/", 1)[1] for k in expected if k.startswith(name + "/"))
    for key, value in ours.items():
        then = expected[f"{name}/{key}"]
        if key.endswith(".alpha"):
            assert float(value) == float(then)
            continue
        layer = key.rsplit(".lora_", 1)[0]
        up, down = (ours[f"{layer}.lora_up.weight"], ours[f"{layer}.lora_down.weight"])
        up0, down0 = expected[f"{name}/{layer}.lora_up.weight"], expected[f"{name}/{layer}.lora_down.weight"]
        assert torch.allclose(up @ down, up0 @ down0, atol=1e-6)  # QR may flip a row's sign: the product is the edit


def test_a_first_release_unfactorized_file_has_statistics_only():
    edit, stats = load_refusal_file(RELEASE_0_1_0 / "unfactorized.safetensors")
    assert edit is None and [layer.point for layer in stats.layers] == [
        "blocks.0.cross_attn.o",
        "blocks.1.cross_attn.o",
    ]
    with pytest.raises(RefusalError, match="statistics only"):
        RefusalEdit.load(RELEASE_0_1_0 / "unfactorized.safetensors")
    refactored = factorize(stats, "cpca", 100, 0.5)
    then, _ = load_refusal_file(RELEASE_0_1_0 / "cpca_cross_out.safetensors")
    # this release scales alpha to the spread of D in the uncentered solve too: the direction moves a little
    for a, b in zip(refactored.layers, then.layers):
        assert abs(float(a.basis[0] @ b.basis[0])) > 0.99


def test_an_edit_at_wan_1_3b_dims_saves_under_5_mb(tmp_path):
    """30 blocks x 1536 wide, one direction per block (every Wan site), with the spectrum of a 1025-row span per layer: the
    largest a template run saves (a video site filling its row budget)."""
    from refusal_core.edit import RefusalEdit
    from refusal_core.types import LayerEdit

    layers = tuple(
        LayerEdit(
            f"blocks.{i}.cross_attn.o",
            (f"blocks.{i}.cross_attn.o",),
            torch.nn.functional.normalize(torch.randn(1, 1536)),
            (1.0,),
            torch.randn(1025),
            100,
            0.99,
        )
        for i in range(30)
    )
    path = save_refusal_edit(RefusalEdit(layers, {"family": "wan"}), tmp_path / "wan13b.safetensors")
    assert path.stat().st_size < 5e6
