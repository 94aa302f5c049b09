# The two commands: `make engines` builds every recipe, `make test` runs the tests.
# Both create .venv at the repository root on first use.
# SYSTEM=1 (GPU containers, hosts without a registry): use the packages PYTHON already holds instead of
# installing the pins; .venv-system then only makes buildsys importable (see README, "Setting up").
SHELL := /bin/bash
PYTHON ?= python3
SYSTEM ?= 0
VENV := $(if $(filter 1,$(SYSTEM)),.venv-system,.venv)
BIN := $(VENV)/bin
JOBS ?= 1
comma := ,
PIP = $(BIN)/python -m pip
# The GPU packages (the gpu extra: TensorRT; onnxruntime-gpu in place of onnxruntime) join where an
# NVIDIA driver answers. There a failed install (TensorRT's libraries come from NVIDIA's index) is one
# line and a note the GPU steps give as their `unavailable` reason; GPU=1 given by hand insists.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
GPU_REQUIRED := $(if $(filter command line environment,$(origin GPU)),$(GPU),0)
EXTRAS := samples,test,cluster
GPU_NOTE := $(VENV)/.gpu-packages-missing
ORT_GPU = $(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['tool']['buildsys']['onnxruntime-gpu'])")
GPU_ADD := PIP_EXTRA_INDEX_URL=https://pypi.nvidia.com make GPU=1
# The tensorflow extra (TensorFlow, tf2onnx) joins where it installs; TF=0 leaves it out.
TF ?= 1
# One stamp per set of extras: a venv made without the GPU packages is completed on a GPU machine.
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))$(if $(filter 1,$(GPU)),-gpu)$(if $(filter 1,$(GPU_REQUIRED)),-required)$(if $(filter 1,$(TF)),-tensorflow)

.PHONY: engines test check validate status bench-build mutation clean distclean install gpu-check

# With SYSTEM=1 the venv holds no package: a .pth puts the source tree and PYTHON's own site-packages on
# its path (--system-site-packages alone would miss them where PYTHON is itself a venv), and a small
# script stands for the `buildsys` command. Nothing is downloaded or built, so no registry and no
# build backend are needed. Each command first lists what is missing and each version that differs.
# One stamp per interpreter: naming another PYTHON makes the venv again, for that one.
SYSTEM_STAMP := $(VENV)/.installed-system-$(subst /,_,$(subst .,_,$(PYTHON)))
SYSTEM_GROUPS ?= dependencies samples$(if $(filter 1,$(GPU)), gpu onnxruntime-gpu)
SYSTEM_CHECK = $(if $(filter 1,$(SYSTEM)),$(BIN)/python -m buildsys.core.pins installed $(SYSTEM_GROUPS) $(1);)
ifeq ($(SYSTEM),1)
STAMP := $(SYSTEM_STAMP)
endif

install: $(STAMP)

$(SYSTEM_STAMP):
	@rm -rf $(VENV) && $(PYTHON) -m venv --without-pip --system-site-packages $(VENV)
	@site=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") && \
		{ echo "$(CURDIR)"; $(PYTHON) -c "import site; print('\n'.join(site.getsitepackages()))"; } > $$site/buildsys-system.pth
	@printf '#!%s\nimport sys\nfrom buildsys.cli import main\nsys.exit(main())\n' "$(abspath $(BIN))/python" > $(BIN)/buildsys
	@chmod +x $(BIN)/buildsys
	@touch $@

ifneq ($(SYSTEM),1)
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[$(EXTRAS)]'
	@if [ "$(TF)" = 1 ]; then $(PIP) install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[$(EXTRAS),tensorflow]' \
		|| echo "note: the tensorflow extra did not install here; its tests are skipped" >&2; fi
	@rm -f $(GPU_NOTE)
ifeq ($(GPU),1)
	@log=$(VENV)/gpu-install.log; : > $$log; why=""; \
	$(PIP) install --disable-pip-version-check --config-settings editable_mode=compat \
		-e '.[$(EXTRAS),gpu]' >>$$log 2>&1 || why="TensorRT (the gpu extra)"; \
	if $(PIP) uninstall --yes --quiet onnxruntime onnxruntime-gpu >>$$log 2>&1 && \
		$(PIP) install --disable-pip-version-check '$(ORT_GPU)' >>$$log 2>&1; then :; else \
		why="$${why:+$$why and }$(ORT_GPU)"; \
		$(PIP) uninstall --yes --quiet onnxruntime-gpu >>$$log 2>&1; \
		$(PIP) install --quiet --disable-pip-version-check --config-settings editable_mode=compat \
			-e '.[$(EXTRAS)]' >>$$log 2>&1; fi; \
	if [ -n "$$why" ]; then \
		line="GPU packages not installed ($$why; pip's output in $$log), GPU steps are unavailable; to add them: $(GPU_ADD)"; \
		if [ "$(GPU_REQUIRED)" = 1 ]; then echo "error: $$line" >&2; exit 1; fi; \
		echo "$$line" | tee $(GPU_NOTE); fi
endif
	@touch $(STAMP)
endif

engines: $(STAMP)
	@$(call SYSTEM_CHECK)
	$(BIN)/buildsys build -j $(JOBS)

# Lint (ruff) and types (mypy), configured in pyproject.toml, then the tests; any finding fails. With
# SYSTEM=1 an interpreter without ruff or mypy skips them and says so: they judge the source, the same
# on every machine, and CI runs them.
test: $(STAMP)
	@$(call SYSTEM_CHECK,test)
	@if [ "$(SYSTEM)" = 1 ] && ! $(BIN)/python -c "import ruff, mypy" 2>/dev/null; then \
		echo "note: ruff or mypy is not installed for $(PYTHON): lint and type check skipped" >&2; \
	else set -x; $(BIN)/python -m ruff check buildsys tests benchmarks && $(BIN)/python -m mypy; fi
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

validate: $(STAMP)
	@$(call SYSTEM_CHECK)
	$(BIN)/buildsys validate

status: $(STAMP)
	@$(call SYSTEM_CHECK)
	$(BIN)/buildsys status

# The bench extra (DVC) joins the venv with every installed package as a constraint, so it changes
# none of them; where it does not install, the benchmark leaves DVC out and says so.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_REQS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))")

$(BENCH_STAMP): $(STAMP)
	@$(PIP) freeze --exclude-editable --disable-pip-version-check > $(VENV)/bench-constraints.txt
	@$(PIP) install --quiet --disable-pip-version-check -c $(VENV)/bench-constraints.txt $(BENCH_REQS) \
		|| echo "note: the bench extra ($(BENCH_REQS)) did not install here; the benchmark leaves DVC out" >&2
	@touch $@

bench-build: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Mutation testing of the modules that guard trust (tests/mutation.py; not part of `make test`): the
# mutation extra (mutmut) joins the venv with every installed package as a constraint, as bench does.
MUTATION_STAMP := $(VENV)/.installed-mutation
MUTATION_REQS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['mutation']))")

$(MUTATION_STAMP): $(STAMP)
	@$(PIP) freeze --exclude-editable --disable-pip-version-check > $(VENV)/mutation-constraints.txt
	$(PIP) install --quiet --disable-pip-version-check -c $(VENV)/mutation-constraints.txt $(MUTATION_REQS)
	@touch $@

mutation: $(MUTATION_STAMP)
	$(BIN)/python tests/mutation.py $(MUTATION_ARGS)

clean:
	rm -rf out

distclean: clean
	rm -rf $(VENV) mutants

# What to run first on a GPU machine: the gpu-marked tests, then every sample on every GPU target.
gpu-check: $(STAMP)
	@$(call SYSTEM_CHECK)
	$(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

check: $(STAMP)
	@$(call SYSTEM_CHECK)
	$(BIN)/buildsys check -j $(JOBS) $(CHECK_ARGS)
