# wasmvisor — see README.md. Every target works with only Go installed, except `plugins`,
# which needs the guest toolchains (`make toolchains` installs them on Debian).

GO      ?= go
GOWASM  := GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -buildvcs=false -ldflags=-buildid=
BIN     := bin/wasmvisor

# Go plugins: directory -> output .wasm
GO_PLUGINS := \
	plugins/authz:plugins/authz/authz.wasm \
	plugins/validate:plugins/validate/validate.wasm \
	plugins/ratelimit:plugins/ratelimit/ratelimit.wasm \
	plugins/conformance/go:plugins/conformance/go/conformance.wasm \
	sandbox/testdata/caps:sandbox/testdata/caps/caps.wasm
WAT_PLUGINS := plugins/reference/reference sandbox/testdata/mini sandbox/testdata/noabi sandbox/testdata/hang sandbox/testdata/spin sandbox/testdata/hostcall sandbox/testdata/snapenv sandbox/testdata/snaptable sandbox/internal/wasmbin/testdata/bulk sandbox/internal/wasmbin/testdata/fuel sandbox/internal/wasmbin/testdata/snap sandbox/internal/wasmbin/testdata/snaptable \
	$(basename $(wildcard internal/faults/testdata/*.wat sandbox/testdata/hostile/*.wat))

.PHONY: all build test run loadtest plugins plugins-go plugins-wat plugins-rust plugins-c plugins-extism plugins-assemblyscript plugins-rego \
	plugins-check check lint fmt tidy bench bench-opa bench-http test-opa test-ui docs-screenshot fuzz toolchains clean

all: build

build:
	$(GO) build ./...
	$(GO) build -o $(BIN) ./cmd/wasmvisor

test:
	$(GO) test -race ./...

# The main job: serve the built-in policy plugins on 127.0.0.1:8080 (embedded default config).
run:
	$(GO) run ./cmd/wasmvisor serve

# Not in CI: the server on loopback under HTTP load, authz policy; figures in BENCHMARKS.md.
LOADTEST_ADDR ?= 127.0.0.1:18080
LOADTEST_ARGS ?= -c 8 -d 10s
loadtest: build
	@rm -f bin/loadtest.addr; \
	$(BIN) serve --listen $(LOADTEST_ADDR) --addr-file bin/loadtest.addr 2>bin/loadtest.log & pid=$$!; \
	for i in $$(seq 1 300); do test -s bin/loadtest.addr && break; sleep 0.1; done; \
	test -s bin/loadtest.addr || { kill $$pid; cat bin/loadtest.log; exit 1; }; \
	$(GO) run ./cmd/loadgen -ready http://$(LOADTEST_ADDR)/readyz -url http://$(LOADTEST_ADDR)/v1/plugins/authz/call/evaluate $(LOADTEST_ARGS); rc=$$?; \
	kill -TERM $$pid; wait $$pid; exit $$rc

plugins: plugins-wat plugins-go plugins-rust plugins-c plugins-extism plugins-assemblyscript plugins-rego

# A fixture that is invalid on purpose says so on its Build line (`;; Build: wat2wasm --no-check
# ...`), and is built without validation.
plugins-wat:
	@for p in $(WAT_PLUGINS); do flags=$$(sed -n 's/^;; Build: wat2wasm \(--no-check\) .*/\1/p' $$p.wat); \
	  echo "wat2wasm $${flags:+$$flags }$$p.wat"; wat2wasm $$flags $$p.wat -o $$p.wasm || exit 1; done

plugins-go:
	@for p in $(GO_PLUGINS); do dir=$${p%%:*}; out=$${p#*:}; echo "go build $$dir"; $(GOWASM) -o $$out ./$$dir || exit 1; done

plugins-rust:
	sh plugins/conformance/rust/build.sh

plugins-c:
	sh plugins/conformance/c/build.sh

plugins-extism:
	sh plugins/conformance/extism/build.sh

plugins-assemblyscript:
	sh plugins/conformance/assemblyscript/build.sh

# Rego policies compiled by OPA (built from bench/opa's tool line): plugins/rego/README.md.
plugins-rego:
	GO=$(GO) sh plugins/rego/build.sh

# Rebuild every committed .wasm and fail if any differs from the committed bytes.
plugins-check: plugins
	@git diff --stat --exit-code -- '*.wasm' 'plugins/rego/*/bundle.tar.gz' || { echo "rebuilt .wasm files or OPA bundles differ from the committed ones" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- '*.wasm')" || { git status --porcelain -- '*.wasm'; echo "untracked .wasm files" >&2; exit 1; }

# Debian packages and npm modules for `make plugins`.
toolchains:
	apt-get update
	apt-get install -y --no-install-recommends wabt binaryen clang lld wasi-libc libclang-rt-dev-wasm32 rustc libstd-rust-dev-wasm32 wrk
	command -v npm >/dev/null || apt-get install -y --no-install-recommends nodejs npm
	cd sdk/assemblyscript && npm ci --no-audit --no-fund

fmt:
	gofmt -w .

tidy:
	$(GO) mod tidy

lint:
	$(GO) tool golangci-lint run ./...

# Format, vet, lint, the repository's test rules (internal/testrules: no test waits on the
# wall clock) and tidy, then fail if any of them changed a tracked file.
check:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) vet ./...
	GOOS=wasip1 GOARCH=wasm $(GO) vet ./sdk/... ./plugins/authz/... ./plugins/validate/... ./plugins/ratelimit/... ./plugins/conformance/go/...
	$(GO) tool golangci-lint run ./...
	$(GO) mod tidy
	$(GO) test -count=1 ./internal/testrules/
	cd bench/opa && $(GO) vet ./... && $(GO) mod tidy
	cd uitest && $(GO) vet ./... && $(GO) mod tidy
	git diff --exit-code -- go.mod go.sum bench/opa/go.mod bench/opa/go.sum uitest/go.mod uitest/go.sum

# The figures of BENCHMARKS.md: every package's benchmarks in $(BENCH_COUNT) rounds (go test
# -count=1, $(BENCH_COUNT) times, so that run i of every benchmark comes from the same round
# and ratios compare side by side), raw output in $(BENCH_OUT)/<package>.txt, medians with their
# spread and the like-for-like ratios in $(BENCH_OUT)/<package>.md (internal/benchtab). About
# 7 minutes on 2 cores.
BENCH_COUNT ?= 5
BENCH_OUT   ?= bin/bench
BENCH_PKGS  ?= sandbox host sandbox/extism supervisor plugins/conformance internal/guestio internal/faults
bench:
	@mkdir -p $(BENCH_OUT)
	@for p in $(BENCH_PKGS); do n=$$(echo $$p | tr / -); echo "== $$p"; rm -f $(BENCH_OUT)/$$n.txt; \
	  for r in $$(seq $(BENCH_COUNT)); do \
	    $(GO) test -run='^$$' -bench=. -benchmem -count=1 ./$$p/ >> $(BENCH_OUT)/$$n.txt || { cat $(BENCH_OUT)/$$n.txt; exit 1; }; \
	  done; \
	  $(GO) run ./internal/benchtab $$(cat internal/benchtab/ratios/$$n 2>/dev/null) $(BENCH_OUT)/$$n.txt > $(BENCH_OUT)/$$n.md || exit 1; \
	  cat $(BENCH_OUT)/$$n.md; done

# The in-process comparison with OPA (bench/opa, a module of its own, so that wasmvisor never
# links OPA): test-opa checks that the Rego port decides as the authz plugin does; bench-opa
# runs BenchmarkDecision in $(BENCH_COUNT) rounds as `bench` does, raw output in
# $(BENCH_OUT)/bench-opa.txt, medians and the OPA/wasmvisor ratios in $(BENCH_OUT)/bench-opa.md.
# AUTHZ_BEFORE=path/to/an/older/authz.wasm adds that plugin as wasmvisor-before, and its ratio.
test-opa:
	cd bench/opa && $(GO) test -count=1 ./...

# The dashboard (/ui) in headless Chromium against a real `wasmvisor serve` (uitest, its own
# module: the main one does not need chromedp). Without Chromium the test skips, unless
# WASMVISOR_REQUIRE_BROWSER=1 (.ci/run); screenshots go to $$WASMVISOR_ARTIFACTS (default a temp
# dir, the test logs the paths). `make docs-screenshot` rewrites docs/dashboard.png.
UI_COUNT ?= 1
test-ui:
	cd uitest && $(GO) test -count=$(UI_COUNT) -v ./...

docs-screenshot:
	cd uitest && WASMVISOR_DOCS_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(GO) test -count=1 -run TestDashboard ./...

bench-opa:
	@mkdir -p $(BENCH_OUT); rm -f $(BENCH_OUT)/bench-opa.txt
	@for r in $$(seq $(BENCH_COUNT)); do \
	  (cd bench/opa && $(GO) test -run='^$$' -bench=. -benchmem -count=1 .) >> $(BENCH_OUT)/bench-opa.txt || { cat $(BENCH_OUT)/bench-opa.txt; exit 1; }; \
	done
	$(GO) run ./internal/benchtab $$(cat internal/benchtab/ratios/bench-opa) \
	  $$(test -z "$$AUTHZ_BEFORE" || cat internal/benchtab/ratios/bench-opa-before) $(BENCH_OUT)/bench-opa.txt > $(BENCH_OUT)/bench-opa.md
	@cat $(BENCH_OUT)/bench-opa.md

# The same comparison over HTTP: `wasmvisor serve` against `opa run --server`, each a process
# on loopback, 1 and 8 connections, $(BENCH_COUNT) alternating rounds of 5 s each side, driven
# by wrk (Debian's wrk package; HTTP_CLIENT=go uses httpbench's own Go client instead)
# (bench/opa/cmd/httpbench builds both binaries; the table goes to $(BENCH_OUT)/bench-http.md).
# HTTP_POLICY=rego serves, on wasmvisor's side, authz.rego compiled to Wasm (plugins/rego/authz).
HTTP_CLIENT ?= wrk
HTTP_POLICY ?= go
bench-http:
	@mkdir -p $(BENCH_OUT)
	cd bench/opa && $(GO) run ./cmd/httpbench -rounds $(BENCH_COUNT) -d 5s -client $(HTTP_CLIENT) -policy $(HTTP_POLICY) > ../../$(BENCH_OUT)/bench-http.md
	@cat $(BENCH_OUT)/bench-http.md

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzLoad -fuzztime=60s ./sandbox/
	$(GO) test -run='^$$' -fuzz=FuzzInstrument -fuzztime=60s ./sandbox/internal/wasmbin/
	$(GO) test -run='^$$' -fuzz=FuzzJSONReader -fuzztime=60s ./sdk/go/
	$(GO) test -run='^$$' -fuzz=FuzzAppendJSONString -fuzztime=30s ./sdk/go/
	$(GO) test -run='^$$' -fuzz=FuzzDecideMatchesReference -fuzztime=60s ./plugins/authz/
	$(GO) test -run='^$$' -fuzz=FuzzValidateMatchesReference -fuzztime=60s ./plugins/validate/
	$(GO) test -run='^$$' -fuzz=FuzzCheckMatchesReference -fuzztime=30s ./plugins/ratelimit/

clean:
	rm -rf bin
