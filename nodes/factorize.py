"""LowRankFactorize: REFUSAL_STATS -> REFUSAL_VECTOR (one unit direction per layer: cPCA / PCA / mean_diff) + spectrum plot."""

from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io, ui

from ..refusal_core import defaults
from ..refusal_core.factorize import factorize
from ..refusal_core.report.plot import spectrum_image
from ..refusal_core.solvers.rank_one import METHODS, MOMENTS
from ..refusal_core.types import RefusalError
from .sockets import CATEGORY, RefusalEditSocket, RefusalStatsSocket

log = logging.getLogger(__name__)


class LowRankFactorize(io.ComfyNode):
    """Denoises the refusal vector: projects r onto the top-k eigenvectors of C = C_r - alpha * C_e
    (differences against neutral prompts), giving one unit direction per layer: the edit. With keep prompts
    (Prompt Pairs), each direction is then taken orthogonal to their activations, so they stay as they were."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LowRankFactorize",
            display_name="Low-Rank Factorize (cPCA)",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                # the input keeps its first-release name: saved workflows connect it by that name
                RefusalStatsSocket.Input(
                    "refusal_vector",
                    display_name="statistics",
                    tooltip="From Extract Refusal Vector (or the statistics output of Load Refusal Vector).",
                ),
                io.Combo.Input(
                    "method",
                    options=list(METHODS),
                    default=defaults.METHOD,
                    tooltip="cpca: contrast against neutral prompts (paper). pca: alpha = 0. mean_diff: d = r / |r|, no factorization.",
                ),
                io.Int.Input(
                    "k",
                    default=defaults.K,
                    min=1,
                    max=4096,
                    tooltip="Rank of U_k (paper: 100); capped by the data, the used k is in the plot.",
                ),
                io.Float.Input(
                    "alpha",
                    default=defaults.ALPHA,
                    min=0.0,
                    max=100.0,
                    step=0.05,
                    tooltip="Weight of the neutral covariance C_e, scaled to the spread of the differences, tr cov(D) (1 = equal weight). "
                    "Large values weaken the erasure.",
                ),
                io.Combo.Input(
                    "moment",
                    options=list(MOMENTS),
                    default=defaults.MOMENT,
                    tooltip="C_r centered or not; auto uses the uncentered second moment when centering removed most of r.",
                    optional=True,
                ),
            ],
            outputs=[
                RefusalEditSocket.Output(
                    display_name="refusal_vector", tooltip="The edit: one unit direction d per layer."
                ),
                io.Image.Output(
                    display_name="spectrum", tooltip="Eigenvalues of C per layer, the used k marked in red."
                ),
            ],
        )

    @classmethod
    def execute(cls, refusal_vector, method: str, k: int, alpha: float, moment: str = defaults.MOMENT) -> io.NodeOutput:
        stats = refusal_vector  # statistics; the input keeps the first release's name, so saved workflows load
        if stats is None:
            raise RefusalError(
                "no statistics: the loaded file holds an edit only (saved without statistics); "
                "extract the vector again to factorize it with other settings"
            )
        if not math.isfinite(alpha):
            raise RefusalError(f"alpha must be a finite number, got {alpha}")
        edit = factorize(stats, method=method, k=k, alpha=alpha, moment=moment)
        report = edit.meta["factorization"].replace("; ", "\n")
        log.info("factorized (%s):\n%s", method, report)
        image = torch.from_numpy(spectrum_image(edit))[None]
        return io.NodeOutput(edit, image, ui=ui.PreviewText(report))
