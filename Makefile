# Quick start: `make demo` trains the bundled demo; `make test` runs the whole suite on CPU.
# Both create .venv and install everything from pyproject.toml + constraints.txt when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DS_BUILD_OPS := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export WANDB_MODE := offline
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo test test-cluster lint bench clean

venv: $(STAMP)

# torch goes first, pinned, so pip takes the CPU wheel instead of pulling a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[train,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ftui demo

# ruff and mypy first (seconds): a lint or type error fails the suite before the slow tests run.
# Two workers, a test file each (pytest-xdist): most of the suite's time is single-threaded training subprocesses
# (OMP_NUM_THREADS=1, set by tests/conftest.py), so two files at once use both cores of a 2-core CI machine.
# TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --ignore=tests/cluster $(PYTEST_ARGS)

# The Slurm path against a real Slurm on this machine (needs root: apt, munged, the daemons): scripts/slurm_localhost.sh
# starts slurmctld, slurmdbd and two slurmd node names on 127.0.0.1, tests/cluster/ submits, watches, stops and
# kills jobs there, and the daemons are stopped again whatever the tests said (KEEP_SLURM=1 leaves them up).
SLURM_DIR ?= /tmp/ftui-slurm
test-cluster: $(STAMP)
	FTUI_SLURM_DIR=$(SLURM_DIR) scripts/slurm_localhost.sh start
	SLURM_CONF=$(SLURM_DIR)/slurm.conf $(BIN)/python -m pytest -q -p no:cacheprovider tests/cluster $(PYTEST_ARGS); \
	code=$$?; [ -n "$(KEEP_SLURM)" ] || FTUI_SLURM_DIR=$(SLURM_DIR) scripts/slurm_localhost.sh stop; exit $$code

lint: $(STAMP)
	$(BIN)/ruff check runners tui tests bench
	$(BIN)/mypy

bench: $(STAMP)
	for b in memory_accuracy time_accuracy plan_latency callback_overhead tensorboard_read; do $(BIN)/python bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
