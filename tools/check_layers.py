"""Check the layering of the C tree Modules/_fastmp/ (see README.md,
"Where things live"): each folder may include headers of its own folder
and of the folders below it in LAYERS, never of one above it.  Headers
are included by their path from Modules/_fastmp ("core/errors.h"), so
the folder of every include is in its text.  module.c, at the top, may
include any folder.  And forks are tracked in one place: pthread_atfork
is named in core/fork.c only, which calls it once (every other part adds
hooks through core/fork.h).

It also checks that core/spin.{c,h} hold the one spin policy: outside
them no file defines a spin budget (a #define whose name contains SPIN,
LINGER or YIELD) nor spins on its own (calls sched_yield(), cpu_relax()
or fastmp_cpu_relax(), or issues a pause instruction: __builtin_ia32_pause,
_mm_pause, asm "pause"/"yield").  Comments are not looked at.

  python3 tools/check_layers.py [ROOT]

Prints one line per violation and exits 1 if there is any, else 0."""
import os
import re
import sys

# Bottom first: a folder may use only itself and the folders before it.
LAYERS = ["core", "pickle", "synchronize", "shm", "queues", "connection",
          "pool", "managers"]
TOP_FILES = {"module.c"}
# Our headers are included with quotes, every other one with <...>.
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
FORK_TRACKER = "core/fork.c"
ATFORK = re.compile(r"\bpthread_atfork\b")
ATFORK_CALL = re.compile(r"\bpthread_atfork\s*\(")
# The one spin policy, and what a spin of its own looks like elsewhere.
SPIN_FILES = {"core/spin.c", "core/spin.h"}
SPIN_BUDGET = re.compile(r'^\s*#\s*define\s+(\w*(?:SPIN|LINGER|YIELD)\w*)', re.M)
SPIN_STEP = re.compile(r'\b(sched_yield|(?:fastmp_)?cpu_relax|__builtin_ia32_pause|_mm_pause)\s*\('
                       r'|\basm\b[^;]*"\s*(?:pause|yield)\b')
COMMENT = re.compile(r'/\*.*?\*/|//[^\n]*', re.S)


def violations(tree):
    """The layering violations under `tree` (Modules/_fastmp), as strings."""
    found = []
    for entry in sorted(os.listdir(tree)):
        path = os.path.join(tree, entry)
        if os.path.isdir(path):
            if entry not in LAYERS:
                found.append(f"{entry}/: a folder that is not in the layer order")
        elif entry.endswith((".c", ".h")) and entry not in TOP_FILES:
            found.append(f"{entry}: a C file outside the part folders")
    for dirpath, _dirs, files in os.walk(tree):
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, tree).replace(os.sep, "/")
            folder = rel.split("/")[0] if "/" in rel else None
            if folder is not None and folder not in LAYERS:
                continue                # reported above
            with open(path, encoding="utf-8") as f:
                text = f.read()
            found.extend(_fork_tracking(rel, text))
            if rel not in SPIN_FILES:
                found += spin_violations(rel, COMMENT.sub(" ", text))
            for included in INCLUDE.findall(text):
                where = f"{rel}: #include \"{included}\""
                if "/" not in included:
                    found.append(f"{where}: include by the path from Modules/_fastmp")
                    continue
                target = included.split("/")[0]
                if target not in LAYERS:
                    found.append(f"{where}: {target}/ is not in the layer order")
                elif not os.path.isfile(os.path.join(tree, included)):
                    found.append(f"{where}: no such header")
                elif folder is not None and LAYERS.index(target) > LAYERS.index(folder):
                    found.append(f"{where}: {target}/ is above {folder}/ "
                                 f"(order: {' < '.join(LAYERS)})")
    return found + _fork_tracker_missing(tree)


def _fork_tracking(rel, text):
    """The violations of the one fork tracker in file `rel`."""
    if rel == FORK_TRACKER:
        calls = len(ATFORK_CALL.findall(text))
        if calls != 1:
            return [f"{rel}: calls pthread_atfork {calls} times, not once"]
    elif ATFORK.search(text):
        return [f"{rel}: pthread_atfork outside {FORK_TRACKER} "
                "(add fork hooks with fastmp_fork_add_hooks, core/fork.h)"]
    return []


def _fork_tracker_missing(tree):
    if os.path.isfile(os.path.join(tree, *FORK_TRACKER.split("/"))):
        return []
    return [f"{FORK_TRACKER}: missing (the one pthread_atfork registration)"]


def spin_violations(rel, code):
    """What in `code` (file `rel`, comments removed) spins outside core/spin."""
    found = [f"{rel}: #define {name}: spin budgets belong in core/spin.c"
             for name in SPIN_BUDGET.findall(code)]
    found += [f"{rel}: {m.group(1) or 'asm pause'}: spin through fastmp_spin (core/spin.h)"
              for m in SPIN_STEP.finditer(code)]
    return found


def main(argv):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tree = argv[1] if len(argv) > 1 else os.path.join(root, "Modules", "_fastmp")
    found = violations(tree)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
