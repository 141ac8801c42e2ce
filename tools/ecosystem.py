"""Run the test-suites of libraries built on multiprocessing twice, on the
standard package and on fastmp (`python -m fastmp -m pytest ...`), and
compare them test by test.

    python3 tools/ecosystem.py [--python PY] [--only NAME] [--parmap-tests DIR]

`make ecosystem` runs it.  It makes a venv of its own (default
.venv-ecosystem, on CPython 3.13 from pyenv), installs the suites' needs
from PyPI and fastmp from this checkout, fetches each library's sdist with
`pip download --no-binary :all: --no-deps NAME==VERSION` into
build/ecosystem/, runs each suite on both sides with JUnit XML output, and
prints one table row per suite: tests run, passed on the standard package,
passed on fastmp, and the tests that pass on the standard package only
(listed below the table).  The table also goes to
build/ecosystem/summary.md.

The suites:
- joblib (sdist): its parallel, memmapping, cloudpickle-wrapper,
  missing-multiprocessing and module tests;
- loky (sdist): `tests/`, without the high-memory tests;
- CPython's own `test_concurrent_futures`, through regrtest, from the
  interpreter's `test` package;
- parmap: its sdist ships no tests.  They live in its source repository
  (`test_parmap.py` at tag v1.7.0), which neither PyPI nor Debian
  carries; pass a directory holding that file with --parmap-tests (or
  ECOSYSTEM_PARMAP_TESTS) to run it, otherwise its row says so.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, 'build', 'ecosystem')
# What the suites import besides the library under test (from PyPI).
NEEDS = ['pytest', 'pytest-timeout', 'psutil', 'packaging', 'numpy',
         'threadpoolctl', 'cloudpickle', 'tqdm', 'setuptools', 'wheel']
# Longest a single run of one suite may take.
RUN_LIMIT = 3600


class Suite:
    """One library's tests: where they come from and how they run."""

    def __init__(self, name, version, args, regrtest=False):
        self.name, self.version, self.args = name, version, args
        self.regrtest = regrtest

    @property
    def label(self):
        return '%s %s' % (self.name, self.version) if self.version else self.name


SUITES = [
    Suite('joblib', '1.6.0',
          ['-o', 'addopts=', '-p', 'no:cacheprovider'] +
          ['joblib/test/%s.py' % t for t in (
              'test_parallel', 'test_memmapping', 'test_cloudpickle_wrapper',
              'test_missing_multiprocessing', 'test_module')]),
    Suite('loky', '3.7.0', ['-p', 'no:cacheprovider', 'tests', '--skip-high-memory']),
    Suite('test_concurrent_futures', '', ['test_concurrent_futures'], regrtest=True),
    Suite('parmap', '1.7.0', ['-p', 'no:cacheprovider', 'test_parmap.py']),
]


def default_python():
    """CPython 3.13 from pyenv (it ships the `test` package)."""
    try:
        root = subprocess.run(['pyenv', 'root'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser('~/.pyenv')
    found = sorted(glob.glob(os.path.join(root, 'versions', '3.13.*', 'bin', 'python3')))
    if not found:
        sys.exit('no CPython 3.13 under %s/versions: pass --python' % root)
    return found[-1]


def run(cmd, **kwargs):
    print('+', ' '.join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def make_venv(python, venv):
    """The venv with the suites' needs and fastmp built from this checkout."""
    vpy = os.path.join(venv, 'bin', 'python')
    if not os.path.exists(vpy):
        run([python, '-m', 'venv', venv])
        run([vpy, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'])
        run([vpy, '-m', 'pip', 'install', '--quiet'] + NEEDS)
    run([vpy, '-m', 'pip', 'install', '--quiet', '--no-build-isolation',
         '--force-reinstall', '--no-deps', ROOT])
    return vpy


def fetch_sdist(vpy, suite):
    """The unpacked sdist of `suite` under build/ecosystem/src (fetched
    once), installed into the venv with its dependencies."""
    src = os.path.join(BUILD, 'src', '%s-%s' % (suite.name, suite.version))
    if not os.path.isdir(src):
        downloads = os.path.join(BUILD, 'downloads')
        run([vpy, '-m', 'pip', 'download', '--quiet', '--no-binary', ':all:',
             '--no-deps', '--dest', downloads, '%s==%s' % (suite.name, suite.version)])
        archive, = glob.glob(os.path.join(downloads, '%s-%s.tar.gz' % (suite.name, suite.version)))
        # refuse links and paths out of the directory where tarfile can
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
        with tarfile.open(archive) as tar:
            # the sdist's single top directory is NAME-VERSION
            tar.extractall(os.path.dirname(src), **safe)
    run([vpy, '-m', 'pip', 'install', '--quiet', src])
    return src


def suite_dir(vpy, suite, parmap_tests):
    """The directory a suite runs in, or None with the reason it cannot."""
    if suite.regrtest:
        return BUILD, None
    src = fetch_sdist(vpy, suite)
    if suite.name != 'parmap':
        return src, None
    if not parmap_tests or not os.path.isfile(os.path.join(parmap_tests, 'test_parmap.py')):
        return None, ('its tests are in its source repository only (pass '
                      '--parmap-tests DIR holding test_parmap.py at tag v%s)' % suite.version)
    shutil.copy(os.path.join(parmap_tests, 'test_parmap.py'), src)
    return src, None


def run_side(vpy, suite, cwd, side):
    """Run `suite` on `side` ('stdlib' or 'fastmp'); the JUnit XML path."""
    xml = os.path.join(BUILD, 'results', '%s-%s.xml' % (suite.name, side))
    log = xml[:-4] + '.log'
    os.makedirs(os.path.dirname(xml), exist_ok=True)
    if os.path.exists(xml):
        os.unlink(xml)
    runner = ['-m', 'test', '--junit-xml', xml] if suite.regrtest else \
        ['-m', 'pytest', '--junitxml', xml, '-q']
    cmd = [vpy] + (['-m', 'fastmp'] if side == 'fastmp' else []) + runner + suite.args
    print('+ (in %s) %s  > %s' % (cwd, ' '.join(cmd), log), flush=True)
    started = time.monotonic()
    # the suites' own children must not find this checkout's Lib/ first
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    with open(log, 'wb') as out:
        try:
            code = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  env=env, timeout=RUN_LIMIT).returncode
        except subprocess.TimeoutExpired:
            code = 'timed out'
    print('  exit %s after %.0f s' % (code, time.monotonic() - started), flush=True)
    return xml


def outcomes(xml):
    """{test id: 'passed' | 'failed' | 'skipped'} from a JUnit XML file."""
    if not os.path.exists(xml):
        return {}
    found = {}
    for case in ET.parse(xml).iter('testcase'):
        test_id = '%s::%s' % (case.get('classname', ''), case.get('name', ''))
        tags = {child.tag for child in case}
        if tags & {'failure', 'error'}:
            found[test_id] = 'failed'
        elif 'skipped' in tags or case.get('status') == 'skipped':
            found[test_id] = 'skipped'
        else:
            found.setdefault(test_id, 'passed')
    return found


def compare(stdlib, fastmp):
    """(tests run, passed on stdlib, passed on fastmp, stdlib-only ids)."""
    ids = set(stdlib) | set(fastmp)
    passed_std = {t for t in ids if stdlib.get(t) == 'passed'}
    passed_fmp = {t for t in ids if fastmp.get(t) == 'passed'}
    return len(ids), len(passed_std), len(passed_fmp), sorted(passed_std - passed_fmp)


def report(rows, python):
    lines = ['Interpreter: %s; %s' % (python, time.strftime('%Y-%m-%d')), '',
             '| suite | tests | passed on stdlib | passed on fastmp | stdlib-only passes |',
             '|---|---:|---:|---:|---:|']
    details = []
    for label, result in rows:
        if isinstance(result, str):
            lines.append('| %s | – | – | – | not run: %s |' % (label, result))
            continue
        total, std, fmp, only = result
        lines.append('| %s | %d | %d | %d | %d |' % (label, total, std, fmp, len(only)))
        details += ['%s: passes on stdlib only: %s' % (label, t) for t in only]
    text = '\n'.join(lines + [''] + details) + '\n'
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, 'summary.md'), 'w') as f:
        f.write(text)
    print('\n' + text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--python', help='interpreter for the venv (default: pyenv 3.13)')
    parser.add_argument('--venv', default=os.path.join(ROOT, '.venv-ecosystem'))
    parser.add_argument('--only', action='append', metavar='NAME',
                        help='run only this suite (repeatable)')
    parser.add_argument('--parmap-tests', default=os.environ.get('ECOSYSTEM_PARMAP_TESTS'),
                        metavar='DIR', help="directory holding parmap's test_parmap.py")
    args = parser.parse_args()
    vpy = make_venv(args.python or default_python(), args.venv)
    version = subprocess.run([vpy, '-c', 'import platform; print(platform.python_version())'],
                             capture_output=True, text=True, check=True).stdout.strip()
    rows = []
    for suite in SUITES:
        if args.only and suite.name not in args.only:
            continue
        cwd, why_not = suite_dir(vpy, suite, args.parmap_tests)
        if cwd is None:
            rows.append((suite.label, why_not))
            continue
        results = {side: outcomes(run_side(vpy, suite, cwd, side))
                   for side in ('stdlib', 'fastmp')}
        rows.append((suite.label, compare(results['stdlib'], results['fastmp'])))
    report(rows, 'CPython ' + version)


if __name__ == '__main__':
    main()
