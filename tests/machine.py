"""What the tests ran on: CPU, its vector flags, torch, BLAS and threads (a result must not depend on them)."""

from __future__ import annotations

import os
import platform
import re

import torch

_FLAGS = ("avx512f", "avx512_bf16", "avx2", "fma", "sse4_2", "neon", "asimd")
_ENV = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")


def _cpu() -> tuple[str, list[str]]:
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return platform.processor() or platform.machine(), []
    name = re.search(r"^(model name|Model)\s*:\s*(.+)$", text, re.M)
    flags = set((re.search(r"^(flags|Features)\s*:\s*(.+)$", text, re.M) or [None, None, ""])[2].split())
    return (name.group(2).strip() if name else platform.machine()), [f for f in _FLAGS if f in flags]


def describe() -> str:
    """One line: CPU model and vector flags, torch, its BLAS / LAPACK and CPU kernels, threads, kernel settings."""
    name, flags = _cpu()
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.]+)", config)
    capability = re.search(r"CPU capability usage: (\w+)", config)
    env = " ".join(f"{k}={os.environ[k]}" for k in _ENV if k in os.environ)
    return (
        f"machine: {name} [{' '.join(flags) or 'no vector flags read'}], {os.cpu_count()} cores; torch {torch.__version__}, "
        f"BLAS {blas.group(1) if blas else '?'}{' ' + mkl.group(1) if mkl else ''}, kernels {capability.group(1) if capability else '?'}, "
        f"{torch.get_num_threads()} threads{'; ' + env if env else ''}"
    )
