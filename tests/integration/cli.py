"""Running the `trunkline` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_trunkline(
    folder: Path, *arguments: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trunkline`` in `folder` with no TRUNKLINE_* variable of this process.

    `env` adds variables, such as ``TRUNKLINE_LOG_LEVEL``, for this run only.
    """
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TRUNKLINE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trunkline", *arguments],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
