# iotsec developer commands. Each target creates .venv on first use and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: demo test lint unit e2e crds bench clean image testenv-install e2e-deployed e2e-images example-report

$(STAMP): pyproject.toml Makefile tools/install_helm.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(PYTHON) -m venv $(VENV)/nca && $(VENV)/nca/bin/python -m pip install --quiet network-config-analyzer==2.1.0
	$(BIN)/python tools/install_helm.py $(BIN)
	rm -f $(VENV)/.installed-* && touch $@

## demo: the main job on the bundled example platform, no cluster needed
demo: $(STAMP)
	@echo "== iotsec validate examples/ (custom resources checked as the API server would, and stricter)"
	$(BIN)/iotsec validate examples/
	@echo "== iotsec render --summary examples/platform (zones, members, effective reachability; drop --summary for YAML)"
	$(BIN)/iotsec render --summary examples/platform
	@echo "== iotsec check (what the admission webhook would answer; the non-conforming examples, last lines)"
	$(BIN)/iotsec check examples/platform examples/workloads | tail -n 8
	@echo "== iotsec crds --check crds/ charts/iotsec-operator/crds/ (CRDs generated from the API models)"
	$(BIN)/iotsec crds --check crds --check charts/iotsec-operator/crds
	@echo "== iotsec controls (the X.1369 catalog and what iotsec does about each control)"
	$(BIN)/iotsec controls | tail -n 12

## test: lint, import contracts, then every test tier (e2e runs when KUBECONFIG names a cluster)
test: lint $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

e2e: $(STAMP)
	$(BIN)/pytest -m e2e tests/e2e

## crds: regenerate crds/, the chart's copy and the chart's RBAC rules from the code
crds: $(STAMP)
	$(BIN)/iotsec crds --write crds --write charts/iotsec-operator/crds
	$(BIN)/iotsec rbac --write charts/iotsec-operator/files

## image: build the image from the Dockerfile with no registry (Debian's buildah, a local Debian base), write
## build/iotsec-image.tar, import it into the test node's containerd when it runs; prints localhost/iotsec/iotsec:VERSION
image:
	tools/build_image.sh

## testenv-install: install the real chart with that image into the running testenv (control plane and node) and
## wait until the operator and webhook pods are Ready
testenv-install: $(STAMP)
	BIN=$(BIN) tools/testenv_install.sh

## e2e-images: the images the deployed tests run besides iotsec's (an sftp server), built and imported like `make image`
e2e-images:
	tools/build_e2e_images.sh

## e2e-deployed: the tier that needs `make image`, `make e2e-images` and `make testenv-install` (missing ones fail
## here, not skip)
e2e-deployed: $(STAMP)
	IOTSEC_IMAGE_REQUIRED=1 IOTSEC_DEPLOYED_REQUIRED=1 $(BIN)/pytest -m e2e tests/e2e/test_image.py \
	  tests/e2e/test_deployed.py tests/e2e/test_deployed_backup.py tests/e2e/test_deployed_audit.py \
	  tests/e2e/test_deployed_admission.py tests/e2e/test_deployed_scan.py tests/e2e/test_deployed_failover.py \
	  tests/e2e/test_deployed_webhook_availability.py

## bench: every benchmark in turn, then one table (figure, value, goal); BENCH=--full at the issues' scale. The ones
## that need the testenv run when KUBECONFIG reaches it (benchmarks/run_all.py says which and why not)
bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH)

## example-report: the committed example conformance report (examples/report/), made live on the testenv where
## `make image testenv-install` runs the chart: the example platform applied, reconciled and scanned, then reported
example-report: $(STAMP)
	BIN=$(BIN) tools/example_report.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
