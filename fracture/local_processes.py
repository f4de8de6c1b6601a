"""`python -m fracture.train trainer.num_processes=N` on one machine: start the N training processes, watch them.

On a cluster the launcher starts the processes (`hydra/launcher=slurm` with `tasks_per_node`, or `srun`); here
this command does. It runs `python -m fracture.train` N times with the same overrides, each with its
`trainer.process_id`, a coordinator on a free port of 127.0.0.1, and this run's folder, and a share of the
CPUs each (`fracture.processes.thread_env`). Process 0 prints to this terminal and writes the run folder;
process k > 0 prints to `<run>/rank<k>.log` only. This process starts nothing of the backend itself.

It passes each Ctrl-C and SIGTERM on to every process (they stop after the same batch, see
`fracture.training.guards.InterruptGuard`), and when one process fails, it stops the others at once instead
of leaving them to wait for their peer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fracture.console import console
from fracture.processes import free_loopback_port, thread_env

# The overrides this module adds to each process's command line; a resume command leaves them out.
SPAWN_KEYS = (
    "trainer.process_id",
    "trainer.coordinator",
    "hydra.run.dir",
    "hydra.output_subdir",
    "hydra/job_logging",
)
SIGNALS = (signal.SIGINT, signal.SIGTERM)  # passed on to every process
# After one process fails, how long the others may take to stop by themselves before they are killed.
STOP_GRACE_S = 10.0


def without_spawn_keys(overrides: list[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in SPAWN_KEYS]


def process_command(overrides: list[str], process_id: int, port: int, run_dir: Path) -> list[str]:
    """The command line of training process `process_id`: this run's overrides, and its place in the group."""
    folder = str(run_dir.resolve())
    quoted = "'" + folder.replace("\\", "\\\\").replace("'", "\\'") + "'"  # Hydra's override grammar
    command = [sys.executable, "-m", "fracture.train", *without_spawn_keys(overrides)]
    command += [f"trainer.process_id={process_id}", f"trainer.coordinator=127.0.0.1:{port}"]
    command += [f"hydra.run.dir={quoted}", "hydra.output_subdir=null"]  # .hydra/ is this process's to write
    if process_id:
        command.append("hydra/job_logging=disabled")  # its output goes to rank<k>.log whole
    return command


class LocalProcesses:
    """The N training processes of one run on this machine."""

    def __init__(self, num_processes: int, overrides: list[str], run_dir: str | Path):
        self.num_processes = num_processes
        self.overrides = list(overrides)
        self.run_dir = Path(run_dir)
        self.processes: list[subprocess.Popen] = []

    def log_of(self, process_id: int) -> Path:
        return self.run_dir / f"rank{process_id}.log"

    def start(self) -> None:
        port = free_loopback_port()
        threads = max(1, (os.cpu_count() or 1) // self.num_processes)
        env = {**os.environ, **thread_env(threads)}
        console.print(
            f"starting {self.num_processes} training processes ({threads} thread(s) each), coordinator 127.0.0.1:{port}"
        )
        for process_id in range(self.num_processes):
            command = process_command(self.overrides, process_id, port, self.run_dir)
            output = open(self.log_of(process_id), "ab") if process_id else None  # noqa: SIM115 (the child owns it)
            # A session of its own: a Ctrl-C at the terminal reaches this process only, which passes it on once.
            self.processes.append(
                subprocess.Popen(command, env=env, stdout=output, stderr=output, start_new_session=True)
            )
            if output is not None:
                output.close()
            console.print(f"  process {process_id}: pid {self.processes[-1].pid}", style="dim")

    def signal_all(self, signum: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def wait(self) -> int:
        """Wait for every process; returns process 0's exit code, or the first failure's (a failure stops the
        rest, with a line saying which process failed and where its output is)."""
        handlers = {signum: signal.signal(signum, lambda s, _: self.signal_all(s)) for signum in SIGNALS}
        try:
            while True:
                codes = [process.poll() for process in self.processes]
                failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
                if failed and any(code is None for code in codes):
                    return self.stop_after_failure(*failed[0])
                if all(code is not None for code in codes):
                    return codes[0] if codes[0] else next((code for code in codes if code), 0)
                time.sleep(0.2)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)

    def stop_after_failure(self, process_id: int, code: int) -> int:
        """Process `process_id` ended with `code` while others still train: give them a moment to stop by
        themselves (an interrupt that all of them agreed on), then end them."""
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in self.processes):
            time.sleep(0.2)
        running = [i for i, process in enumerate(self.processes) if process.poll() is None]
        if running:
            where = "above" if process_id == 0 else f"in {self.log_of(process_id)}"
            print(
                f"error: training process {process_id} exited with code {code} (its output is {where}); "
                f"stopping process(es) {running}, which cannot go on without it.",
                file=sys.stderr,
            )
            for i in running:
                self.processes[i].kill()
                self.processes[i].wait()
        return code


def run_local_processes(num_processes: int, overrides: list[str], run_dir: str | Path) -> int:
    """Start `num_processes` training processes for this run and wait for them; returns the exit code."""
    group = LocalProcesses(num_processes, overrides, run_dir)
    group.start()
    try:
        return group.wait()
    finally:
        group.signal_all(signal.SIGKILL)  # nothing outlives this command (a no-op when all have ended)
