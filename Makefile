# qgitconf — two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest venv clean test-install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/qgitconf lab demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check qgitconf tests
	$(BIN)/ruff format --check qgitconf tests
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# -- install and packages (see docs/packaging.md) ------------------------------------
# make install DESTDIR=/tmp/root PREFIX=/usr      the template package's files
# make install-dom0 DESTDIR=/tmp/root             the dom0 policy
# make packages                                   .deb (and .rpm if rpmbuild exists) in dist/
DESTDIR        ?=
PREFIX         ?= /usr/local
SYSCONFDIR     ?= /etc
DATADIR        ?= $(PREFIX)/share
MANDIR         ?= $(DATADIR)/man
USERUNITDIR    ?= $(PREFIX)/lib/systemd/user
USERPRESETDIR  ?= $(PREFIX)/lib/systemd/user-preset
INSTALL_PYTHON ?= $(BIN)/python
PYTHON_SHEBANG ?= /usr/bin/python3
VERSION        := $(shell cat version)
PKGBUILD       := build/pkg
SRCNAME        := qgitconf-$(VERSION)

.PHONY: install install-python install-vm install-dom0 build-deps packages deb rpm srctree man completion

# `wheel` and `setuptools` come with the dev extras (the venv of `make test`); kept for
# scripts that call it.
build-deps: $(STAMP)

install: install-python install-vm

# Offline: no index, no build isolation, the interpreter's own setuptools and wheel;
# --ignore-installed: never uninstall the copy the interpreter itself has (the venv's).
install-python:
	@$(INSTALL_PYTHON) -c 'import setuptools, wheel' 2>/dev/null || { \
	  echo "$(INSTALL_PYTHON) lacks setuptools or wheel (run: make build-deps)" >&2; exit 1; }
	$(INSTALL_PYTHON) -m pip install --quiet --no-deps --no-build-isolation --no-index --ignore-installed \
	  --no-warn-script-location $(if $(DESTDIR),--root "$(DESTDIR)") --prefix "$(PREFIX)" .
	for s in qgitconf qgitconf-service; do \
	  sed -i '1s|^#!.*|#!$(PYTHON_SHEBANG) -I|' "$(DESTDIR)$(PREFIX)/bin/$$s"; done

# Everything but the Python package: what debian/rules adds after pybuild.
install-vm:
	install -d "$(DESTDIR)$(SYSCONFDIR)/qubes-rpc" "$(DESTDIR)$(SYSCONFDIR)/qubes/rpc-config"
	install -m 0755 rpc/qgitconf.* "$(DESTDIR)$(SYSCONFDIR)/qubes-rpc/"
	sed -i 's|/usr/bin/qgitconf-service|$(PREFIX)/bin/qgitconf-service|' \
	  "$(DESTDIR)$(SYSCONFDIR)"/qubes-rpc/qgitconf.*
	install -m 0644 rpc-config/qgitconf.* "$(DESTDIR)$(SYSCONFDIR)/qubes/rpc-config/"
	if [ -d systemd ] && ls systemd/*.service systemd/*.timer >/dev/null 2>&1; then \
	  install -d "$(DESTDIR)$(USERUNITDIR)"; \
	  install -m 0644 $$(ls systemd/*.service systemd/*.timer 2>/dev/null) "$(DESTDIR)$(USERUNITDIR)/"; \
	  sed -i 's|=/usr/bin/qgitconf |=$(PREFIX)/bin/qgitconf |' "$(DESTDIR)$(USERUNITDIR)"/*.service; fi
	install -D -m 0644 systemd/50-qgitconf.preset "$(DESTDIR)$(USERPRESETDIR)/50-qgitconf.preset"
	# the dom0 policy, for `qgitconf policy check` and for copying to dom0 (docs/setup.md)
	install -d "$(DESTDIR)$(DATADIR)/qgitconf/policy"
	install -m 0644 policy/*.policy "$(DESTDIR)$(DATADIR)/qgitconf/policy/"
	install -D -m 0644 completion/qgitconf.bash "$(DESTDIR)$(DATADIR)/bash-completion/completions/qgitconf"
	install -D -m 0644 completion/_qgitconf "$(DESTDIR)$(DATADIR)/zsh/site-functions/_qgitconf"
	install -D -m 0644 completion/qgitconf.fish "$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/qgitconf.fish"
	install -D -m 0644 docs/qgitconf.1 "$(DESTDIR)$(MANDIR)/man1/qgitconf.1"

install-dom0:
	install -d "$(DESTDIR)$(SYSCONFDIR)/qubes/policy.d"
	install -m 0664 policy/*.policy "$(DESTDIR)$(SYSCONFDIR)/qubes/policy.d/"

# A clean copy of the source tree (no venv, caches or build output) for the builders.
srctree:
	rm -rf "$(PKGBUILD)" && mkdir -p "$(PKGBUILD)/$(SRCNAME)"
	tar -c --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
	  --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.hypothesis \
	  --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache . \
	  | tar -x -C "$(PKGBUILD)/$(SRCNAME)"

deb: srctree
	# A plain system PATH, as in a real builder (no venv or pyenv python).
	cd "$(PKGBUILD)/$(SRCNAME)" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b
	mkdir -p dist && cp "$(PKGBUILD)"/*.deb dist/

# rpmbuild on a non-Fedora host: --nodeps (no rpm database) and the venv's Python.
rpm: srctree
	@command -v rpmbuild >/dev/null || { echo "rpmbuild not found: skipping the rpm" >&2; exit 0; }; \
	set -e; top="$(abspath $(PKGBUILD))/rpm"; mkdir -p "$$top/SOURCES" "$$top/SPECS"; \
	tar -czf "$$top/SOURCES/$(SRCNAME).tar.gz" -C "$(PKGBUILD)" "$(SRCNAME)"; \
	for spec in qgitconf qgitconf-dom0; do \
	  sed -e 's/@VERSION@/$(VERSION)/g' -e "s/@REL@/$$(cat rel)/g" rpm_spec/$$spec.spec.in > "$$top/SPECS/$$spec.spec"; \
	  rpmbuild --nodeps --define "_topdir $$top" --define "__python3 $(abspath $(INSTALL_PYTHON))" \
	    -bb "$$top/SPECS/$$spec.spec"; done; \
	mkdir -p dist && cp "$$top"/RPMS/noarch/*.rpm dist/

packages: deb rpm

# Generated files, checked in (the packages ship them; `make man completion` refreshes).
man: $(STAMP)
	$(BIN)/python -m qgitconf.manpage > docs/qgitconf.1

completion: $(STAMP)
	_QGITCONF_COMPLETE=bash_source $(BIN)/qgitconf > completion/qgitconf.bash
	_QGITCONF_COMPLETE=zsh_source $(BIN)/qgitconf > completion/_qgitconf
	_QGITCONF_COMPLETE=fish_source $(BIN)/qgitconf > completion/qgitconf.fish

# -- benchmarks and fuzzing (see docs/benchmarks.md, tests/fuzz/README.md) ----------------
FUZZ_TIME ?= 60

.PHONY: bench bench-compare fuzz

bench: $(STAMP)
	$(BIN)/python -m tests.bench.run

# make bench-compare BEFORE=REV: REV's benchmarks and this tree's, script by script in
# turn, in one run, and one table of both (issue 22: rows no worse than before a move).
BEFORE ?= HEAD
bench-compare: $(STAMP)
	$(BIN)/python -m tests.bench.compare $(BEFORE) $(SCRIPTS)

# Each harness for FUZZ_TIME seconds: atheris on the pack pre-scan, then Hypothesis
# with a large example budget on the envelope reader, statement parser, path rules.
fuzz: $(STAMP)
	$(BIN)/pip install --quiet atheris
	mkdir -p .fuzz/corpus .fuzz/artifacts
	$(BIN)/python tests/fuzz/fuzz_packscan.py --seed-corpus .fuzz/corpus
	$(BIN)/python tests/fuzz/fuzz_packscan.py -max_total_time=$(FUZZ_TIME) \
	    -rss_limit_mb=512 -timeout=10 -artifact_prefix=.fuzz/artifacts/ .fuzz/corpus
	QGITCONF_FUZZ_SECONDS=$(FUZZ_TIME) $(BIN)/pytest -q -p no:cacheprovider \
	    --hypothesis-profile=fuzz tests/test_envelope.py tests/test_paths.py \
	    tests/test_policy.py tests/test_packscan.py

# -- the templates' dulwich (issue 20; docs/packaging.md) -----------------------------------
# The security tests on the oldest dulwich the Qubes templates ship, each leg in its own
# venv from PyPI (kept in build/dulwich, rebuilt when this file changes); `make test` is
# the newest 1.x leg.  A leg named *-pure is built without dulwich's extension, as Debian
# 13 ships it.  python-gnupg and click are PyPI's newest here.
DULWICH_LEGS  ?= 0.21.2 0.22.7-pure
DULWICH_DIR   := build/dulwich
DULWICH_TOOLS := pytest pytest-timeout hypothesis 'setuptools>=68' wheel
# Each leg with the python-gnupg and click of the template that ships its dulwich.
DISTRO_TOOLS_0.21.2      := python-gnupg==0.4.9 click==8.1.3
DISTRO_TOOLS_0.22.7-pure := python-gnupg==0.5.4 click==8.1.8
DULWICH_TESTS := tests/test_dulwich_compat.py tests/test_hostile.py tests/test_packindex.py \
                 tests/test_packscan.py tests/test_objcache.py tests/test_signing.py \
                 tests/test_hooks.py tests/test_envelope.py tests/test_paths.py

.PHONY: test-dulwich

$(DULWICH_DIR)/%/.installed: Makefile
	rm -rf "$(@D)"
	$(PYTHON) -m venv "$(@D)"
	$(if $(findstring -pure,$*),PURE=1 PIP_NO_BINARY=dulwich) "$(@D)/bin/pip" install --quiet \
	  --disable-pip-version-check dulwich==$(subst -pure,,$*) \
	  $(or $(DISTRO_TOOLS_$*),python-gnupg click) $(DULWICH_TOOLS)
	touch "$@"

test-dulwich: $(foreach leg,$(DULWICH_LEGS),$(DULWICH_DIR)/$(leg)/.installed)
	set -e; for leg in $(DULWICH_LEGS); do \
	  py="$(DULWICH_DIR)/$$leg/bin/python"; \
	  ext=$$($$py -c 'import importlib.util as u; print("yes" if u.find_spec("dulwich._objects") else "no")'); \
	  case "$$leg" in *-pure) want=no;; *) want=yes;; esac; \
	  echo "== dulwich $$leg: $$($$py -c 'import dulwich; print(dulwich.__version__)'), extension: $$ext"; \
	  [ "$$ext" = "$$want" ] || { echo "dulwich $$leg: extension $$ext, expected $$want" >&2; exit 1; }; \
	  $$py -m pytest -q -p no:cacheprovider $(DULWICH_TESTS); done

# -- the real lab's Qubes sources (see docs/lab.md) -----------------------------------------
# For a newcomer with network: fetch the pinned upstream tarballs the real lab builds
# from (qgitconf/lab/qubes-src.sha256) into QUBES_SRC_DIR and check their SHA-256.
# Tests never download; they look in $$QUBES_SRC_DIR, then ../shared/qubes-src.
QUBES_SRC_DIR ?= ../shared/qubes-src
QUBES_SRC_SUMS := qgitconf/lab/qubes-src.sha256

.PHONY: qubes-src

qubes-src:
	mkdir -p "$(QUBES_SRC_DIR)"
	grep -v '^#' $(QUBES_SRC_SUMS) | while read -r sum file commit; do \
	  [ -n "$$file" ] || continue; \
	  if ! echo "$$sum  $(QUBES_SRC_DIR)/$$file" | sha256sum -c --quiet 2>/dev/null; then \
	    repo=$${file%.tar.gz}; \
	    curl -fsSL -o "$(QUBES_SRC_DIR)/$$file.part" \
	      "https://github.com/QubesOS/$$repo/archive/$$commit.tar.gz" || exit 1; \
	    mv "$(QUBES_SRC_DIR)/$$file.part" "$(QUBES_SRC_DIR)/$$file"; \
	  fi; \
	  echo "$$sum  $(QUBES_SRC_DIR)/$$file" | sha256sum -c - || exit 1; \
	done

# -- the package in clean Debian systems (issue 20; docs/packaging.md) ----------------------
# Root: builds the .deb, makes clean Debian 12 and 13 systems with mmdebstrap (cached in
# /var/cache/qgitconf-ci), installs it there with plain `apt-get install ./qgitconf_*.deb`
# and runs the installed package: init, signed and unsigned pushes through the hook, an
# update through the installed qgitconf.Fetch and qgitconf.Receive, review, apply, revert;
# then `qgitconf lab demo` from the installed package (the lab's Qubes sources from
# QUBES_SRC_DIR, below).  TEST_INSTALL_FLAGS= skips the demo.
TEST_INSTALL_SUITES ?= bookworm trixie
TEST_INSTALL_FLAGS  ?= --lab-demo

test-install: $(STAMP)
	QUBES_SRC_DIR="$(abspath $(QUBES_SRC_DIR))" \
	  $(BIN)/python -m tests.cleaninstall.run $(TEST_INSTALL_FLAGS) $(TEST_INSTALL_SUITES)
