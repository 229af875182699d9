"""Small helpers shared by the bench_*.py programs (not part of the package).

Every benchmark measures metastore and its baseline in the same run, on the
same files, alternating rounds so that machine noise hits both alike, and
prints ratios rather than absolute claims.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = sys.executable


@dataclass
class Run:
    """One timed child process: wall seconds, peak RSS (largest process, MB),
    and the CPU seconds (user + system) of it and every process it waited for."""

    seconds: float
    peak_mb: float
    stdout: str
    cpu: float = 0.0


def run_child(args: Sequence[str], env: dict[str, str] | None = None) -> Run:
    """Run a child process to completion; time it and read its peak memory.

    Peak memory is the largest resident set of the child or of any process it
    waited for (ru_maxrss of RUSAGE_CHILDREN, measured as a difference is not
    possible, so each measurement runs in a fresh wrapper process).
    """
    wrapper = (
        "import resource,subprocess,sys,time,json;"
        "t=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "dt=time.perf_counter()-t;"
        "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
        "m=u.ru_maxrss/1024;"
        "sys.stderr.write(p.stderr);"
        "print(json.dumps({'rc':p.returncode,'s':dt,'mb':m,'out':p.stdout,"
        "'cpu':u.ru_utime+u.ru_stime}))"
    )
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [PYTHON, "-c", wrapper, *args], capture_output=True, text=True, env=full_env
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark wrapper failed: {proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] not in (0,):
        raise SystemExit(f"{' '.join(args)} exited {result['rc']}:\n{proc.stderr}")
    return Run(result["s"], result["mb"], result["out"], result["cpu"])


#: Runs ``metastore ARGS...`` in the process it is given to (``python -c``);
#: prints, as the last line, its exit status, its own CPU (the writing
#: process) and its children's (the workers), in seconds.  ``{prelude}`` runs
#: first, with ``sys.argv[1:]`` still the driver's own arguments; ``{skip}``
#: of them come before metastore's.
_CPU_DRIVER = """
import json, resource, sys
{prelude}
from metastore.cli import main
sys.argv = ["metastore", *sys.argv[1 + {skip}:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
def cpu(who):
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime
print(json.dumps({{"rc": code, "self": cpu(resource.RUSAGE_SELF),
                  "children": cpu(resource.RUSAGE_CHILDREN)}}))
"""


def cpu_driver(prelude: str = "", skip: int = 0) -> str:
    """``python -c`` code running ``metastore ARGS...`` and printing its CPU.

    The last line it prints is JSON: ``rc`` (exit status), ``self`` (the
    writing process's CPU, s) and ``children`` (the workers', s).
    """
    return _CPU_DRIVER.format(prelude=prelude, skip=skip)


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def self_peak_mb() -> float:
    """Peak RSS of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_page_cache(paths: Sequence[Path]) -> None:
    """Read every file once so both sides start with the same warm cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


def ensure_archive(out: Path, images: int, size: int) -> list[Path]:
    """Generate (or reuse) the deterministic synthetic archive."""
    marker = out / f".generated-{images}-{size}"
    if not marker.exists():
        sys.path.insert(0, str(HERE))
        from gen_archive import generate

        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True)
        generate(out, images, size)
        marker.touch()
    return sorted(p for p in out.rglob("*.dcm"))
