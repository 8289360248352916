#!/usr/bin/env python3
"""Where a refresh's time goes, hop by hop.

Run one traced refresh, keeping the operator's log and podsim's:

    REFRESH_BENCH_KEEP=1 REFRESH_BENCH_LOG=autoheal=debug,info \
    REFRESH_BENCH_PODSIM_LOG=podsim=debug \
        cargo bench --bench refresh -- --runs 1 2> bench.log
    hack/refresh-hops.py bench.log /tmp/autoheal-bench-refresh-*/operator-*.log

It prints, per hop, the number of Instances (S) or Deployment Pods (D) timed and the
minimum, median and maximum in milliseconds: an Instance's states (from the operator's
"state entered" lines) and its Pod's binding, Running status and final removal (from
podsim's lines). The ScalingGroup's lines include the group's first scale-up.
"""
import collections
import datetime
import re
import statistics
import sys

TIME = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+)Z")
COLOR = re.compile(r"\x1b\[[0-9;]*m")
POD = re.compile(r'pod="([^"/]+)/([^"]+)"')


def read(paths):
    seen = collections.defaultdict(dict)  # (side, name) -> {event: ms}
    for path in paths:
        for line in open(path, errors="replace"):
            line = COLOR.sub("", line)
            m = TIME.match(line)
            if not m:
                continue
            ms = datetime.datetime.fromisoformat(m.group(1)).timestamp() * 1000
            pod = POD.search(line)
            if pod:
                ns, name = pod.groups()
                key = ("D" if "deploy" in ns else "S", name)
                if "bound Pod" in line:
                    seen[key].setdefault("bound", ms)
                elif "wrote Pod status" in line and "phase=Running" in line:
                    seen[key].setdefault("running", ms)
                elif "Pod terminated" in line:
                    seen[key].setdefault("pod gone", ms)
            elif "state entered" in line:
                state = re.search(r"state=(\S+)", line).group(1)
                name = re.search(r"instance=(\S+)", line).group(1)
                seen[("S", name)].setdefault(state, ms)
            elif "instance terminated" in line:
                name = re.search(r"instance=(\S+)", line).group(1)
                seen[("S", name)].setdefault("gone", ms)
    return seen


def hop(seen, side, a, b):
    xs = sorted(e[b] - e[a] for k, e in seen.items() if k[0] == side and a in e and b in e)
    if xs:
        print(f"{side} {a:>20} -> {b:<20} n={len(xs):4} min={xs[0]:7.0f} "
              f"median={statistics.median(xs):7.0f} max={xs[-1]:7.0f}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    seen = read(sys.argv[1:])
    for a, b in [("Pending", "bound"), ("bound", "running"), ("running", "InService"),
                 ("Pending", "InService"), ("Terminating", "Terminating:Proceed"),
                 ("Terminating:Proceed", "pod gone"), ("pod gone", "Terminated"),
                 ("Terminated", "gone")]:
        hop(seen, "S", a, b)
    hop(seen, "D", "bound", "running")


if __name__ == "__main__":
    main()
