# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
# Each creates .venv when absent and installs the pinned dependencies (constraints.txt) first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: demo test install lint report clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report reports/report.html
	@echo "Demo done: reports/tables/main.md, reports/figures/, reports/report.html"

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint

clean-demo:
	rm -rf results reports logs benchmarks .snakemake
