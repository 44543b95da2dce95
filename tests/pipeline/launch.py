"""Run the `geostrata` CLI in a subprocess, alone or under torchrun with N CPU processes."""

import subprocess
import sys


def geostrata(*args: str, processes: int = 1) -> None:
    """`python -m geostrata.cli ARGS`, or the same under `torchrun --nproc_per_node N`."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
        ]
    proc = subprocess.run(
        [*launcher, "-m", "geostrata.cli", *args], capture_output=True, text=True, timeout=420
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-8000:]
