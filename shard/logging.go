package shard

import (
	"strings"

	"github.com/hashicorp/go-hclog"
)

// quieter wraps a logger so that everything logged through it lands one
// level lower: hashicorp/raft logs routine events of hundreds of groups
// (elections, an unreachable peer's every retry) at INFO, WARN and ERROR.
// Wrapping instead of SetLevel matters: hclog sub-loggers share their
// root's level, so SetLevel on one would silence the whole node.
type quieter struct{ hclog.Logger }

// Quiet returns l with every message one level lower (for raft loggers).
func Quiet(l hclog.Logger) hclog.Logger { return quieter{l} }

func lower(l hclog.Level) hclog.Level {
	switch l {
	case hclog.Error:
		return hclog.Warn
	case hclog.Warn:
		return hclog.Info
	case hclog.Info:
		return hclog.Debug
	case hclog.Debug:
		return hclog.Trace
	}
	return l
}

func (q quieter) Log(level hclog.Level, msg string, args ...interface{}) {
	q.Logger.Log(q.level(level, args), msg, args...)
}
func (q quieter) Debug(msg string, args ...interface{}) { q.Logger.Trace(msg, args...) }
func (q quieter) Info(msg string, args ...interface{})  { q.Logger.Debug(msg, args...) }
func (q quieter) Warn(msg string, args ...interface{})  { q.Log(hclog.Warn, msg, args...) }
func (q quieter) Error(msg string, args ...interface{}) { q.Log(hclog.Error, msg, args...) }

// level is where a raft message of the given level lands. An RPC refused
// because the peer does not run the group (yet: a new channel's replicas
// start within moments of each other; or any more: it was just removed) is
// routine, and raft retries it: debug, not a warning an operator must read.
func (q quieter) level(l hclog.Level, args []interface{}) hclog.Level {
	for _, a := range args {
		if err, ok := a.(error); ok && strings.Contains(err.Error(), "unknown group") {
			return hclog.Debug
		}
	}
	return lower(l)
}
func (q quieter) IsDebug() bool                         { return q.Logger.IsTrace() }
func (q quieter) IsInfo() bool                          { return q.Logger.IsDebug() }
func (q quieter) IsWarn() bool                          { return q.Logger.IsInfo() }
func (q quieter) IsError() bool                         { return q.Logger.IsWarn() }
func (q quieter) With(args ...interface{}) hclog.Logger { return quieter{q.Logger.With(args...)} }
func (q quieter) Named(name string) hclog.Logger        { return quieter{q.Logger.Named(name)} }
func (q quieter) ResetNamed(name string) hclog.Logger   { return quieter{q.Logger.ResetNamed(name)} }
