# Every entry point of the project. `make run` and `make test` each create the virtualenv
# (.venv) and install what they need on first use; later runs reuse it until a requirements
# file changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
READY  := $(VENV)/.installed
STAGE  ?= dev

.PHONY: help run test browser unit integration lint package deploy wiring bench capacity token code fire load lake query report upload redrive replay soak fuzz clean
.DEFAULT_GOAL := help

## help: this list (a bare `make` shows it too)
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

$(READY): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed (found %s); set PYTHON=python3.x" % sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(READY)

## run: the whole system locally (emulator + API on 127.0.0.1); Ctrl-C stops it; faults in the app's AWS calls: make run FAULTS=0.1 (or "dynamodb=0.3,sqs=0.1") [FAULT_KINDS=throttle,error,latency,timeout] [FAULT_SEED=1]
run: $(READY)
	$(BIN)/python -m local.stack --stage $(STAGE) $(if $(FAULTS),--faults "$(FAULTS)") $(if $(FAULT_KINDS),--fault-kinds "$(FAULT_KINDS)") $(if $(FAULT_SEED),--fault-seed "$(FAULT_SEED)")

## token: sign in on the local stack, print the access token: make token EMAIL=a@b.c [PASSWORD=...] [ADMIN=1]; a trusted producer's: make token MACHINE=1
token: $(READY)
ifneq ($(filter 1 true yes,$(MACHINE)),)
	@$(BIN)/python -m local.token --machine
else
	@test -n "$(EMAIL)" || { echo "usage: make token EMAIL=you@example.com [PASSWORD=...] [ADMIN=1], or make token MACHINE=1" >&2; exit 2; }
	@$(BIN)/python -m local.token "$(EMAIL)" $(if $(filter 1 true yes,$(ADMIN)),--admin)
endif

## code: the newest verification code the local stack mailed to an address: make code EMAIL=a@b.c
code: $(READY)
	@test -n "$(EMAIL)" || { echo "usage: make code EMAIL=you@example.com" >&2; exit 2; }
	@$(BIN)/python -m local.mailbox "$(EMAIL)"

## fire: run a scheduled job of the app now, on the local stack: make fire JOB=name [AT=2030-01-01T02:00:00Z] (no JOB lists them)
fire: $(READY)
	@$(BIN)/python -m local.fire $(JOB) $(if $(AT),--at "$(AT)")

## load: mixed telemetry traffic to POST /events on the running stack: make load [ARGS="--batches 50"]
load: $(READY)
	@$(BIN)/python -m local.load $(ARGS)

## lake: telemetry straight into the local data lake, for reports: make lake [EVENTS=20000] [DAYS=7]
lake: $(READY)
	@$(BIN)/python -m local.lake --events $(or $(EVENTS),20000) --days $(or $(DAYS),7)

## query: one Athena query on the local lake, as a table: make query SQL="SELECT count(*) FROM telemetry_events"
query: $(READY)
	@test -n "$(SQL)" || { echo 'usage: make query SQL="SELECT event_type, count(*) FROM telemetry_events GROUP BY 1"' >&2; exit 2; }
	@$(BIN)/python -m local.query "$$SQL"

## report: one day's analytics report now, again if it has one, and its summary: make report DAY=2026-12-05
report: $(READY)
	@test -n "$(DAY)" || { echo "usage: make report DAY=YYYY-MM-DD" >&2; exit 2; }
	@$(BIN)/python -m local.report "$(DAY)"

## upload: one image through the running stack, printing its record: make upload [FILE=photo.jpg | SAMPLE=astronaut|coffee] [EMAIL=... PASSWORD=...]
upload: $(READY)
	@$(BIN)/python -m local.upload $(if $(FILE),"$(FILE)") $(if $(SAMPLE),--sample "$(SAMPLE)") $(if $(EMAIL),--email "$(EMAIL)")

## redrive: the stage's dead-letter and failure queues and their depths; one emptied back to its source or replayed: make redrive [QUEUE=welcome-dlq] [STAGE=prod] [LOCAL=1] [ARGS="--max 100"]
redrive: $(READY)
	@$(BIN)/python -m ops.redrive $(QUEUE) --stage $(STAGE) $(if $(filter 1 true yes,$(LOCAL)),--local) $(ARGS)

## replay: a stream or async failure queue's on-failure records replayed to their functions: make replay QUEUE=users-stream-failures [STAGE=prod] [LOCAL=1]
replay: $(READY)
	@test -n "$(QUEUE)" || { echo "usage: make replay QUEUE=<failure queue> [LOCAL=1] (make redrive lists them)" >&2; exit 2; }
	@$(BIN)/python -m ops.replay $(QUEUE) --stage $(STAGE) $(if $(filter 1 true yes,$(LOCAL)),--local) $(ARGS)

## soak: a mixed workload against a new local stack with faults injected, then every accepted write checked: make soak [RATE=20] [DURATION=60] [FAULTS=0.1] [ARGS="--seed 7 --json soak.json"]
soak: $(READY)
	$(BIN)/python -m local.soak --rate $(or $(RATE),20) --duration $(or $(DURATION),60) --faults $(or $(FAULTS),0.1) $(ARGS)

## fuzz: schemathesis from GET /openapi.json against a new local stack (API=http://127.0.0.1:8000: the running one), a user's and an admin's token, no 5xx and every answer as documented, then stateful sequences along its links: make fuzz [EXAMPLES=100 per operation] [STATEFUL=50] [SEED=1]
fuzz: $(READY)
	$(BIN)/python -m local.fuzz --max-examples $(or $(EXAMPLES),100) --stateful-examples $(or $(STATEFUL),50) --seed $(or $(SEED),1) $(if $(API),--api "$(API)") $(ARGS)

## test: unit and integration tests, on every core (pytest-xdist); installs Chromium for the console's browser tests when it can (root)
test: $(READY) browser
	$(BIN)/python -m pytest -n auto

# The console's browser tests drive the system's Chromium and ChromeDriver (Debian's chromium
# and chromium-driver). Installed here when missing and this user may (root, or sudo without
# a password); otherwise those tests say why they are skipped (REQUIRE_BROWSER=1: they fail).
browser:
	@if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "No Chromium, and no root to install it: the console's browser tests will be skipped (apt-get install chromium chromium-driver)."; \
	  else echo "Installing Chromium and ChromeDriver for the console's browser tests (about a minute)"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; } || \
	    echo "Could not install Chromium: the console's browser tests will be skipped."; fi; fi

## unit, integration: one half of the tests
unit: $(READY)
	$(BIN)/python -m pytest tests/unit

integration: $(READY)
	$(BIN)/python -m pytest tests/integration

# checkov has its own virtualenv (it pins an older boto3): installed by the first `make lint`.
CHECKOV := $(VENV)/checkov/.installed
$(CHECKOV): requirements-checkov.txt | $(READY)
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	@touch $@

## lint: ruff, cfn-lint, and checkov on the packaged prod template as CloudFormation deploys it (skips with reasons in infra/checkov-skips.json)
lint: $(READY) $(CHECKOV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint infra/resources.json
	$(BIN)/python -m infra.package --stage prod
	$(BIN)/python -m infra.checkov_scan out/prod/cloudformation.json

## package: the deployable CloudFormation template (functions + resources) in out/<stage>: make package STAGE=prod
package: $(READY)
	$(BIN)/python -m infra.package --stage $(STAGE)

## deploy: path B, `chalice deploy` plus the settings it cannot express (needs AWS credentials)
deploy: $(READY)
	$(BIN)/python -m infra.deploy --stage $(STAGE)

## wiring: rewrite each function's environment and IAM policy (.chalice/) from the template and the code; and the dashboard, alarms and log groups (infra/monitoring.json)
wiring: $(READY)
	$(BIN)/python -m infra.wiring
	$(BIN)/python -m infra.monitoring

## bench: benchmarks, a table and bench/results/latest.json: make bench [ONLY=name,...] [QUICK=1] [ARGS="..."]
bench: $(READY)
	$(BIN)/python -m bench $(if $(ONLY),--only "$(ONLY)") $(if $(filter 1 true yes,$(QUICK)),--quick) $(ARGS)

## capacity: AWS capacity, first limits and cost a month at 1k/10k/100k requests/s and events/s, from the benchmarks' figures (measures them first if missing): make capacity [ARGS="--mix 'GET /users/{id}=0.9,POST /orders=0.1' --events-per-request 50"]
capacity: $(READY)
	$(BIN)/python -m ops.capacity $(ARGS)

## clean: remove the virtualenv, out/ and the local state
clean:
	rm -rf $(VENV) out .local .pytest_cache .ruff_cache
