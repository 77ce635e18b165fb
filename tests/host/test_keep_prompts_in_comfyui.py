"""Keep prompts in a real ComfyUI, on the hard world's shipped model: the character preset's keep prompts
(and the ones typed beside them, without repeats) reach the extraction, Low-Rank Factorize takes each direction
orthogonal to them as pure torch does and shows the edit, its rank and its residual on the pairs, two characters
combined keep them too, the LoRA through the stock LoraLoaderModelOnly equals the edit, and the base stays as
loaded."""

from __future__ import annotations

import pytest

from tests.host import comfy_host, tiny_models

pytestmark = pytest.mark.host


def test_keep_prompts_through_the_nodes_equal_pure_torch_and_survive_combining_and_export(nodes, loras, caplog):
    from safetensors.torch import load_file

    from refusal_core import defaults
    from refusal_core.factorize import factorize
    from refusal_core.ordinary import ordinary_text
    from refusal_core.presets import load_preset, preset_keep
    from refusal_core.solvers.keep import keep_basis
    from testbed import characters, evaluate, train
    from testbed.worlds import HARD
    from tests.host.minilm_clip import MiniLMClip

    model = tiny_models.load(train.SHIPPED["hard"])
    weights = load_file(str(train.SHIPPED["hard"]))
    clip = MiniLMClip(seed=0, pad_to=HARD.text_pad)
    _, frames, h, w = HARD.latent_shape
    assert characters.KEEP == tuple(preset_keep("copyrighted_character")) and len(characters.KEEP) == 3
    typed = (
        nodes["PromptPairLoader"]
        .execute(
            clip,
            "",
            "",
            "(none)",
            "copyrighted_character",
            "Mickey Mouse",
            f"{characters.KEEP[0]}\na cartoon cat on a sofa",
        )
        .result[0]
    )
    assert [p.text for p in typed.keep] == [
        *characters.KEEP,
        "a cartoon cat on a sofa",
    ]  # the preset's, then the new typed one
    edits = {}
    for name, keep_text in (("Mickey Mouse", ""), ("Minnie Mouse", "\n".join(characters.KEEP))):
        pp = (
            nodes["PromptPairLoader"]
            .execute(clip, "", "", "(none)", "copyrighted_character", name, keep_text)
            .result[0]
        )
        assert [p.text for p in pp.keep] == list(characters.KEEP)
        stats = (
            nodes["ExtractRefusalVector"]
            .execute(model, pp, "text_kv", "all", "0.9", 8 * w, 8 * h, 4 * frames - 3, 0)
            .result[0]
        )
        assert stats.meta["n_keep"] == "3"
        factorized = nodes["LowRankFactorize"].execute(stats, "cpca", 100, 0.5)
        edits[name] = factorized.result[0]
        # the defaults: off the preset's look-alikes and the pack's ordinary text, each at its own rank
        assert "kept off 8 keep and 8 ordinary-text directions" in edits[name].meta["factorization"]
        shown = factorized.ui.as_dict()["text"][
            0
        ].splitlines()  # what the node shows: which edit, its rank, its residual
        assert (
            shown[0]
            == f"rank-1 refusal direction (cpca) at {len(stats.layers)} layer(s), kept off the keep prompts' top 8 "
            f"directions, kept off the ordinary text's top 8 directions (strength {defaults.ORDINARY_STRENGTH:g})"
        )
        assert shown[1].startswith(f"residual on the pairs {float(edits[name].meta['residual']):.3f} ")
        assert 0 < float(edits[name].meta["residual"]) < 1 and edits[name].meta["rank"] == "1"

        ours = factorize(
            evaluate.Bed(HARD, 0).extract_pairs(
                *load_preset("copyrighted_character", name),
                "text_kv",
                (0.9,),
                0,
                characters.KEEP,
                ordinary=tuple(ordinary_text()),
            )
        )
        for theirs_layer, ours_layer, layer in zip(edits[name].layers, ours.layers, stats.layers):
            assert float(theirs_layer.basis[0].double() @ ours_layer.basis[0].double()) > 0.999, layer.point
            U = keep_basis(layer.keep, defaults.KEEP_RANK)
            assert float((U.T @ theirs_layer.basis[0].double()).abs().max()) < 1e-5

    joined = nodes["CombineRefusalVectors"].execute(edits["Mickey Mouse"], 1.0, edits["Minnie Mouse"], 1.0).result[0]
    for layer, kept in zip(joined.layers, stats.layers):
        U = keep_basis(kept.keep, defaults.KEEP_RANK)
        assert layer.basis.shape[0] == 2 and float((layer.basis.double() @ U).abs().max()) < 1e-4, layer.point

    comfy_host.check_applied_and_exported(
        nodes, model, weights, joined, loras, caplog, "refusal/mice", "Mickey and Minnie"
    )
