"""`make bench`: run every benchmark script and print one combined table.

Each script appends its rows to ``QGITCONF_BENCH_OUT`` (see common.row); this runner
sets that file, runs the scripts one after another (so they do not compete for the
two cores), then prints every row and exits 1 if any row misses its target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.common import compile_package, print_rows

# bench_distro (issue 20): the first-update receive rows inside a clean Debian 13 with
# the .deb installed (pure-Python dulwich 0.22.7, Python 3.13); needs root and the mirror.
SCRIPTS = [
    "bench_receive",
    "bench_lab",
    "bench_apply",
    "bench_publish",
    "rss_receive",
    "bench_distro",
]


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    out = Path(tempfile.mkdtemp(prefix="qgbench-")) / "rows.jsonl"
    env = dict(os.environ, QGITCONF_BENCH_OUT=str(out))
    compile_package()
    t0 = time.time()
    for name in SCRIPTS:
        if not (here / f"{name}.py").exists():
            print(f"(skipping {name}: not present)")
            continue
        print(f"== {name}", flush=True)
        subprocess.run([sys.executable, "-m", f"tests.bench.{name}", *argv], env=env, check=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print(f"\n== all benchmarks ({time.time() - t0:.0f} s, {os.cpu_count()} cores)")
    print_rows(rows)
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
