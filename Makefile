# shardnet — `make help` lists the targets.
GO        ?= go
BIN       := bin/shardnet
# Packages with concurrency run under the race detector, including the
# end-to-end suite (in-process clusters: the node's loops race there if
# anywhere).
UNIT_PKGS := ./fsm/... ./chunk/... ./access/... ./transport/... ./shard/... ./server/... ./api/... ./cluster/... ./internal/agent/... ./internal/e2e/... ./internal/loadgen/... ./internal/procs/...
# Long multi-node suites: real TCP and disks, no -race (it slows them past
# their fault schedules on 2 cores).
CLUSTER_PKGS := ./internal/chaos/... ./internal/lint/... ./cmd/...
# boltdb/bolt (under raft-boltdb v1, the meta log) converts pointers in ways
# the race detector's checkptr refuses; it is checkptr-clean nowhere else.
RACE_FLAGS := -race -gcflags=github.com/boltdb/bolt=-d=checkptr=0
STATICCHECK_VERSION := v0.8.2
# The tag `make docker` builds (bench/scaleout.sh builds one of its own).
DOCKER_IMAGE ?= shardnet:dev

.PHONY: help build run test test-unit test-race test-cluster chaos docker chaos-docker bench bench-compare bench-scaleout bench-files lint fmt clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# Static (no cgo), as the docker image needs it: one build cache for both.
build: ## build bin/shardnet (static)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/shardnet

run: build ## start a local dev cluster (3 core + 3 resource nodes, channel "demo")
	./$(BIN) dev

test: test-race test-cluster ## every test: unit packages with -race, then the cluster suites

test-race: ## unit packages under the race detector
	$(GO) test $(RACE_FLAGS) -count=1 -timeout 15m $(UNIT_PKGS)

test-cluster: ## multi-node suites on in-process clusters
	$(GO) test -count=1 -timeout 20m $(CLUSTER_PKGS)

chaos: ## long chaos run: faults + linearizability check (SHARDNET_CHAOS_DURATION=5m; SHARDNET_CHAOS_SEED=N replays)
	SHARDNET_CHAOS_DURATION=$${SHARDNET_CHAOS_DURATION:-5m} $(GO) test -count=1 -timeout 60m -v -run 'TestLinearizableUnderFaults' ./internal/chaos/

docker: ## build the image shardnet:dev (FROM scratch; the static binary is built on the host; DOCKER_IMAGE=tag)
	CGO_ENABLED=0 $(GO) build -trimpath -o deploy/.build/shardnet ./cmd/shardnet
	mkdir -p deploy/.build/data
	docker build -t $(DOCKER_IMAGE) deploy

chaos-docker: ## chaos run on a 5-node docker compose cluster (needs Docker; SHARDNET_CHAOS_DURATION=2m)
	SHARDNET_DOCKER_CHAOS=1 SHARDNET_CHAOS_DURATION=$${SHARDNET_CHAOS_DURATION:-2m} $(GO) test -count=1 -timeout 30m -v -run 'TestDockerLinearizableUnderFaults' ./internal/chaos/

bench: ## benchmarks (numbers go to docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchtime 3s ./internal/e2e/ ./shard/... ./transport/...

bench-compare: ## shardnet vs etcd 3.6 (built once, cached): native load generators to leader and follower, then wrk; leader-loss trials (DURATION=5s CONNS="1 16 64 256" REPEAT=1 TABLES; bench/results/latest.md)
	bash bench/compare.sh

bench-scaleout: ## writes over 12 channels on 3 then 6 CPU-capped containers, alternating (ROUNDS=3; bench/results/scaleout-latest.md)
	bash bench/scaleout.sh

bench-files: ## file upload/download throughput (1 MiB to 1 GiB, 1 to 16 clients), agents' RSS, beside dd, sha256 and SeaweedFS (bench/results/files-latest.txt)
	bash bench/files.sh

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

clean: ## remove build output
	rm -rf bin
