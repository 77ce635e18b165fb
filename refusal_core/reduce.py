"""Captured activations -> the rows of D, E, the keep prompts and the ordinary text per layer, reduced as soon as each
unit is in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .align import aligned_pair_rows, pairs_by_position, prompt_rows
from .forwards import Job, Unit, same_data
from .stats import RowAccumulator, RowBudget, row_mean
from .types import LayerStats, RefusalError

if TYPE_CHECKING:  # extract.py runs the reducer under its settings
    from .extract import ExtractSettings


class Reducer:
    """Turns completed units (a pair at one sigma, a neutral, keep or ordinary prompt at one sigma) into rows of D, E
    and the keep and ordinary prompts' rows per layer as soon as their activations are in, and drops the activations. A layer holds
    rows while it has at most d_in of them, then their Moments (stats.py), so memory is bounded by d_in x d_in
    per layer."""

    def __init__(
        self,
        settings: ExtractSettings,
        jobs: list[Job],
        units: list[Unit],
        n_pairs: int,
        n_neutral: int,
        n_keep: int = 0,
        n_ordinary: int = 0,
    ):
        self.site, self.blocks, self.points, self.jobs, self.units = (
            settings.site,
            settings.blocks,
            settings.points,
            jobs,
            units,
        )
        budget = settings.max_rows if settings.max_rows is not None else 1 << 62
        n_sig = len(settings.run_sigmas)
        self.budget_d = RowBudget(budget // (n_pairs * n_sig), settings.seed)
        self.budget_e = RowBudget(budget // max(1, n_neutral * n_sig), settings.seed + 1)
        self.budget_k = RowBudget(budget // max(1, n_keep * n_sig), settings.seed + 2)
        self.budget_o = RowBudget(budget // max(1, n_ordinary), settings.seed + 3)  # one sigma (forwards.schedule)
        self.n_keep, self.n_ordinary = n_keep, n_ordinary
        self.acc_d = {p: RowAccumulator() for p in self.points}
        self.acc_e = {p: RowAccumulator() for p in self.points}
        self.acc_k = {p: RowAccumulator() for p in self.points}
        self.acc_o = {p: RowAccumulator() for p in self.points}
        # r is the mean of EVERY difference row; only the factorization's statistics use the row budget.
        self.sum_d = {p: torch.zeros((), dtype=torch.float64) for p in self.points}
        self.count_d = dict.fromkeys(self.points, 0)
        self.rows_u: dict[str, list[torch.Tensor]] = {p: [] for p in self.points}
        self.rows_s: dict[str, list[torch.Tensor]] = {p: [] for p in self.points}
        self.pending: dict[int, dict[str, torch.Tensor]] = {}  # job -> {point: [L, d]} until its unit is reduced
        self.next_unit = 0
        self.by_position = 0  # pairs whose text rows could only be paired by position (no token ids)
        self._sinks = {
            "neutral": (self.acc_e, self.budget_e),
            "keep": (self.acc_k, self.budget_k),
            "ordinary": (self.acc_o, self.budget_o),
        }

    def add(self, captured: dict[int, dict[str, torch.Tensor]]) -> None:
        self.pending.update(captured)
        while self.next_unit < len(self.units) and all(j in self.pending for j in self.units[self.next_unit][1]):
            kind, unit = self.units[self.next_unit]
            if kind == "pair":
                self._pair(*unit)
            else:
                self._prompt(*unit, *self._sinks[kind])
            for j in unit:
                del self.pending[j]  # this prompt's raw activations are not needed any more
            self.next_unit += 1

    def _pair(self, ju: int, js: int) -> None:
        (enc_u, _), (enc_s, _) = self.jobs[ju], self.jobs[js]
        self.by_position += pairs_by_position(self.site, enc_u, enc_s)
        a_u, a_s = self.pending[ju], self.pending[js]
        memo: dict[tuple, Any] = {}  # blocks that read the very same input get the very same rows, computed once
        for p in self.points:
            key = (same_data(a_u[p]), same_data(a_s[p]))
            if key not in memo:
                rows, u, s = aligned_pair_rows(self.site, a_u[p], a_s[p], enc_u, enc_s)
                idx = self.budget_d.pick(rows.shape[0])
                kept = [x if x is None or idx is None else x[idx] for x in (rows, u, s)]
                # u and s may be views of the whole batch's activations, which must not stay alive
                memo[key] = (
                    rows.double().sum(0),
                    rows.shape[0],
                    kept[0],
                    *[None if x is None else x.clone() for x in kept[1:]],
                )
            total, count, rows, u, s = memo[key]
            self.acc_d[p].add(rows)
            if u is not None:
                self.rows_u[p].append(u)
                self.rows_s[p].append(s)
            self.sum_d[p] = self.sum_d[p] + total
            self.count_d[p] += count

    def _prompt(self, j: int, acc: dict[str, RowAccumulator], budget: RowBudget) -> None:
        enc, a = self.jobs[j][0], self.pending[j]
        memo: dict[tuple, Any] = {}
        for p in self.points:
            key = (same_data(a[p]),)
            if key not in memo:
                memo[key] = prompt_rows(self.site, a[p], enc).clone()  # a view would keep the whole batch alive
            acc[p].add(budget(memo[key]))

    def layers(self) -> list[tuple[int, LayerStats]]:
        """(block, LayerStats) per block read; identical sides are refused."""
        out = []
        joined: dict[tuple[int, ...], torch.Tensor] = {}  # blocks that read the same rows share one tensor of them

        def join(parts: list[torch.Tensor]) -> torch.Tensor | None:
            if not parts:
                return None
            key = tuple(id(t) for t in parts)
            if key not in joined:
                joined[key] = torch.cat(parts).float()
            return joined[key]

        for b, p in zip(self.blocks, self.points):
            D = self.acc_d[p].result()
            E = self.acc_e[p].result(dim=D.shape[1])
            K = self.acc_k[p].result(dim=D.shape[1]) if self.n_keep else None
            O = self.acc_o[p].result(dim=D.shape[1]) if self.n_ordinary else None
            r = (self.sum_d[p] / max(self.count_d[p], 1)).float() if self.count_d[p] else row_mean(D)
            if not torch.isfinite(r).all() or r.norm() == 0:
                raise RefusalError(
                    f"unsafe and safe prompts give identical activations at {p}: "
                    "each pair's two sides must differ by the concept (e.g. 'a nude woman | a woman')"
                )
            out.append(
                (
                    b,
                    LayerStats(
                        point=p,
                        edit_keys=self.site.edit_keys(b),
                        diffs=D,
                        neutral=E,
                        r=r,
                        unsafe=join(self.rows_u[p]),
                        safe=join(self.rows_s[p]),
                        keep=K,
                        ordinary=O,
                    ),
                )
            )
        return out
