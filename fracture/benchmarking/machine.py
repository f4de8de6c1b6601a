"""The machine a benchmark ran on, named in its report: figures mean little without the processor."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that decide which kernels the engines pick (and so their speed and rounding), in the
# names /proc/cpuinfo gives them; "AMD EPYC" alone is sold with and without AVX-512.
VECTOR_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX"}


def processor_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name as `lscpu` shows it, its vector instruction sets and the logical CPU count, e.g.
    "AMD EPYC (AVX2), 2 logical CPUs", from `cpuinfo` (the text of /proc/cpuinfo, read when None;
    `platform.processor()` where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or "unknown processor"
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    if model is None:
        return platform.processor() or "unknown processor"
    vector = ", ".join(name for flag, name in VECTOR_FLAGS.items() if flag in flags)
    return f"{model} ({vector or 'no AVX2'}), {os.cpu_count()} logical CPUs"
