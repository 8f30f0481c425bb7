// The benchmark helpers are a module of their own, on the standard library
// only: they are tools run by bench/*.sh, not part of shardnet, and keeping
// them out of the main module keeps them out of its ./... (lint's layer map,
// go vet, go test).
module github.com/shardnet/shardnet/bench

go 1.26.8
