# fastmp: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON   ?= python3
VENV     ?= .venv
VPY      := $(VENV)/bin/python
PYTEST_ARGS ?=
# Tests that exercise C code, run under ASan/UBSan by `make sanitize`.
SANITIZE_TESTS ?= tests
SAN_TREE := build/sanitize-tree

.PHONY: all venv build inplace demo examples bench test sanitize clean

all: build

# The venv with the build and test dependencies (from PyPI).
$(VENV)/.ready: requirements-test.txt
	$(PYTHON) -m venv $(VENV)
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

# ASan/UBSan build into a private tree (Lib/ stays clean), then the tests.
sanitize: venv
	rm -rf $(SAN_TREE) build/sanitize
	FASTMP_SANITIZE=1 $(VPY) setup.py -q build_ext --build-lib build/sanitize --build-temp build/sanitize-tmp --force
	mkdir -p $(SAN_TREE)
	cp -r Lib/fastmp $(SAN_TREE)/
	find $(SAN_TREE) -name '*.so' -delete
	cp build/sanitize/fastmp/_fastmp*.so $(SAN_TREE)/fastmp/
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(SAN_TREE) FASTMP_SANITIZED=1 \
	timeout -k 30 2400 $(VPY) -m pytest -p no:randomly $(SANITIZE_TESTS) $(PYTEST_ARGS)

# Development build for PYTHONPATH=Lib, with $(PYTHON).  The new .so is
# renamed into place, so processes running the old one are not disturbed.
inplace:
	FASTMP_WERROR=1 $(PYTHON) setup.py -q build_ext --build-lib build/inplace --build-temp build/inplace-tmp
	for so in build/inplace/fastmp/_fastmp*.so; do \
		cp $$so Lib/fastmp/.$$(basename $$so).new && mv -f Lib/fastmp/.$$(basename $$so).new Lib/fastmp/$$(basename $$so); \
	done

clean:
	rm -rf build dist Lib/*.egg-info Lib/fastmp/*.so
