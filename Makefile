# shardnet — `make help` lists the targets.
GO        ?= go
BIN       := bin/shardnet
# Packages with concurrency whose unit tests run under the race detector.
UNIT_PKGS := ./fsm/... ./shard/... ./server/... ./api/... ./cluster/... ./internal/agent/...
# Multi-node suites on in-process clusters: real TCP and disks, no -race
# (the race detector slows them past their timeouts on 2 cores).
CLUSTER_PKGS := ./internal/e2e/... ./internal/lint/... ./cmd/...
STATICCHECK_VERSION := v0.8.2

.PHONY: help build run test test-unit test-race test-cluster bench lint fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/shardnet
	$(GO) build -o $(BIN) ./cmd/shardnet

run: build ## start a local dev cluster (3 core + 3 resource nodes, channel "demo")
	./$(BIN) dev

test: test-race test-cluster ## every test: unit packages with -race, then the cluster suites

test-race: ## unit packages under the race detector
	$(GO) test -race -count=1 -timeout 15m $(UNIT_PKGS)

test-cluster: ## multi-node suites on in-process clusters
	$(GO) test -count=1 -timeout 20m $(CLUSTER_PKGS)

bench: ## benchmarks (numbers go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchtime 3s ./internal/e2e/ ./shard/...

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean: ## remove build output
	rm -rf bin
