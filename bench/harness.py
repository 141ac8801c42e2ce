"""The benchmark runner.

A workload is a function ``fn(mp, n)`` in a module of ``bench.workloads``,
registered with ``@workload``: it does ``n`` operations with the package
``mp`` (fastmp or multiprocessing) and returns the seconds its measured
part took (set-up such as starting processes is left out where the workload
says so).  The runner starts a fresh interpreter per (workload,
implementation, repeat), keeps the best time, and prints operations per
second and the ratio fastmp/stdlib.
"""
import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import time
from dataclasses import dataclass

IMPLS = ("fastmp", "stdlib")


@dataclass
class Workload:
    name: str
    fn: object
    n: int
    target: float
    unit: str
    about: str


REGISTRY = {}


def workload(name, n, target=None, unit="op", about=""):
    """Register ``fn(mp, n) -> seconds`` as the workload `name`; `target` is
    the ratio fastmp/stdlib the issue asks for."""
    def register(fn):
        if name in REGISTRY:
            raise ValueError("duplicate workload %r" % name)
        REGISTRY[name] = Workload(name, fn, n, target, unit, about or (fn.__doc__ or "").strip())
        return fn
    return register


def load_workloads():
    import bench.workloads as pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module("bench.workloads." + info.name)
    return REGISTRY


def _import_impl(impl):
    if impl == "fastmp":
        import fastmp
        return fastmp
    if impl == "stdlib":
        import multiprocessing
        return multiprocessing
    raise ValueError("unknown implementation %r" % impl)


def _child(impl, name, n):
    """Run one workload once in this interpreter; print its time as JSON."""
    wl = load_workloads()[name]
    mp = _import_impl(impl)
    seconds = wl.fn(mp, n)
    if not isinstance(seconds, float) or seconds <= 0:
        raise RuntimeError("workload %s returned %r, not a time" % (name, seconds))
    print(json.dumps({"seconds": seconds}))


def _run_once(impl, wl, n, timeout):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-m", "bench", "--child", impl, wl.name, str(n)],
                         capture_output=True, text=True, timeout=timeout, env=env,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError("%s on %s failed:\n%s" % (wl.name, impl, out.stderr[-3000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def _fmt_rate(rate):
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if rate >= div:
            return "%.2f%s" % (rate / div, suffix)
    return "%.2f" % rate


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--only", default="", help="regex on workload names")
    ap.add_argument("--repeat", type=int, default=3, help="runs per workload and implementation; the best counts")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every workload's n")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "WORKLOAD", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        _child(a.child[0], a.child[1], int(a.child[2]))
        return
    workloads = [w for name, w in sorted(load_workloads().items()) if re.search(a.only, name)]
    if a.list:
        for w in workloads:
            print("%-28s n=%-9d target %s  %s" % (w.name, w.n, w.target, w.about))
        return
    results = []
    print("%-28s %14s %14s %8s %8s" % ("workload", "fastmp op/s", "stdlib op/s", "ratio", "target"))
    for w in workloads:
        n = max(1, int(w.n * a.scale))
        row = {"workload": w.name, "n": n, "target": w.target}
        # the implementations take turns, so that a drift in the machine's
        # load falls on both alike
        times = {impl: [] for impl in a.impl}
        for _ in range(a.repeat):
            for impl in a.impl:
                times[impl].append(_run_once(impl, w, n, a.timeout))
        for impl, seconds in times.items():
            row[impl] = n / min(seconds)
        ratio = row["fastmp"] / row["stdlib"] if set(IMPLS) <= set(row) else None
        row["ratio"] = ratio
        results.append(row)
        print("%-28s %14s %14s %8s %8s" % (
            w.name,
            _fmt_rate(row["fastmp"]) if "fastmp" in row else "-",
            _fmt_rate(row["stdlib"]) if "stdlib" in row else "-",
            "%.2fx" % ratio if ratio else "-",
            ">= %.1fx" % w.target if w.target else "-"), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"python": sys.version.split()[0], "time": time.time(), "results": results}, f, indent=1)
