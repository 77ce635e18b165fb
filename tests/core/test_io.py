import pytest
import torch
from safetensors.torch import save_file

from refusal_core.io import load_refusal_vector, save_refusal_vector
from refusal_core.types import LayerVector, RefusalError, RefusalVector


def vector():
    g = torch.Generator().manual_seed(0)
    layers = []
    for i in range(2):
        D = torch.randn(7, 16, generator=g)
        d = torch.randn(16, generator=g)
        layers.append(LayerVector(f"blocks.{i}.cross_attn.k", (f"blocks.{i}.cross_attn.k", f"blocks.{i}.cross_attn.v"),
                                  D, torch.randn(9, 16, generator=g), D.mean(0), d / d.norm(), torch.linspace(3, -1, 10), 4, 0.8))
    return RefusalVector(tuple(layers), {"family": "wan", "site": "text_kv", "method": "cpca", "k": "100"})


def test_round_trip_keeps_everything(tmp_path):
    rv = vector()
    path = save_refusal_vector(rv, tmp_path / "sub" / "v.safetensors")
    back = load_refusal_vector(path)
    assert back.meta["family"] == "wan" and back.meta["method"] == "cpca"
    for a, b in zip(rv.layers, back.layers):
        assert a.point == b.point and a.edit_keys == b.edit_keys and a.k_used == b.k_used
        for name in ("diffs", "neutral", "r", "direction", "spectrum"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["v.safetensors"]


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import refusal_core.io as io_mod

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(io_mod, "save_file", boom)
    with pytest.raises(OSError):
        save_refusal_vector(vector(), tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_truncated_and_foreign_files_are_refused(tmp_path):
    good = save_refusal_vector(vector(), tmp_path / "good.safetensors")
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    for name, msg in (("trunc", "truncated or corrupt"), ("junk", "truncated or corrupt"), ("lora", "not a refusal vector"), ("none", "does not exist")):
        with pytest.raises(RefusalError, match=msg):
            load_refusal_vector(tmp_path / f"{name}.safetensors")
