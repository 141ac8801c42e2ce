"""The README's example programs (examples/) run unchanged on fastmp
through `python -m fastmp` and print what they should."""
import os

import pytest

from support import ROOT, run_python

EXAMPLES = os.path.join(ROOT, "examples")

EXPECTED = {
    "pipes_and_queues.py": "pipe echo: HELLO\npipe echo: FASTMP\n"
                           "queue squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]\n",
    "pool_map.py": "map: [0, 1, 8, 27, 64, 125, 216, 343, 512, 729]\n"
                   "imap sum: 2499500025000000\napply_async: 343\n",
    # The standard package would time out here; fastmp names the lost worker.
    "worker_crash.py": "map failed: WorkerLostError\npool still works: 50\n",
    "shared_state.py": "counter: 20000\narray: [-1.5, -2.5, -3.5]\n"
                       "shared_memory: b'\\x00\\x01\\x02\\x03\\x04\\x05\\x06\\x07'\n",
    "manager_objects.py": "dict: {0: 0, 1: 1, 2: 4, 3: 9}\nlist: [0, 1, 2, 3]\n",
}


def test_every_example_has_an_expectation():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(EXPECTED)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_runs_on_fastmp(example):
    out = run_python("-m", "fastmp", example, cwd=EXAMPLES, timeout=50)
    assert out.returncode == 0, out.stderr
    assert out.stdout == EXPECTED[example]
