# The two entry points of the README. Both set up .venv first (a no-op when it is current).
PYTEST_FLAGS = --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg --nbval-cell-timeout=300 \
               -n $(JOBS) --dist loadscope
# The suite runs on JOBS workers (pytest-xdist), each notebook whole on one of them (loadscope).
# The course's model is so small that a training step is bound by Python, not arithmetic: a
# second thread barely speeds it up, a second worker nearly doubles throughput. So each worker gets
# one thread. (The stored outputs are recorded with the default threads and compared under one: a
# result that depended on the thread count would fail here, as it would on a machine with more cores.)
JOBS ?= 2
TEST_ENV = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1

.PHONY: setup lab test test-older-cpu bench bench-methods student-release
setup:
	@scripts/setup.sh

# (--allow-root only where the user is root, as in containers)
lab: setup
	.venv/bin/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Offline on purpose: nothing in the course may reach a model or dataset hub.
test: setup
	$(TEST_ENV) .venv/bin/python -m pytest $(PYTEST_FLAGS)

# The suite again as on an older CPU (scripts/older_cpu.sh: one instruction-set step below this
# machine's), so that outputs and asserts are checked against other floating-point round-off than
# the machine that stored them: every compared output and every assert must still hold. The
# browser test is left out: it checks widgets, not numbers. The script fails if the step down
# changed nothing.
test-older-cpu: setup
	older="$$(scripts/older_cpu.sh .venv/bin/python)" && \
	env $$older $(TEST_ENV) .venv/bin/python -m pytest $(PYTEST_FLAGS) --ignore=tests/test_browser.py

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/lora_bench.py

bench-methods: setup
	HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/methods_bench.py

# What a class receives instead of the repository, which holds every answer (scripts/student_release.py says what
# ships and what not). Standard library only, so no setup first. Options: make student-release ARGS="--out DIR --force"
student-release:
	python3 scripts/student_release.py $(ARGS)
