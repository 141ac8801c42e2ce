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

.PHONY: all venv build inplace demo examples bench test sanitize fuzz interpreters matrix conformance conformance-tree ecosystem clean

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

# ASan/UBSan build into a private tree, then the tests.  (`build` installs
# fastmp-dropin.pth into the venv, which children started by libraries on
# the drop-in need.)
sanitize: build
	$(call fastmp_tree,$(VPY),$(SAN_TREE),FASTMP_SANITIZE=1)
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(SAN_TREE) FASTMP_SANITIZED=1 \
	timeout -k 30 2400 $(VPY) -m pytest -p no:randomly $(SANITIZE_TESTS) $(PYTEST_ARGS)

# libFuzzer targets (tests/fuzz/) for the code that parses bytes from
# other processes: the frame header, the ring record reader, quick_loads.
# Each runs FUZZ_SECONDS from its seeds in tests/fuzz/corpus/; what it
# learns, and any crash, is kept in build/fuzz/.  Not part of .ci/run.
FUZZ_SECONDS ?= 60
FUZZ_DIR := build/fuzz
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	-IModules/_fastmp -I$$($(VPY) -c "import sysconfig; print(sysconfig.get_paths()['include'])")
fuzz_sources_frame := Modules/_fastmp/connection/frame.c
fuzz_sources_ring := Modules/_fastmp/queues/ring_reader.c Modules/_fastmp/core/futex.c
fuzz_sources_quick_loads := Modules/_fastmp/pickle/quickpickle.c
# quick_loads runs in an embedded Python, whose own memory is never freed
fuzz_link_quick_loads = -L$$($(VPY) -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))") \
	-lpython$$($(VPY) -c "import sysconfig; print(sysconfig.get_config_var('LDVERSION'))") \
	-Wl,-rpath,$$($(VPY) -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
fuzz_env_quick_loads = ASAN_OPTIONS=detect_leaks=0 PYTHONHOME=$$($(VPY) -c "import sys; print(sys.base_prefix)")

fuzz: venv
	@# clang brings libFuzzer (Debian package)
	command -v clang >/dev/null || { apt-get update -qq && apt-get install -y -qq clang; }
	@$(MAKE) --no-print-directory fuzz-frame fuzz-ring fuzz-quick_loads

# fuzz-NAME: build tests/fuzz/fuzz_NAME.c and run it; a crash stops make.
fuzz-%:
	mkdir -p $(FUZZ_DIR)/corpus-$*
	clang $(FUZZ_CFLAGS) tests/fuzz/fuzz_$*.c $(fuzz_sources_$*) $(fuzz_link_$*) -o $(FUZZ_DIR)/fuzz_$*
	@echo "fuzz_$*: running for $(FUZZ_SECONDS) s"
	@$(fuzz_env_$*) $(FUZZ_DIR)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/$*- $(FUZZ_DIR)/corpus-$* tests/fuzz/corpus/$* \
		> $(FUZZ_DIR)/$*.log 2>&1 || { tail -40 $(FUZZ_DIR)/$*.log; echo "fuzz_$*: CRASH (see $(FUZZ_DIR)/$*.log)"; exit 1; }
	@grep -E "^#[0-9]+" $(FUZZ_DIR)/$*.log | tail -1
	@grep -E "^stat::number_of_executed_units" $(FUZZ_DIR)/$*.log
	@echo "fuzz_$*: no crash"

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

# The test-suites of joblib, loky, parmap and CPython's concurrent.futures on
# the standard package and on fastmp, compared test by test, in a venv of
# their own (.venv-ecosystem, CPython 3.13 from pyenv by default); not part
# of `make test`.  e.g. ECOSYSTEM_ARGS="--only loky --parmap-tests DIR"
ECOSYSTEM_ARGS ?=
ecosystem:
	$(PYTHON) tools/ecosystem.py $(ECOSYSTEM_ARGS)

# Development build for PYTHONPATH=Lib, with the venv's interpreter (its
# setuptools reads pyproject.toml's SPDX license).  The new .so is
# renamed into place, so processes running the old one are not disturbed.
inplace: venv
	FASTMP_WERROR=1 $(VPY) setup.py -q build_ext --build-lib build/inplace --build-temp build/inplace-tmp
	for so in build/inplace/fastmp/_fastmp*.so; do \
		cp $$so Lib/fastmp/.$$(basename $$so).new && mv -f Lib/fastmp/.$$(basename $$so).new Lib/fastmp/$$(basename $$so); \
	done
	@# byte-compile as `pip install` does: without .pyc files (and with
	@# PYTHONDONTWRITEBYTECODE set) every spawned child compiles fastmp, and
	@# the benchmark's own modules, anew
	$(VPY) -m compileall -q Lib/fastmp bench

clean:
	rm -rf build dist conformance-out Lib/*.egg-info Lib/fastmp/*.so
