"""Run CPython's multiprocessing test-suite (../shared/conformance) for each
interpreter and start method, on fastmp and on the standard package, and
write a summary table (passed / failed / skipped per cell).

  python3 tools/conformance.py --python 3.11=/path/python3 [--python ...]
      --tree 3.11=build/conformance/3.11 [--methods fork spawn forkserver]
      [--out conformance-out] [--reuse] [--runner PATH/run_suite.py]

`--tree` names a directory holding an importable fastmp built for that
interpreter (see `make conformance`)."""
import argparse
import json
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(os.path.dirname(ROOT), "shared", "conformance", "run_suite.py")


def _pairs(items):
    """VERSION=PATH items -> {version: absolute path}: the runner works in a
    temporary directory, so relative paths would not resolve there."""
    return {v: os.path.abspath(p) for v, p in (item.split("=", 1) for item in items)}


def _default_sigint():
    """In the runner: SIGINT at its default disposition.  A background job
    of a script starts with it ignored, and the suite's tests that send
    SIGINT would then fail on both packages."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _counts(path):
    """({outcome: count}, {test: outcome}, interpreter version) of a run."""
    with open(path) as f:
        run = json.load(f)
    outcomes = list(run["results"].values())
    return ({k: outcomes.count(k) for k in ("pass", "fail", "skip")}, run["results"],
            run["python"])


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", action="append", required=True, help="VERSION=INTERPRETER")
    ap.add_argument("--tree", action="append", required=True, help="VERSION=DIR with fastmp")
    ap.add_argument("--methods", nargs="+", default=["fork", "spawn", "forkserver"])
    ap.add_argument("--out", default=os.path.join(ROOT, "conformance-out"))
    ap.add_argument("--only", default="")
    ap.add_argument("--runner", default=RUNNER,
                    help="the suite runner (default: %(default)s)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a cell's JSON from an earlier run instead of running it again")
    a = ap.parse_args()
    runner = os.path.abspath(a.runner)
    if not os.path.exists(runner):
        sys.exit("%s is missing: the conformance runner comes with ../shared" % runner)
    pythons, trees = _pairs(a.python), _pairs(a.tree)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for version, python in pythons.items():
        for method in a.methods:
            cells = {}
            for target in ("fastmp", "stdlib"):
                out = os.path.join(a.out, "%s-%s-%s.json" % (version, method, target))
                cmd = [sys.executable, runner, "--python", python, "--method", method,
                       "--target", target, "--json", out]
                if target == "fastmp":
                    cmd += ["--pythonpath", trees[version]]
                if a.only:
                    cmd += ["--only", a.only]
                if not (a.reuse and os.path.exists(out)):
                    print("==", " ".join(cmd), flush=True)
                    subprocess.run(cmd, check=True, preexec_fn=_default_sigint)
                cells[target] = _counts(out)
            ours, theirs = cells["fastmp"][1], cells["stdlib"][1]
            regressions = sorted(t for t, o in theirs.items() if o == "pass" and ours.get(t) != "pass")
            rows.append((cells["fastmp"][2], method, cells["fastmp"][0], cells["stdlib"][0], regressions))
    lines = ["| Python | start method | fastmp passed / failed / skipped | stdlib passed / failed / skipped | passing on stdlib, not on fastmp |",
             "|---|---|---|---|---|"]
    for version, method, ours, theirs, regressions in rows:
        lines.append("| %s | %s | %d / %d / %d | %d / %d / %d | %s |" % (
            version, method, ours["pass"], ours["fail"], ours["skip"],
            theirs["pass"], theirs["fail"], theirs["skip"], ", ".join(regressions) or "none"))
    table = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "summary.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
