# Lab targets (test/lab). The integrator merges these into the main Makefile.

GO ?= go
LABCTL := bin/labctl

.PHONY: lab-build lab-up lab-down test-lab

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

.PHONY: FORCE
FORCE:
