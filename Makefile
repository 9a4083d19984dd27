# The two commands of the FGVC book (see README.md):
#   make book   build the rendered book into _build/html (creates .venv on first use)
#   make test   run every test: fglib's unit tests and pytest --nbval over every chapter
# for readers who want to re-train the book's numbers on their own machine:
#   make reproduce CH=mcloss  re-train a chapter's runs (CH=all: the whole book) and compare with the store
#                             (SHARD=i/n: share i of n only, for a job array; MERGE=1: compare the shares)
# and, for authors:
#   make chapter CH=intro     re-sync book/intro.md -> .ipynb and re-execute it (outputs refreshed)
#   make record CH=mcloss     after an intended change: train the chapter's runs into the results store
#                             (data/runs/), then re-execute it from the store (refused under CI)
#   make expected CH=intro    record the chapter's checked results in data/expected/intro.csv and what its
#                             figures draw in data/expected/figures/intro.json, then re-execute
#   make mutation             mutation testing of fglib/models/ with mutmut (about 6 min on 2 cores; not in CI):
#                             writes tests/mutation/survivors.md, the survivors sorted by why they survive
#   make lab                  JupyterLab from .venv (adds --allow-root when run as root)
#   make check-book           open every page of _build/html in headless Chromium (apt-get install chromium):
#                             broken links/images, raw TeX, JavaScript errors, code wider than its column
#   make check-lab            every chapter in JupyterLab in headless Chromium, as a reader steps through it
#                             (double-click the .md, Run All, Ctrl+S; minutes for the long chapters; not in CI):
#                             errors, raw MyST, directives JupyterLab drops, a save that changes a file
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fglib-installed
CHAPTERS := $(filter-out %/_toc.md,$(wildcard book/*.md))
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900
EXECUTE := $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
           --ExecutePreprocessor.record_timing=False --ExecutePreprocessor.timeout=1800

.PHONY: book test venv chapter expected record reproduce status notebooks clean check-book venv-browser mutation lab check-lab

venv: $(STAMP)

# The virtual environment is (re)built when pyproject.toml changes.
$(STAMP): pyproject.toml .jupyterlab/overrides.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	# JupyterLab's settings override: chapters' .md files open as notebooks (jupytext) on a double-click
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp .jupyterlab/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build . --config _config.yml --toc book/_toc.yml --warningiserror --nitpick --keep-going
	@echo "Open _build/html/index.html"

# Chapters read every run from the results store (FGLIB_STORE_ONLY=1: nothing is trained but CI's
# verification sample, see tests/test_store.py).
test: $(STAMP)
	FGLIB_PROGRESS=0 FGLIB_STORE_ONLY=1 $(BIN)/python -m pytest tests book $(NBVAL)

chapter: $(STAMP)
	@test -n "$(CH)" || { echo "usage: make chapter CH=<name of a book/<name>.md>"; exit 2; }
	$(BIN)/jupytext --sync book/$(CH).md
	FGLIB_CHAPTER=$(CH) $(EXECUTE) book/$(CH).ipynb

record: $(STAMP)
	@test -n "$(CH)" || { echo "usage: make record CH=<chapter> (or CH=all)"; exit 2; }
	$(BIN)/python -m fglib record $(CH)

reproduce: $(STAMP)
	$(BIN)/python -m fglib reproduce $(or $(CH),all) $(if $(SHARD),--shard $(SHARD)) $(if $(MERGE),--merge)

# JupyterLab from the venv; as root (containers, cloud notebooks) it needs --allow-root.
lab: $(STAMP)
	@echo "JupyterLab: open the URL it prints below (with its token); chapters are in book/"
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

status: $(STAMP)
	$(BIN)/python -m fglib store status

expected: $(STAMP)
	@test -n "$(CH)" || { echo "usage: make expected CH=<name of a book/<name>.md>"; exit 2; }
	$(BIN)/jupytext --sync book/$(CH).md
	FGLIB_UPDATE_EXPECTED=1 $(EXECUTE) book/$(CH).ipynb
	$(EXECUTE) book/$(CH).ipynb
	git diff --stat -- data/expected/$(CH).csv data/expected/figures/$(CH).json

# mutmut is an author's tool, installed on first use (pyproject.toml's [tool.mutmut] says what it
# mutates and which tests it runs); a fresh run each time, as mutant names follow the source.
mutation: $(STAMP)
	$(BIN)/python -m pip install -q "mutmut==3.8.1"
	rm -rf mutants
	$(BIN)/mutmut run --max-children $$(nproc)
	$(BIN)/python tests/mutation/report.py > tests/mutation/survivors.md
	head -n 20 tests/mutation/survivors.md

notebooks: $(STAMP)
	for md in $(CHAPTERS); do $(MAKE) chapter CH=$$(basename $$md .md) || exit 1; done

clean:
	rm -rf _build

# The browser check's Python extra (playwright; it drives the system's Chromium, nothing is downloaded).
BROWSER_STAMP := $(VENV)/.fglib-browser-installed

venv-browser: $(BROWSER_STAMP)

$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[browser]'
	touch $@

# Every page of the built book (run `make book` first) in headless Chromium, at 1280x900; screenshots
# in _build/browser-screenshots/. Fails on pages that do not load, broken links, anchors or images,
# raw TeX left after MathJax, JavaScript errors, and code blocks or outputs wider than their column.
check-book: $(BROWSER_STAMP)
	$(BIN)/python tests/browser/check_book.py _build/html

# Every chapter (CHAPTERS: book/*.md but _toc) in JupyterLab, in a temporary copy of book/ (the repository
# is not written): double-click, Run All (FGLIB_STORE_ONLY=1: nothing is trained), Ctrl+S; screenshots in
# _build/lab-screenshots/. tests/test_lab_browser.py runs it on the introduction in CI.
check-lab: $(BROWSER_STAMP)
	$(BIN)/python tests/browser/check_lab.py $(CHAPTERS)
