"""Inputs that several nodes share, declared once with their defaults (refusal_core.defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from comfy_api.latest import io

from ..refusal_core import defaults
from ..refusal_core.types import RefusalError


def probe_size(what: str = "Probe latent") -> list:
    """width, height, length of the probe video, in pixels and frames."""
    return [
        io.Int.Input("width", default=defaults.WIDTH, min=16, max=2048, step=16, tooltip=f"{what} width in pixels."),
        io.Int.Input("height", default=defaults.HEIGHT, min=16, max=2048, step=16, tooltip=f"{what} height in pixels."),
        io.Int.Input(
            "length",
            default=defaults.LENGTH,
            min=1,
            max=129,
            step=4,
            tooltip=f"{what} length in frames (1, 5, 9, ...).",
        ),
    ]


def seed(default: int, tooltip: str) -> io.Int.Input:
    """A seed that stays fixed: the frontend would otherwise randomize it after every queue, and a node
    with a new seed runs again (an extraction, each time, with another result)."""
    return io.Int.Input("seed", default=default, min=0, max=0xFFFFFFFF, control_after_generate=False, tooltip=tooltip)


def noise_levels(tooltip: str) -> io.String.Input:
    return io.String.Input("noise_levels", default=defaults.SIGMAS_TEXT, tooltip=tooltip)


def strength(
    name: str = "strength",
    tooltip: str = "lambda, times the edit's own strength: 1 applies the edit as made (the paper's edit removes its "
    f"direction exactly; one kept off the ordinary text carries {defaults.ORDINARY_STRENGTH:g}); 0 gives back the "
    "original model; above 1 over-suppresses.",
    optional: bool = False,
) -> io.Float.Input:
    return io.Float.Input(
        name,
        default=defaults.STRENGTH,
        min=0.0,
        max=defaults.MAX_STRENGTH,
        step=0.05,
        optional=optional,
        tooltip=tooltip,
    )


def first_problem(*checks: tuple[Callable[[Any], object], Any]) -> bool | str:
    """For a node's validate_inputs: True, or the message of the first check that refuses its value (a value
    of None is a linked input, known only at run time: not checked here)."""
    for check, value in checks:
        if value is None:
            continue
        try:
            check(value)
        except RefusalError as e:
            return str(e)
    return True
