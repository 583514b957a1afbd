"""Running the real ``imret`` entry point in a child process, for the CLI tests."""
import os
import subprocess
import sys

# One thread per library in the children: on shared, busy cores two spinning threads cost
# several times the work of one. Results do not depend on it.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def command(*args) -> list[str]:
    return [sys.executable, "-m", "imret", *map(str, args)]


def run_imret(*args, check=True, env=None, timeout=600) -> subprocess.CompletedProcess:
    """``imret ARGS`` → the finished process (text output); with ``check``, a failure is an
    AssertionError that shows the command and its stderr."""
    proc = subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"imret {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc
