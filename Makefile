# The README's commands: `make demo` (train the demo model, then serve it) and `make test`.
# Steps whose output exists are skipped; delete data/ or artifacts/ to rebuild them.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_DATA := data/demo
DEMO_MODEL := artifacts/demo/model.safetensors

.PHONY: demo serve test lint install clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per extra: pyproject.toml changing reinstalls. pip byte-compiles the wheels one file
# at a time (80 s of a 160 s install here); compileall does the same on every core in 38 s.
# torch ships one test module in Python 3.12 syntax, which 3.11 cannot compile.
COMPILE := $(BIN)/python -m compileall -q -j 0 -x 'py312_intrinsics\.py' $(VENV)/lib
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[demo]'
	$(COMPILE)
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	$(COMPILE)
	touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-dev

$(DEMO_DATA)/demo_manifest.json: | $(VENV)/.installed-demo
	$(BIN)/python -m train.demo_data --out $(DEMO_DATA)

$(DEMO_MODEL): | $(DEMO_DATA)/demo_manifest.json
	$(BIN)/python -m train.driver --data-dir $(DEMO_DATA) --out $(DEMO_MODEL) \
		--num-workers 2 --image-size 64 --architecture tf_efficientnet_lite0 --pretrained imagenet

demo: $(DEMO_MODEL)
	@$(MAKE) --no-print-directory serve

# `serve run` of SERVE_CONFIG in the foreground with the tuned settings of serving.env (Serve's
# HAProxy front end, the binary bundled with ray[serve]); once /health answers, print where to
# send requests. `make bench-startup` starts Serve's smallest application this way too.
# HAProxy's files go to a new folder only this user can enter (mktemp -d: mode 700), since its
# admin socket is mode 666; a short path, as Ray adds a 40-character folder and a Unix socket
# path may hold at most 97 characters. On exit the folder goes, with the HAProxy that read it
# if it is still running (Ctrl-C stops it with the rest; a SIGTERM to `serve run` does not).
SERVE_CONFIG ?= serve_config.yaml

serve: | $(VENV)/.installed-demo
	@set -a; . ./serving.env; set +a; \
	haproxy_dir=$$(mktemp -d /tmp/ppd-haproxy-XXXXXX) || exit 1; \
	trap 'pkill -f "$$haproxy_dir/" 2>/dev/null; rm -rf "$$haproxy_dir"' EXIT; \
	export RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=$$haproxy_dir/haproxy.cfg \
		RAY_SERVE_HAPROXY_SOCKET_PATH=$$haproxy_dir/admin.sock \
		RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=$$haproxy_dir/metrics.sock \
		RAY_SERVE_HAPROXY_SERVER_STATE_BASE=$$haproxy_dir \
		RAY_SERVE_HAPROXY_SERVER_STATE_FILE=$$haproxy_dir/server-state; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/serve run $(SERVE_CONFIG) & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid' INT TERM; \
	$(BIN)/python -m bench.server_process wait-healthy $$pid http://$(HOST):$(PORT) || exit 1; \
	printf '\nProduct Photo Detector is serving on http://%s:%s  (Ctrl-C stops it)\n' $(HOST) $(PORT); \
	printf 'Try:\n  curl -F file=@%s/test/FAKE/test_fake_00000.png http://%s:%s/predict\n\n' $(DEMO_DATA) $(HOST) $(PORT); \
	wait $$pid

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit --quiet -c pyproject.toml -r common deployments train tune bench observe

# Two pytest processes side by side: the tests that use no Ray instance of the session's
# (tests/common, tests/deploy: files, images, manifests, about 2 minutes; the two-node
# training and `dvc repro`, each with a Ray instance of its own, about 2 minutes more) beside
# those that share one Ray instance, which spend much of their time waiting on replicas; the
# first's report is printed after the second's. The first runs at nice 19, so the shared
# instance's tests keep most of the CPU (their load drills and timeouts keep their pace). Ray
# starts its workers, the replicas among them, at nice 15 (its worker_niceness): a nice 10
# neighbour outweighed them 3 to 1; at 19 they outweigh it 2 to 1. `make serve`'s test stays
# with the shared instance (beside it, its Ctrl-C once took over 90 s instead of 2-3 s, a
# cause not found), and so does the ASHA sweep (beside it, the shared group gained nothing).
NO_SESSION_RAY_TESTS := tests/common tests/deploy tests/train/test_multi_node.py \
	tests/train/test_dvc_pipeline.py

test: lint
	@log=$$(mktemp); \
	nice -n 19 $(BIN)/python -m pytest -p no:cacheprovider $(NO_SESSION_RAY_TESTS) > $$log 2>&1 & beside=$$!; \
	$(BIN)/python -m pytest $(addprefix --ignore=,$(NO_SESSION_RAY_TESTS)); rc=$$?; \
	wait $$beside; beside_rc=$$?; \
	echo "--- $(NO_SESSION_RAY_TESTS) (run beside the above) ---"; cat $$log; rm -f $$log; \
	[ $$rc -eq 0 ] && [ $$beside_rc -eq 0 ]

clean-demo:
	rm -rf $(DEMO_DATA) artifacts/demo

# --- Performance and resilience (docs/performance.md); need `hey` (apt-get install hey) -----
.PHONY: bench bench-ab bench-startup resilience

bench: $(DEMO_MODEL) | $(VENV)/.installed-dev
	@command -v hey >/dev/null || { echo "bench needs hey: apt-get install hey"; exit 2; }
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.training

# Two trees served at once, compared in alternating bursts at c=16 (bench/ab.py): this working
# tree against the commit AB_BASE (HEAD: what the uncommitted changes do); about 4 minutes.
AB_BASE ?= HEAD
bench-ab: $(DEMO_MODEL) | $(VENV)/.installed-dev
	@command -v hey >/dev/null || { echo "bench-ab needs hey: apt-get install hey"; exit 2; }
	$(BIN)/python -m bench.ab --base $(AB_BASE)

# The GPU figures (docs/performance.md, "GPU run"): everything in at most 8 minutes on one
# machine with an NVIDIA GPU; GPU_RUN_ARGS="--device cpu --quick" rehearses it on a CPU.
GPU_RUN_OUT ?= artifacts/gpu_run
GPU_RUN_ARGS ?= --device cuda
.PHONY: bench-gpu bench-gpu-rehearsal
bench-gpu:
	bench/gpu_run.sh $(GPU_RUN_ARGS) $(GPU_RUN_OUT)

# The GPU run end to end on this machine's CPU with tiny counts (4-7 min), checked by a test:
# run it before spending a lent GPU's minutes.
bench-gpu-rehearsal: | $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m rehearsal tests/bench/test_gpu_run.py

# A second `make serve` until /health answers, against Ray Serve's own floor (one replica that
# says "ok") started the same way, in interleaved rounds; about 90 s a round here.
bench-startup: $(DEMO_MODEL) | $(VENV)/.installed-dev
	$(BIN)/python -m bench.startup

resilience: $(DEMO_MODEL) | $(VENV)/.installed-dev
	@command -v hey >/dev/null || { echo "resilience needs hey: apt-get install hey"; exit 2; }
	$(BIN)/python -m bench.resilience

# --- Local tracking and monitoring (observe/, README "Monitoring") ------------------------------
MLFLOW_PORT ?= 5000
PROMETHEUS_PORT ?= 9090
GRAFANA_PORT ?= 3000
SCRAPE_INTERVAL ?= 15s
RAY_SD ?=
APP_URL ?=

.PHONY: observe observe-stop

# MLflow, Prometheus (and Grafana, where installed) on loopback, in the foreground, until Ctrl-C
# or `make observe-stop`. Prometheus scrapes the Ray nodes in Ray's service-discovery file
# (RAY_SD, default the newest local instance's), or APP_URL's /metrics when that is set.
observe: | $(VENV)/.installed-demo
	$(BIN)/python -m observe up --mlflow-port $(MLFLOW_PORT) --prometheus-port $(PROMETHEUS_PORT) \
		--grafana-port $(GRAFANA_PORT) --scrape-interval $(SCRAPE_INTERVAL) \
		$(if $(RAY_SD),--ray-sd $(RAY_SD)) $(if $(APP_URL),--app-url $(APP_URL))

observe-stop:
	$(BIN)/python -m observe stop

# --- Deployment: k8s/, terraform/, docker/, .github/ (docs/deploy.md) ----------------------
TOOLS_VENV := .venv-tools
CHECKOV_VERSION := 3.3.30

.PHONY: k8s-manifests check-deploy check-gke-config deploy-tools

# k8s/rayservice.yaml embeds serve_config.yaml + k8s/templates/serve-overlay.yaml; tests/deploy fail
# while it is stale, so run this after changing either.
k8s-manifests: | $(VENV)/.installed-dev
	$(BIN)/python k8s/generate.py

# checkov pins packaging and networkx below what Ray and torch use: it gets a venv of its own,
# with cel-python, which evaluates the Workload Identity condition (tests/deploy).
CEL_PYTHON_VERSION := 0.5.0
$(TOOLS_VENV)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION) \
		cel-python==$(CEL_PYTHON_VERSION)

deploy-tools: $(TOOLS_VENV)/bin/checkov

# The deployment checks alone; `make test` runs them with everything else.
check-deploy: deploy-tools | $(VENV)/.installed-dev
	$(BIN)/python k8s/generate.py --check
	$(BIN)/python -m pytest tests/deploy

test: deploy-tools

# k8s/rayservice.yaml's serve config, rendered, from the built wheel on a two-node local Ray
# cluster (tests/deploy/test_gke_config_two_nodes.py): heavy, so apart from check-deploy.
check-gke-config: | $(VENV)/.installed-dev
	PPD_TWO_NODE_CLUSTER=1 $(BIN)/python -m pytest tests/deploy/test_gke_config_two_nodes.py -s
