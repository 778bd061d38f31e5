# Two commands matter: `make demo` and `make test`. Both create .venv on first use.
# make demo: portrait mode on the bundled clip with exports/portrait.tflite → demo_out/portrait.mp4,
# demo_out/before_after.png and frames/s (DEMO_ARGS="--effect swap" etc. pass options to kseg demo).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kseg-installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv opencv test test-all test-slow test-faults demo web clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[test,jax]"
	@$(MAKE) --no-print-directory opencv
	touch $@

# kseg depends on opencv-python, OpenCV's GUI build (the live window of python -m apps.webcam).
# opencv-python-headless installs the same cv2 package, and the two installed together overwrite
# each other's files: if an older .venv or a dependency brought it, it goes and opencv-python's
# files are put back. Where the GUI build cannot load (no libGL.so.1 or glib: a bare server or
# container image) the headless build replaces it: everything but the window works, and the app
# says so when asked for one.
OPENCV_VERSION = $(shell sed -n 's/^opencv-python==//p' requirements.lock)
opencv:
	@test -x $(BIN)/python || { echo "no $(VENV) yet: run make venv"; exit 1; }
	@if $(BIN)/python -m pip show -q opencv-python-headless 2>/dev/null; then \
	  echo "removing opencv-python-headless: it shares the cv2 package with opencv-python"; \
	  $(BIN)/python -m pip uninstall --quiet -y opencv-python-headless; \
	  $(BIN)/python -m pip install --quiet --force-reinstall --no-deps opencv-python==$(OPENCV_VERSION); \
	fi
	@$(BIN)/python -c "import cv2" 2>/dev/null || { \
	  echo "note: OpenCV's GUI build does not load here ($$($(BIN)/python -c 'import cv2' 2>&1 | tail -n 1));" \
	       "installing opencv-python-headless instead: no live window (apt-get install libgl1 libglib2.0-0, then make opencv)"; \
	  $(BIN)/python -m pip uninstall --quiet -y opencv-python; \
	  $(BIN)/python -m pip install --quiet --no-deps opencv-python-headless==$(OPENCV_VERSION); \
	  $(BIN)/python -c "import cv2"; }

# make test: the suite without the slow tests, in TEST_WORKERS processes (pytest-xdist; a test file
# stays in one process, so its module fixtures are built once). Most of a test's time is single-threaded
# Python (tracing, TFLite conversion): on 2 cores (Intel Xeon VM with AMX, 2026-12-02) two processes took
# 6.5 minutes; one took 18.6 before the slowest conversions moved to test-slow (3.6 of those minutes).
# TEST_WORKERS=0 runs them in this process (a debugger, -x); TEST_WORKERS=auto one per core.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the slow tests outside the fault suite (conversions of the large models, QAT, mixed precision,
# JAX data parallel, U²-Net deep supervision), in TEST_WORKERS processes; CI runs it after make test
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow -n $(TEST_WORKERS) --dist loadfile --ignore=tests/faults \
	  --ignore=tests/test_distribute.py $(PYTEST_ARGS)

# the fault-injection suite's slow cases (Ctrl-C at random moments of real runs, then resume);
# make test runs its fast ones. Both print the table of cases at the end.
# Also the multi-worker restart test (a worker killed mid-run, the rerun resumes; about 1 minute).
test-faults: $(STAMP)
	$(BIN)/python -m pytest -q -m slow tests/faults tests/test_distribute.py $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python -m kseg demo $(DEMO_ARGS)

# make web: the browser demo (apps/web: MediaPipe Tasks on the webcam) at http://127.0.0.1:8000/;
# WEB_PORT=8001 for another port. Installs the pinned npm packages on first use (needs npm).
WEB_PORT ?= 8000
web:
	test -d apps/web/node_modules/@mediapipe/tasks-vision || (cd apps/web && npm ci --no-audit --no-fund)
	$(PYTHON) apps/web/serve.py --port $(WEB_PORT)

clean:
	rm -rf $(VENV) .pytest_cache demo_out
