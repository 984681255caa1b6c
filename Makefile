# The two entry points of the README. Both set up .venv first (a no-op when it is current).
PYTEST_FLAGS = --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=300

.PHONY: setup lab test bench bench-methods
setup:
	@scripts/setup.sh

# (--allow-root only where the user is root, as in containers)
lab: setup
	.venv/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Offline on purpose: nothing in the course may reach a model or dataset hub.
test: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv/bin/python -m pytest $(PYTEST_FLAGS)

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/lora_bench.py

bench-methods: setup
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/methods_bench.py
