"""Sweeps: Hydra's default launcher runs every job in one process, and each job leaves it as it found it.

Measured before `fracture.job_memory` (TensorFlow, this sweep): every job kept its 62 traced graphs alive through
TensorFlow's gradient registry and the process grew about 20 MB a job (the tiny CNN at 48 px); 4 EffB3
`fast_dev_run` jobs reached 11 GB (measured when the leak was reported), and peak at 4.86-4.96 GB now.
"""

import json
import os
import sys

import keras
import pytest
from conftest import DEMO_SMALL, REPO_ROOT, run_cli

JOBS = 5


def sweep_memory(tmp_path) -> list[dict]:
    """Per job: peak resident memory and the models, graphs, tf.data pipelines and custom gradients left alive
    after it ended (`tests/job_memory_probe.py`)."""
    records = tmp_path / "memory.jsonl"
    result = run_cli(
        "fracture.train",
        "-m",
        *DEMO_SMALL,
        "trainer.epochs=1",
        "eval.bootstrap_resamples=50",
        f"seed={','.join(str(seed) for seed in range(JOBS))}",
        f"paths.data_dir={tmp_path}/data",
        f"hydra.sweep.dir={tmp_path}/sweep",
        "+hydra.callbacks.memory._target_=job_memory_probe.JobMemoryProbe",
        f"+hydra.callbacks.memory.output={records}",
        backend=keras.backend.backend(),
        env={"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in records.read_text().splitlines()]


@pytest.mark.slow  # about 50 s a backend on 2 cores; the default suite stays under 15 minutes
@pytest.mark.backend
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak from /proc/self/status")
def test_a_sweeps_peak_memory_stays_flat_from_the_second_job_on(tmp_path):
    jobs = sweep_memory(tmp_path)
    assert [job["job"] for job in jobs] == list(range(JOBS))
    # Nothing of a finished job is still alive: exact counts, the same on every machine.
    for job in jobs:
        assert (job["models"], job["graphs"], job["datasets"], job["gradients"]) == (0, 0, 0, 0), job
    # The peak: the first job also loads libraries and warms allocators, so later jobs are compared with the
    # second. A job's working set W is what its training added on top of the process (the first job's peak
    # minus its start). Whatever a job keeps stays until the end, so a leak of a job's model and graphs grows
    # the peak by a sizeable part of W at each job; allocator noise does not grow with the job count. Bound:
    # over the last JOBS - 2 jobs, a growth under W / 4 in all, that is under W / 12 a job (the leak above
    # was 20 MB a job of W = 116 MB, a growth of 78 MB against a bound of 29 MB).
    working_set = jobs[0]["VmHWM"] - jobs[0]["start_mb"]
    growth = max(job["VmHWM"] for job in jobs[2:]) - jobs[1]["VmHWM"]
    peaks = [round(job["VmHWM"]) for job in jobs]
    assert growth < working_set / 4, (
        f"peaks {peaks} MB: grew {growth:.0f} MB, one job's working set is {working_set:.0f} MB"
    )
