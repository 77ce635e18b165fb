"""LowRankFactorize: REFUSAL_VECTOR -> one unit direction per layer (cPCA / PCA / mean_diff) + spectrum plot."""
from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io, ui

from ..refusal_core.factorize import METHODS, MOMENTS, factorize
from ..refusal_core.plot import spectrum_image
from ..refusal_core.types import RefusalError
from .sockets import CATEGORY, RefusalVectorSocket

log = logging.getLogger(__name__)
DEFAULT_METHOD = "cpca"
DEFAULT_ALPHA = 0.5


class LowRankFactorize(io.ComfyNode):
    """Denoises the refusal vector: projects r onto the top-k eigenvectors of C = C_r - alpha * C_e
    (differences against neutral prompts), giving one unit direction per layer."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LowRankFactorize",
            display_name="Low-Rank Factorize (cPCA)",
            category=CATEGORY,
            description=cls.__doc__,
            inputs=[
                RefusalVectorSocket.Input("refusal_vector", tooltip="From Extract Refusal Vector or Load Refusal Vector."),
                io.Combo.Input(
                    "method",
                    options=list(METHODS),
                    default=DEFAULT_METHOD,
                    tooltip="cpca: contrast against neutral prompts (paper). pca: alpha = 0. mean_diff: d = r / |r|, no factorization.",
                ),
                io.Int.Input("k", default=100, min=1, max=4096, tooltip="Rank of U_k (paper: 100); capped by the data, the used k is in the plot."),
                io.Float.Input(
                    "alpha",
                    default=DEFAULT_ALPHA,
                    min=0.0,
                    max=100.0,
                    step=0.05,
                    tooltip="Weight of the neutral covariance C_e, scaled to the spread of the differences, tr cov(D) (1 = equal weight). Large values weaken the erasure.",
                ),
                io.Combo.Input(
                    "moment",
                    options=list(MOMENTS),
                    default="auto",
                    tooltip="C_r centered or not; auto uses the uncentered second moment when centering removed most of r.",
                    optional=True,
                ),
            ],
            outputs=[
                RefusalVectorSocket.Output(display_name="refusal_vector", tooltip="One unit direction d per layer."),
                io.Image.Output(display_name="spectrum", tooltip="Eigenvalues of C per layer, the used k marked in red."),
            ],
        )

    @classmethod
    def execute(cls, refusal_vector, method: str, k: int, alpha: float, moment: str = "auto") -> io.NodeOutput:
        if not math.isfinite(alpha):
            raise RefusalError(f"alpha must be a finite number, got {alpha}")
        rv = factorize(refusal_vector, method=method, k=k, alpha=alpha, moment=moment)
        report = rv.meta["factorization"].replace("; ", "\n")
        log.info("factorized (%s):\n%s", method, report)
        image = torch.from_numpy(spectrum_image(rv))[None]
        return io.NodeOutput(rv, image, ui=ui.PreviewText(report))
