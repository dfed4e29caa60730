"""A new user's first minutes, timed: on an empty kernel cache, ``nnlab demo vanishing``, then the
other demos one after the other (and a first ``Trainer.step``), with the background warm-up the
first demo starts left on -- what a new user waits for, unlike ``nnlab bench --cold``, which
times what each command compiles by itself.

    python benchmarks/new_user.py [--demos vanishing,meanfield,exploding] [--gap SECONDS] [--json FILE]

``--gap`` is the time between commands (a user reading the output); each command runs in a fresh
process at its default size; the table gives its wall and CPU seconds (user + system). At the end
the script waits for the background warm-up to finish and says how long after the first command
it ended. The machine may be shared: say its load beside the numbers.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from nnlab.benchmark import _COLD_STEP as STEP  # the first step nnlab bench --cold times

LAUNCH = "import sys; from nnlab_cli.main import main; sys.exit(main())"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demos", default="vanishing,meanfield,exploding,residual,batchnorm,dead-relu")
    ap.add_argument("--gap", type=float, default=0.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnlab-new-user-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, NNLAB_WARMUP="1")
        env.pop("NNLAB_QUIET", None)
        start = time.perf_counter()
        cmds = [(f"nnlab demo {d}", [sys.executable, "-c", LAUNCH, "demo", d]) for d in args.demos.split(",")]
        cmds.append(("first Trainer.step (dense, float32, SGD)", [sys.executable, "-c", STEP]))
        for i, (label, cmd) in enumerate(cmds):
            if i:
                time.sleep(args.gap)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            waited = "waiting for the background warm-up" in proc.stderr
            rows.append(dict(command=label, start_s=t0 - start, wall_s=wall, cpu_s=cpu, exit=proc.returncode,
                             waited_for_warmup=waited))
            print(f"{label:42s} at {t0 - start:6.1f} s: wall {wall:6.1f} s  CPU {cpu:6.1f} s  exit {proc.returncode}"
                  + ("  (waited for the warm-up)" if waited else ""), flush=True)
        code = "from nnlab import warmup; print(warmup.background_pid() or '')"
        while subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip():
            time.sleep(2.0)
        done = time.perf_counter() - start
        print(f"background warm-up ended {done:.0f} s after the first command started", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gap_s": args.gap, "rows": rows, "warmup_ended_s": done}, fh, indent=2)


if __name__ == "__main__":
    main()
