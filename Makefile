# Two commands on a fresh machine with Python 3.11:  `make demo`  and  `make test`.
# Each creates .venv when absent and installs the pinned dependencies (constraints.txt) first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2

.PHONY: demo test install lint report clean-demo rehearsal

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

# A rehearsal of a paper config on this machine (docs/cluster.md, "Rehearsal"): the config at CPU size, offline, its API judges
# answered by a local server on 127.0.0.1:$(REHEARSAL_PORT); results under rehearsals/<config name>/. More snakemake
# arguments in REHEARSAL_ARGS (e.g. REHEARSAL_ARGS=-n to plan only).
CONFIG         ?= configs/paper/all.yaml
REHEARSAL_PORT ?= 8765
REHEARSAL_DIR  ?= rehearsals/$(basename $(notdir $(CONFIG)))

rehearsal: $(STAMP)
	$(BIN)/python tests/_openai_stub.py --port $(REHEARSAL_PORT) & judge=$$!; \
	PYTHONPATH="$(CURDIR)/tests/offline" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 NLTK_DATA="$(CURDIR)/tests/fixtures/nltk_data" \
	OPENAI_API_KEY="$${OPENAI_API_KEY:-rehearsal}" OMP_NUM_THREADS=1 \
	$(BIN)/snakemake --cores $(CORES) --directory "$(REHEARSAL_DIR)" --configfile "$(CONFIG)" \
		--config 'rehearsal={judge_url: http://127.0.0.1:$(REHEARSAL_PORT)/v1}' $(REHEARSAL_ARGS); \
	status=$$?; kill $$judge; exit $$status
