# Siskin. `make help` lists the targets.

GO      ?= go
LABCTL  := bin/labctl
PKGS    := ./...
FUZZTIME ?= 5s
export GOTOOLCHAIN := local

.DEFAULT_GOAL := help
.PHONY: help build test unit ui-browser e2e chaos chaos-short bench-load test-lab fuzz fuzz-long bench bench-e2e bench-scale demo demo-short lab-build lab-up lab-down vet fmt tidy clean image validate-manifests FORCE

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  /'

## build: build bin/siskin
build:
	$(GO) build -o bin/siskin .

## test: install what is missing, then run unit tests, short fuzzing, the lab tests, the end-to-end tests, the short chaos run and the short demo
test: lab-build vet unit ui-browser fuzz test-lab e2e chaos-short demo-short

## vet: go vet, with and without the e2e and browser tags
vet:
	$(GO) vet $(PKGS)
	$(GO) vet -tags e2e ./test/...
	$(GO) vet -tags browser ./handlers/
	$(GO) vet -tags testhooks .

## unit: unit tests (no lab needed)
unit:
	$(GO) test -count=1 $(PKGS)

## ui-browser: the dashboard in headless chromium against a fake fleet (no lab); SISKIN_SHOTS=dir keeps the screenshots
ui-browser: lab-build
	$(GO) test -tags browser -count=1 -run '^TestBrowser' ./handlers/

## fuzz: run every fuzzer briefly (FUZZTIME, default 5s each): the decoders, the alert selector, the image policy, the query templates
FUZZERS := handlers:FuzzDecodeRegistryWebhook handlers:FuzzDecodeAlertmanager handlers:FuzzDecodeCloudEvent \
	functions:FuzzAlertMatches functions:FuzzDecidePush analysis:FuzzRenderQueryCannotInject
fuzz:
	@for pf in $(FUZZERS); do \
		pkg=$${pf%%:*}; f=$${pf#*:}; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

## fuzz-long: run every fuzzer for 10 million executions (FUZZTIME=10000000x); the last lines of each run are in fuzz-long.log
fuzz-long:
	@: > fuzz-long.log; for pf in $(FUZZERS); do \
		pkg=$${pf%%:*}; f=$${pf#*:}; \
		echo "== $$pf" | tee -a fuzz-long.log; \
		$(GO) test ./$$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(or $(FUZZ_LONG),10000000x) > fuzz-long.tmp 2>&1; rc=$$?; \
		grep -E 'execs:|^(ok|PASS|FAIL|---)' fuzz-long.tmp | tail -3 | tee -a fuzz-long.log; rm -f fuzz-long.tmp; \
		[ $$rc -eq 0 ] || exit 1; \
	done

## e2e: end-to-end tests of Siskin against the lab
e2e: lab-build
	$(GO) test -tags e2e -count=1 -parallel 8 -timeout 30m ./test/e2e/...

## chaos: the full chaos run and the duplicated-event test at volume (10,000 events) against the lab, under 20 minutes; figures in chaos-out/
chaos: lab-build
	CHAOS_FULL=1 $(GO) test -tags e2e -count=1 -v -run '^(TestChaos|TestDuplicatedEventsAtVolume)$$' -timeout 25m ./test/chaos/

## chaos-short: the chaos run and the duplicated-event test, shortened, as make test runs them
chaos-short: lab-build
	$(GO) test -tags e2e -count=1 -run '^(TestChaos|TestDuplicatedEventsAtVolume|TestRedisLossDoesNotStepEarly|TestPushClaimedByAProcessThatDiedIsNotLost)$$' -timeout 15m ./test/chaos/

## bench-load: mixed webhooks at LOAD_RPS (1000) req/s for LOAD_FOR (30) s plus bursts against 2 processes on the lab; figures in chaos-out/load.md (not in make test)
bench-load: lab-build
	$(GO) test -tags e2e -count=1 -run '^$$' -bench '^BenchmarkWebhookLoad$$' -benchtime 1x -timeout 15m ./test/chaos/

## bench: benchmarks that need no lab
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./functions/... ./state/... ./handlers/... ./analysis/...

## bench-e2e: benchmarks against the lab (step cost, abort and push latency)
bench-e2e: lab-build
	$(GO) test -tags e2e -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/e2e/...

## bench-scale: Siskin beside Flagger v1.36.1 (built from the Go module proxy, cached) on the lab, N canaries one system after the other (BENCH_N=100,500,1250; BENCH_N=100 for a quick run); tables and plots in bench-out/
bench-scale: lab-build
	@bash test/bench/build-flagger.sh >/dev/null
	$(GO) run ./test/bench/cmd/benchscale -n "$(or $(BENCH_N),100,500,1250)" -out "$(or $(BENCH_OUT),bench-out)"

## demo: the whole story on a fresh machine: lab, three releases, live progress, a report (demo-out/); DEMO_FLAGS=-gateway-api adds a fourth on the Gateway API
demo: lab-build bin/demo
	bin/demo $(DEMO_FLAGS)

## demo-short: the demo, shortened, as CI runs it; fails unless all three releases end as expected
demo-short: lab-build bin/demo
	bin/demo -short

# The demo is built, not run with `go run`, so that its first compile says how long it takes
# and a Ctrl-C reaches the demo itself, which then tears everything down.
bin/demo: FORCE
	@echo "demo: compiling test/demo (a few minutes the first time, seconds once Go's cache is warm)"
	@start=$$(date +%s); $(GO) build -o bin/demo ./test/demo && echo "demo: compiled in $$(( $$(date +%s) - start ))s"

## lab-build: install the lab's Debian packages and build (or find cached) its control plane
lab-build:
	@bash test/lab/deps.sh
	@bash test/lab/build.sh >/dev/null

$(LABCTL): FORCE
	@$(GO) build -o $(LABCTL) ./test/lab/cmd/labctl

## lab-up: start a lab in the background; prints export lines: eval "$$(make -s lab-up)"
lab-up: lab-build $(LABCTL)
	@$(LABCTL) up

## lab-down: stop the background lab, leaving no process
lab-down: $(LABCTL)
	@$(LABCTL) down

## test-lab: the tests proving each component of the lab is real
test-lab: lab-build
	$(GO) test -tags e2e -count=1 ./test/labtest/...

## fmt: gofmt everything
fmt:
	gofmt -w $$(git ls-files '*.go')

## tidy: go mod tidy
tidy:
	$(GO) mod tidy

# Build tools, installed once per version into a cache outside the checkout.
TOOLS         ?= $(HOME)/.cache/siskin/tools
KO_VERSION    := v0.19.1
CRANE_VERSION := v0.22.1
KO            := $(TOOLS)/ko-$(KO_VERSION)/ko
CRANE         := $(TOOLS)/crane-$(CRANE_VERSION)/crane
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

$(KO):
	GOBIN=$(dir $(KO)) $(GO) install github.com/google/ko@$(KO_VERSION)

$(CRANE):
	GOBIN=$(dir $(CRANE)) $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)

## image: build and push the image with ko (.ko.yaml) to KO_DOCKER_REPO; unset: to the lab's registry (REGISTRY, or a lab started now) on a local static base
image: $(KO) $(CRANE)
	@set -e; mkdir -p bin; \
	if [ -z "$$KO_DOCKER_REPO" ]; then \
		if [ -z "$$REGISTRY" ]; then eval "$$($(MAKE) -s lab-up)"; fi; \
		export KO_DOCKER_REPO="$$REGISTRY/siskin"; \
		if [ -z "$$KO_DEFAULTBASEIMAGE" ]; then \
			base="$$REGISTRY/siskin/base-static:latest"; tmp=$$(mktemp -d); \
			mkdir -p "$$tmp/root/etc/ssl/certs"; \
			cp /etc/ssl/certs/ca-certificates.crt "$$tmp/root/etc/ssl/certs/"; \
			tar -C "$$tmp/root" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$$tmp/base.tar" etc; \
			$(CRANE) append --platform linux/amd64 -f "$$tmp/base.tar" -t "$$base" >/dev/null; \
			$(CRANE) mutate --user 65532:65532 --set-platform linux/amd64 -t "$$base" "$$base" >/dev/null; \
			rm -rf "$$tmp"; \
			export KO_DEFAULTBASEIMAGE="$$base" KO_PLATFORM=linux/amd64; \
			echo "image: base $$base (CA certificates, user 65532)"; \
		fi; \
	fi; \
	VERSION=$(VERSION) $(KO) build --bare --tags=$(VERSION) --image-refs=bin/image.ref \
		$${KO_PLATFORM:+--platform=$$KO_PLATFORM} . >/dev/null; \
	echo "image: $$(cat bin/image.ref)"

## validate-manifests: kustomize build and schema checks of knative/, then server-side dry-run of every object against a lab
validate-manifests: lab-build
	$(GO) test -count=1 ./knative/...
	$(GO) test -tags e2e -count=1 -run '^TestOpsManifests' ./test/e2e/

## clean: remove build output
clean:
	rm -rf bin

FORCE:
