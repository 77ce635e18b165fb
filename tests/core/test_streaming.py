"""Streamed extraction: per-layer moments beyond the layer width, and batched forwards, give the
same refusal vector as keeping every row and running one prompt per forward."""

import json

import pytest
import torch

from refusal_core.edit import RefusalEdit, load_refusal_file
from refusal_core.extract import ExtractSettings, extract_refusal_stats
from refusal_core.factorize import factorize
from refusal_core.families import FAMILIES
from refusal_core.file_format import save_refusal_edit
from refusal_core.forwards import CannotBatch, stack_forward
from refusal_core.layer_choice import separation
from refusal_core.solvers.rank_one import factorize_layer
from refusal_core.stats import Moments, RowAccumulator
from refusal_core.types import EncodedPrompt, PromptPair, PromptPairs
from tests.core import toy_wan
from tests.core.toy_wan import PAIRS, Counter, encode, every_row, same_up_to_sign

WAN = FAMILIES["wan"].sites
NEUTRAL = ["a red fox", "a blue lake", "green trees sway", "an old train", "snow falls softly"]


def prompts(pad_to: int | None = None) -> PromptPairs:
    return toy_wan.prompts(neutral=NEUTRAL, pad_to=pad_to)


@pytest.fixture(scope="module")
def model():
    return toy_wan.random_wan(0)


def problem(n, m, d, seed):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n, d, generator=g) * torch.linspace(3, 0.1, d) + 2 * torch.randn(d, generator=g)
    E = 3 * torch.randn(m, d, generator=g) + torch.randn(d, generator=g)
    return D, E, D.mean(0)


@pytest.mark.parametrize(
    "method,alpha,moment",
    [
        ("cpca", 0.5, "centered"),
        ("cpca", 2.0, "auto"),
        ("pca", 0.0, "centered"),
        ("pca", 0.0, "uncentered"),
        ("cpca", 1.0, "uncentered"),
    ],
)
@pytest.mark.parametrize("k", [3, 20])
def test_dense_moment_path_equals_the_span_row_path(method, alpha, moment, k):
    D, E, r = problem(30, 25, 96, seed=k)
    rows = factorize_layer(D, E, r, method, k, alpha, moment)
    assert rows.solver == "span"
    for Dx, Ex in ((Moments.of(D), Moments.of(E)), (D, Moments.of(E)), (Moments.of(D), E)):
        mom = factorize_layer(Dx, Ex, r, method, k, alpha, moment)
        assert mom.solver == "dense"
        assert mom.k_used == rows.k_used and mom.moment == rows.moment
        assert abs(mom.retained - rows.retained) < 1e-6
        assert same_up_to_sign(mom.direction, rows.direction) < 1e-5
        n = min(len(mom.spectrum), len(rows.spectrum), k)
        assert torch.allclose(
            mom.spectrum[:n], rows.spectrum[:n], rtol=1e-4, atol=1e-6 * float(rows.spectrum.abs().max())
        )


def test_row_accumulator_keeps_rows_up_to_the_width_then_exact_moments():
    g = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 16, generator=g) + 5 for n in (6, 7, 3, 9, 0, 4)]
    acc = RowAccumulator()
    for i, c in enumerate(chunks):
        acc.add(c)
        if sum(x.shape[0] for x in chunks[: i + 1]) <= 16:
            assert torch.equal(acc.result(), torch.cat(chunks[: i + 1]))
    out = acc.result()
    ref = Moments.of(torch.cat(chunks))
    assert isinstance(out, Moments) and out.count == ref.count == 29 and out.shape == (29, 16)
    assert torch.allclose(out.total, ref.total, atol=1e-10) and torch.allclose(out.gram, ref.gram, atol=1e-9)
    keep = RowAccumulator(limit=1 << 62)
    for c in chunks:
        keep.add(c)
    assert torch.equal(keep.result(), torch.cat(chunks))


@pytest.fixture
def all_rows():
    with every_row():
        yield


@pytest.mark.parametrize("max_rows", [4096, None])
def test_streamed_extraction_gives_the_directions_of_all_rows(model, max_rows):
    """ffn_in reads 16 video tokens per prompt and sigma: 96 rows of D > d = 64, so the layers switch to moments."""
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    settings = ExtractSettings(WAN["ffn_in"], [0, 1, 2], [0.6, 0.3], "wan", max_rows=max_rows)
    streamed = extract_refusal_stats(model, Counter(model), prompts(), latent, settings)
    with every_row():
        rows = extract_refusal_stats(model, Counter(model), prompts(), latent, settings)
    for a, b in zip(streamed.layers, rows.layers):
        assert isinstance(a.diffs, Moments) and isinstance(a.neutral, Moments) and isinstance(b.diffs, torch.Tensor)
        assert a.diffs.shape == b.diffs.shape and a.neutral.shape == b.neutral.shape
        assert torch.allclose(a.r, b.r, atol=1e-6)
        assert abs(separation(a.diffs, a.neutral, a.r) - separation(b.diffs, b.neutral, b.r)) < 1e-5 * separation(
            b.diffs, b.neutral, b.r
        )
    sa, sb = json.loads(streamed.meta["layer_scores"]), json.loads(rows.meta["layer_scores"])
    assert sa.keys() == sb.keys() and all(abs(sa[p] - sb[p]) <= 1e-5 * sb[p] for p in sb)
    for method, alpha, moment in (("cpca", 0.5, "auto"), ("pca", 0.0, "centered"), ("cpca", 1.0, "uncentered")):
        fa, fb = factorize(streamed, method, 8, alpha, moment), factorize(rows, method, 8, alpha, moment)
        for a, b in zip(fa.layers, fb.layers):
            assert a.k_used == b.k_used
            assert same_up_to_sign(a.basis[0], b.basis[0]) < 1e-5


@pytest.mark.parametrize(
    "site,sigmas,batch",
    [("text_kv", [0.6], 4), ("text_kv", [0.6], 16), ("ffn_in", [0.6, 0.3], 2), ("ffn_in", [0.6, 0.3], 5)],
)
def test_batched_extraction_equals_unbatched(model, site, sigmas, batch, all_rows):
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    pp = prompts(pad_to=8)  # one conditioning shape, as ComfyUI's Wan text (padded to 512)
    one, many = Counter(model), Counter(model)
    ref = extract_refusal_stats(model, one, pp, latent, ExtractSettings(WAN[site], [0, 2], sigmas, "wan"))
    out = extract_refusal_stats(
        model, many, pp, latent, ExtractSettings(WAN[site], [0, 2], sigmas, "wan", batch_size=batch)
    )
    assert many.calls < one.calls
    for a, b in zip(out.layers, ref.layers):
        assert a.diffs.shape == b.diffs.shape and a.neutral.shape == b.neutral.shape
        assert torch.allclose(a.diffs, b.diffs, atol=1e-5) and torch.allclose(a.neutral, b.neutral, atol=1e-5)
        assert torch.allclose(a.r, b.r, atol=1e-6)
    fa, fb = factorize(out, "cpca", 8, 0.5), factorize(ref, "cpca", 8, 0.5)
    for a, b in zip(fa.layers, fb.layers):
        assert same_up_to_sign(a.basis[0], b.basis[0]) < 1e-5
    for module in model.modules():
        assert not module._forward_pre_hooks


def test_prompts_of_other_shapes_are_not_batched_together(model):
    """Unpadded prompts differ in length: concatenating would need padding (another result), so each
    group of one shape runs as its own batch, and the vector equals the unbatched one."""
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    one, many = Counter(model), Counter(model)
    ref = extract_refusal_stats(model, one, prompts(), latent, ExtractSettings(WAN["text_kv"], [1], [0.6], "wan"))
    out = extract_refusal_stats(
        model, many, prompts(), latent, ExtractSettings(WAN["text_kv"], [1], [0.6], "wan", batch_size=8)
    )
    assert one.calls == 2 * len(PAIRS) + len(NEUTRAL) and many.calls < one.calls
    assert torch.allclose(out.layers[0].diffs, ref.layers[0].diffs, atol=1e-5)
    assert torch.allclose(out.layers[0].neutral, ref.layers[0].neutral, atol=1e-5)


def test_a_batch_the_forward_cannot_run_falls_back_to_one_prompt_per_forward(model, all_rows):
    """Host conditionings (ComfyUI's [[cond, options]]) are batched by the host's forward_batch, which raises
    CannotBatch for conditionings of other shapes (as the ComfyUI bridge does): those prompts run one per
    forward, the others as batches, and the vector equals the unbatched one."""
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    counter = Counter(model)
    batched, refused = [], []
    host = PromptPairs.from_texts(
        [PromptPair(u, s) for u, s in PAIRS],
        NEUTRAL,
        lambda t: (lambda e: EncodedPrompt(e.text, e.token_ids, [[e.conditioning, {}]], e.text_len))(encode(t)),
    )

    def forward(cond, noise, sigma):
        return counter(cond[0][0], noise, sigma)

    def forward_batch(conds, noise, sigma):
        tensors = [c[0][0] for c in conds]
        if len({t.shape for t in tensors}) > 1:
            refused.append(len(conds))
            raise CannotBatch("shapes differ")
        batched.append(len(conds))
        return stack_forward(counter)(tensors, noise, sigma)

    for site, sigmas in (("text_kv", [0.6]), ("ffn_in", [0.6, 0.3])):
        ref = extract_refusal_stats(
            model, counter, prompts(), latent, ExtractSettings(WAN[site], [0, 2], sigmas, "wan")
        )
        out = extract_refusal_stats(
            model,
            forward,
            host,
            latent,
            ExtractSettings(WAN[site], [0, 2], sigmas, "wan", batch_size=4),
            forward_batch=forward_batch,
        )
        for a, b in zip(out.layers, ref.layers):
            assert torch.allclose(a.diffs, b.diffs, atol=1e-5) and torch.allclose(a.neutral, b.neutral, atol=1e-5)
            assert torch.allclose(a.r, b.r, atol=1e-6)
    assert refused and batched and max(batched) > 1
    for module in model.modules():
        assert not module._forward_pre_hooks


def test_moments_survive_save_load_and_the_loaded_edit_combines(tmp_path, model):
    latent = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    stats = extract_refusal_stats(
        model, Counter(model), prompts(), latent, ExtractSettings(WAN["ffn_in"], [0, 1], [0.6, 0.3], "wan")
    )
    edit = factorize(stats, "cpca", 8, 0.5)
    back_edit, back = load_refusal_file(save_refusal_edit(edit, tmp_path / "v.safetensors", include_statistics=True))
    for a, b in zip(stats.layers, back.layers):
        assert isinstance(b.diffs, Moments) and b.diffs.count == a.diffs.count
        assert torch.equal(a.diffs.gram, b.diffs.gram) and torch.equal(a.neutral.total, b.neutral.total)
    assert all(torch.equal(a.basis, b.basis) for a, b in zip(edit.layers, back_edit.layers))
    again = factorize(back, "cpca", 8, 0.5)
    assert all(torch.equal(a.basis, b.basis) for a, b in zip(edit.layers, again.layers))
    other = factorize(
        extract_refusal_stats(
            model, Counter(model), prompts(), latent, ExtractSettings(WAN["ffn_in"], [0, 1], [0.9], "wan")
        )
    )
    both = RefusalEdit.combine([(back_edit, 1.0), (other, 0.5)])
    assert both.layers[0].basis.shape == (2, 64) and both.layers[0].strengths == (1.0, 0.5)
