"""No silent fallback: where the pack takes a second-best path, the user is told, in the log (a warning) and
in the report the nodes show, and where it does not, nothing is said."""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from refusal_core import ExtractSettings, extract_refusal_stats, factorize
from refusal_core.families import FAMILIES
from refusal_core.forwards import CannotBatch, stack_forward
from refusal_core.solvers.rank_one import NO_EIGENVECTOR, factorize_layer
from refusal_core.types import LayerStats, PromptPairs, RefusalStats
from tests.core.toy_wan import Counter, prompts, random_wan

WAN = FAMILIES["wan"].sites
LATENT = torch.randn(1, 16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def extract(pp: PromptPairs, model=None, **kwargs):
    model = model if model is not None else random_wan(0)
    settings = ExtractSettings(WAN["text_kv"], [0, 2], [0.6], "wan", batch_size=kwargs.pop("batch_size", 1))
    return extract_refusal_stats(model, Counter(model), pp, LATENT, settings, **kwargs)


def test_a_clean_extraction_reports_no_fallback(caplog):
    with caplog.at_level(logging.WARNING):
        stats = extract(prompts(pad_to=8), batch_size=4)
    assert "fallbacks" not in stats.meta and not caplog.records
    assert "WARNING" not in factorize(stats).meta["factorization"]


def test_a_batch_the_model_failed_on_is_named_in_the_log_and_both_reports(caplog):
    model = random_wan(0)
    counter = Counter(model)
    failed = []

    def forward_batch(conds, noise, sigma):
        if not failed:  # the first batch fails, as HunyuanVideo's text mask does on 0.3.64
            failed.append(len(conds))
            raise CannotBatch("this model did not run 4 prompts as one batch (mask shape)", failed=True)
        return stack_forward(counter)(conds, noise, sigma)

    with caplog.at_level(logging.WARNING):
        stats = extract(prompts(pad_to=8), model, batch_size=4, forward_batch=forward_batch)
    assert "did not run 4 prompts as one batch (mask shape)" in stats.meta["fallbacks"]
    assert any("one per forward" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    report = factorize(stats).meta["factorization"]
    assert report.startswith("WARNING (extraction): this model did not run 4 prompts")
    assert factorize(stats, method="closed_form").meta["factorization"].startswith("WARNING (extraction)")


def test_prompts_of_other_shapes_running_one_by_one_is_no_fallback(caplog):
    def forward_batch(conds, noise, sigma):
        raise CannotBatch("the prompts' conditionings differ in shape")  # expected: same result, nothing to say

    with caplog.at_level(logging.WARNING):
        stats = extract(prompts(), batch_size=4, forward_batch=forward_batch)
    assert "fallbacks" not in stats.meta and not caplog.records


def test_text_rows_paired_by_position_are_named(caplog):
    """Without token ids (two text encoders, none lining up with the rows) the rows pair by position."""
    pp = prompts()
    without_ids = replace(
        pp, pairs=tuple((replace(u, token_ids=None), replace(s, token_ids=None)) for u, s in pp.pairs)
    )
    with caplog.at_level(logging.WARNING):
        stats = extract(without_ids)
    assert "paired by position" in stats.meta["fallbacks"]
    assert stats.meta["fallbacks"].startswith("3 pair reading(s) had no token ids")
    assert any("paired by position" in r.getMessage() for r in caplog.records)
    assert "paired by position" in factorize(stats).meta["factorization"]


def test_no_eigenvector_falling_back_to_the_mean_is_named(caplog):
    """A neutral spread far larger than the pairs' along every direction they use: C keeps no positive eigenvalue,
    so no U_k can be taken and d = r / |r|; the report says so instead of passing it off as the cPCA direction."""
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 6, generator=g))[0].T  # 6 orthonormal directions of R^32
    D = torch.randn(20, 6, generator=g) @ basis + basis[0]
    E = 50 * torch.randn(40, 6, generator=g) @ basis
    r = D.mean(0)
    f = factorize_layer(D, E, r, "cpca", 4, 100.0)
    assert f.k_used == 0 and f.fallback == NO_EIGENVECTOR
    assert torch.allclose(f.direction, r / r.norm())
    layer = LayerStats("blocks.0.cross_attn", ("blocks.0.cross_attn.k",), D, E, r)
    with caplog.at_level(logging.WARNING):
        edit = factorize(RefusalStats((layer,), {"family": "wan"}), "cpca", 4, 100.0)
    report = edit.meta["factorization"]
    assert report.startswith("WARNING: at 1 layer(s) (blocks.0.cross_attn) d fell back to r / |r|")
    assert NO_EIGENVECTOR in report
    assert any(NO_EIGENVECTOR in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert factorize_layer(D, E, r, "cpca", 4, 0.5).fallback == ""  # a milder contrast takes eigenvectors
