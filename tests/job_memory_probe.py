"""A Hydra callback for tests of sweeps: after each job, one JSON line with the job's peak resident memory and
the objects of its kind still alive (models, traced TensorFlow graphs, tf.data pipelines, custom gradients).

Linux only: the peak is the kernel's high-water mark (VmHWM), reset at each job's start via /proc/self/clear_refs.
"""

import gc
import json
import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback


def memory_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", status).group(1)) / 1024 for key in ("VmRSS", "VmHWM")}


def alive() -> dict[str, int]:
    import keras

    gc.collect()
    names = {"FuncGraph": 0, "DatasetV2": 0}
    models = 0
    for obj in gc.get_objects():
        kind = type(obj)
        if isinstance(obj, keras.Model):
            models += 1
        for base in kind.__mro__:
            if base.__name__ in names:
                names[base.__name__] += 1
                break
    gradients = 0
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import ops

        gradients = sum(name.startswith("CustomGradient-") for name in ops._gradient_registry._registry)
    return {"models": models, "graphs": names["FuncGraph"], "datasets": names["DatasetV2"], "gradients": gradients}


class JobMemoryProbe(Callback):
    def __init__(self, output: str):
        self.output = Path(output)

    def on_job_start(self, config, **kwargs):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        self.start = memory_mb()["VmRSS"]

    def on_job_end(self, config, job_return, **kwargs):
        record = {"job": config.hydra.job.num, "start_mb": self.start, **memory_mb(), **alive()}
        with self.output.open("a") as file:
            file.write(json.dumps(record) + "\n")
