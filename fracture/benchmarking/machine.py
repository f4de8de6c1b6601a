"""The machine a benchmark ran on, named in its report: figures mean little without the processor."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def processor_name() -> str:
    """The CPU's model name as `lscpu` shows it, with the logical CPU count (`platform.processor()` where there
    is no /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return platform.processor() or "unknown processor"
