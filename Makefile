# The two commands: `make engines` builds every recipe, `make test` runs the tests.
# Both create .venv at the repository root on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JOBS ?= 1
comma := ,
# The gpu extra (TensorRT) joins where an NVIDIA driver answers; GPU=0 or GPU=1 overrides.
GPU ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
EXTRAS := samples,test,cluster$(if $(filter 1,$(GPU)),$(comma)gpu)
# The tensorflow extra (TensorFlow, tf2onnx) joins where it installs; TF=0 leaves it out.
TF ?= 1
# One stamp per set of extras: a venv made without the gpu extra is completed on a GPU machine.
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))$(if $(filter 1,$(TF)),-tensorflow)

.PHONY: engines test check validate status bench-build clean distclean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[$(EXTRAS)]'
	@if [ "$(TF)" = 1 ]; then $(BIN)/python -m pip install --quiet --disable-pip-version-check \
		--config-settings editable_mode=compat -e '.[$(EXTRAS),tensorflow]' \
		|| echo "note: the tensorflow extra did not install here; its tests are skipped" >&2; fi
	@touch $(STAMP)

engines: $(STAMP)
	$(BIN)/buildsys build -j $(JOBS)

test: $(STAMP)
	@set +e; $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

validate: $(STAMP)
	$(BIN)/buildsys validate

status: $(STAMP)
	$(BIN)/buildsys status

bench-build: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py $(BENCH_ARGS)

clean:
	rm -rf out

distclean: clean
	rm -rf $(VENV)

check: $(STAMP)
	$(BIN)/buildsys check -j $(JOBS) $(CHECK_ARGS)
