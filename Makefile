# fastmp: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON   ?= python3
VENV     ?= .venv
# How a venv is made for $(PYTHON) (make matrix sets it per interpreter).
MKVENV   ?= $(PYTHON) -m venv
VPY      := $(VENV)/bin/python
PYTEST_ARGS ?=
# Tests that exercise C code, run under ASan/UBSan by `make sanitize`.
SANITIZE_TESTS ?= tests
SAN_TREE := build/sanitize

.PHONY: all venv build inplace demo examples bench test sanitize interpreters matrix conformance conformance-tree clean

all: build

# The venv with the build and test dependencies (from PyPI).
$(VENV)/.ready: requirements-test.txt
	@# strace lets a test count the system calls of a send (Debian package)
	command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; } || echo "strace not installed: the system-call test will be skipped"
	$(MKVENV) $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-test.txt
	touch $@

venv: $(VENV)/.ready

# Build and install fastmp into the venv, as a user would.
build: venv
	FASTMP_WERROR=1 $(VPY) -m pip install --quiet --no-build-isolation --force-reinstall --no-deps .

examples: build
	@for f in examples/*.py; do \
		echo "=== $$f"; \
		(cd examples && ../$(VPY) -m fastmp $$(basename $$f)) || exit 1; \
	done

bench: build
	$(VPY) -m bench

demo: examples bench

test: build
	timeout -k 30 1700 $(VPY) -m pytest $(PYTEST_ARGS)

# $(call fastmp_tree,PYTHON,DIR,ENV): build the extension with PYTHON (and
# the ENV settings) and lay out an importable fastmp in DIR, leaving Lib/ clean.
define fastmp_tree
	rm -rf $(2) $(2)-build $(2)-tmp
	$(3) $(1) setup.py -q build_ext --build-lib $(2)-build --build-temp $(2)-tmp --force
	mkdir -p $(2)
	cp -r Lib/fastmp $(2)/
	find $(2) -name '*.so' -delete
	cp $(2)-build/fastmp/_fastmp*.so $(2)/fastmp/
endef

# ASan/UBSan build into a private tree, then the tests.
sanitize: venv
	$(call fastmp_tree,$(VPY),$(SAN_TREE),FASTMP_SANITIZE=1)
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(SAN_TREE) FASTMP_SANITIZED=1 \
	timeout -k 30 2400 $(VPY) -m pytest -p no:randomly $(SANITIZE_TESTS) $(PYTEST_ARGS)

# Every supported interpreter: 3.10-3.13 from pyenv; 3.14 and 3.15, which
# pyenv here does not carry, from Debian's builds that the shared tool
# installs under /opt/fastmp-python/<v>, each with a `venv` script (their
# ensurepip cannot bootstrap pip).
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $$HOME/.pyenv)
SHARED   ?= ../shared
PROVISION := $(SHARED)/tools/provision-python
OPT_PYTHONS := /opt/fastmp-python
MATRIX   ?= 3.10 3.11 3.12 3.13 3.14 3.15
# e.g. --reuse (keep cells already run), --methods spawn, --only REGEX
CONFORMANCE_ARGS ?=
pyenv_python = $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python3)))
py_for = $(or $(call pyenv_python,$(1)),$(wildcard $(OPT_PYTHONS)/$(1)/root/usr/bin/python$(1)),$(error CPython $(1) is neither under $(PYENV_ROOT)/versions nor under $(OPT_PYTHONS) (and $(PROVISION) could not install it)))
mkvenv_for = $(if $(call pyenv_python,$(1)),$(call py_for,$(1)) -m venv,$(OPT_PYTHONS)/$(1)/venv)

# Install the interpreters of $(MATRIX) that pyenv lacks, when the shared
# tool is there (it returns at once for one already installed).
interpreters:
	@for v in $(MATRIX); do \
		if ! ls $(PYENV_ROOT)/versions/$$v.*/bin/python3 >/dev/null 2>&1 && [ -x $(PROVISION) ]; then \
			$(PROVISION) $$v >/dev/null || exit 1; \
		fi; \
	done

# `make test` on each interpreter, each in its own venv; goes on past a
# failing interpreter and names the failing ones at the end.
matrix: interpreters
	@failed=; $(foreach v,$(MATRIX),$(MAKE) --no-print-directory test PYTHON=$(call py_for,$(v)) MKVENV="$(call mkvenv_for,$(v))" VENV=.venv-$(v) || failed="$$failed $(v)";) \
	test -z "$$failed" || { echo "make test failed on:$$failed"; exit 1; }

# CPython's own suite on fastmp and on the standard package, every
# interpreter and start method; writes conformance-out/summary.md.
conformance: interpreters
	@for v in $(MATRIX); do $(MAKE) --no-print-directory conformance-tree V=$$v || exit 1; done
	$(PYTHON) tools/conformance.py --runner $(SHARED)/conformance/run_suite.py $(CONFORMANCE_ARGS) $(foreach v,$(MATRIX),--python $(v)=.venv-$(v)/bin/python --tree $(v)=build/conformance/$(v))

# The venv of interpreter $(V) and a fastmp built for it.
conformance-tree:
	$(MAKE) --no-print-directory venv PYTHON=$(call py_for,$(V)) MKVENV="$(call mkvenv_for,$(V))" VENV=.venv-$(V)
	$(call fastmp_tree,.venv-$(V)/bin/python,build/conformance/$(V),)

# Development build for PYTHONPATH=Lib, with $(PYTHON).  The new .so is
# renamed into place, so processes running the old one are not disturbed.
inplace:
	FASTMP_WERROR=1 $(PYTHON) setup.py -q build_ext --build-lib build/inplace --build-temp build/inplace-tmp
	for so in build/inplace/fastmp/_fastmp*.so; do \
		cp $$so Lib/fastmp/.$$(basename $$so).new && mv -f Lib/fastmp/.$$(basename $$so).new Lib/fastmp/$$(basename $$so); \
	done
	@# byte-compile as `pip install` does: without .pyc files (and with
	@# PYTHONDONTWRITEBYTECODE set) every spawned child compiles fastmp, and
	@# the benchmark's own modules, anew
	$(PYTHON) -m compileall -q Lib/fastmp bench

clean:
	rm -rf build dist conformance-out Lib/*.egg-info Lib/fastmp/*.so
