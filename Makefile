# limaml: the two commands of the README, and a sanitizer build.
#   make demo   build, then run the main job end to end on the embedded defaults
#   make test   build, then run every test (CTest)
#   make asan   the same tests under AddressSanitizer + UndefinedBehaviorSanitizer
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
BUILD ?= build
DEMO_DIR ?= demo-out

.PHONY: all deps build test asan demo bench-prepare clean

all: build

deps:
	@scripts/install-deps.sh all

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory 2>&1 | grep -v -E '^\[|^Consolidate|Built target' || true
	@test -x $(BUILD)/limaml

# The PyTorch differential test needs Debian's python3-torch and a venv with safetensors:
# scripts/setup-pyref.sh makes both (quickly when they are there) and prints the python.
test: build
	@py=$$(scripts/setup-pyref.sh $(BUILD)/pyref-venv) && st=$$(scripts/setup-schemathesis.sh $(BUILD)/schemathesis-venv | tail -1) && cd $(BUILD) && LM_SCHEMATHESIS=$$st LM_PYREF_PYTHON=$$py LM_REQUIRE_TORCH=1 ctest --output-on-failure -j $(JOBS)

asan: deps
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLM_SANITIZE='address;undefined' >/dev/null
	@cmake --build build-asan -j $(JOBS) -- --no-print-directory 2>&1 | grep -v -E '^\[|^Consolidate|Built target' || true
	@test -x build-asan/limaml
	@py=$$(scripts/setup-pyref.sh $(BUILD)/pyref-venv) && st=$$(scripts/setup-schemathesis.sh $(BUILD)/schemathesis-venv | tail -1) && cd build-asan && LM_SCHEMATHESIS=$$st LM_PYREF_PYTHON=$$py LM_REQUIRE_TORCH=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

demo: build
	@scripts/demo.sh $(BUILD)/limaml $(DEMO_DIR)

bench-prepare: build
	@$(BUILD)/limaml bench prepare

clean:
	rm -rf $(BUILD) build-asan $(DEMO_DIR)
