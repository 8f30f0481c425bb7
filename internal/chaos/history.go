package chaos

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Recorder collects a concurrent history: each operation's invocation and
// completion on one monotonic clock, its input and output. It is safe for
// concurrent use.
type Recorder struct {
	start time.Time // carries Go's monotonic clock reading

	mu      sync.Mutex
	ops     []porcupine.Operation
	refused map[string]string // values of writes refused with a 4xx: value → why
	wrong   []string          // what the clients saw that no history can explain (Problem)
	notes   []porcupine.Annotation
	procs   int

	attempts []attempt // every operation sent, answered or not (availability.go)
}

// NewRecorder starts a history; its clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), refused: map[string]string{}}
}

// Now is the history's clock: nanoseconds since the recorder started,
// monotonic.
func (r *Recorder) Now() int64 { return int64(time.Since(r.start)) }

// NewProcess returns a fresh process id (porcupine's ClientId, one row of
// the visualization). A client takes a new one after an operation whose
// outcome is unknown, since that operation never returns.
func (r *Recorder) NewProcess() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs++
	return r.procs - 1
}

// Add records a completed operation. An operation whose outcome is unknown
// is recorded as never returning.
func (r *Recorder) Add(proc int, in Input, out Output, call, ret int64, meta string) {
	if out.Status == StatusUnknown {
		ret = math.MaxInt64
	}
	op := porcupine.Operation{ClientId: proc, Input: in, Call: call, Output: out, Return: ret}
	if meta != "" {
		op.Metadata = meta
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Refused notes a write that was definitely not applied (4xx, or a 503 the
// API contract says was never proposed): it is left out of the history, and
// its value must never be read.
func (r *Recorder) Refused(value, why string) {
	r.mu.Lock()
	r.refused[value] = why
	r.mu.Unlock()
}

// Problem records something a client saw that is wrong whatever the
// order of operations (a file's bytes that do not hash to its ETag, say):
// Check reports it with the inconsistencies it finds itself.
func (r *Recorder) Problem(desc string) {
	r.mu.Lock()
	r.wrong = append(r.wrong, desc)
	r.mu.Unlock()
}

// Note records an event of the test itself (a fault) between start and end
// for the visualization.
func (r *Recorder) Note(start, end int64, desc string) {
	r.mu.Lock()
	r.notes = append(r.notes, porcupine.Annotation{Tag: "nemesis", Start: start, End: end, Description: desc,
		BackgroundColor: "#fde2c8"})
	r.mu.Unlock()
}

// Operations returns a copy of the history so far.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]porcupine.Operation(nil), r.ops...)
}

// Result is the outcome of Check.
type Result struct {
	Verdict  porcupine.CheckResult // Ok, Illegal or Unknown (the checker timed out)
	Ops      int                   // operations checked
	Pending  int                   // of which with an unknown outcome
	Problems []string              // inconsistencies found before porcupine ran
	// Visualization is the HTML file written when the history is not
	// linearizable (or the checker timed out), "" otherwise.
	Visualization string
	Took          time.Duration
}

// OK reports a history found linearizable, with no inconsistency.
func (res Result) OK() bool { return res.Verdict == porcupine.Ok && len(res.Problems) == 0 }

// Check annotates the history (see Input.Index), looks for inconsistencies
// porcupine would report less clearly (a read of a value no write wrote, or
// of a refused write; one value seen with two modify indexes), then checks
// linearizability with porcupine within timeout. When the history is not
// linearizable, or the check timed out, the visualization is written to
// vizPath (its directory is created).
func (r *Recorder) Check(timeout time.Duration, vizPath string) (Result, error) {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	refused := make(map[string]string, len(r.refused))
	for k, v := range r.refused {
		refused[k] = v
	}
	notes := append([]porcupine.Annotation(nil), r.notes...)
	wrong := append([]string(nil), r.wrong...)
	r.mu.Unlock()

	res := Result{Ops: len(ops)}
	ops, res.Problems = annotate(ops, refused)
	res.Problems = append(res.Problems, wrong...)
	for _, op := range ops {
		if op.Output.(Output).Status == StatusUnknown {
			res.Pending++
		}
	}
	start := time.Now()
	model := Model()
	verdict, info := porcupine.CheckOperationsVerbose(model, ops, timeout)
	res.Verdict, res.Took = verdict, time.Since(start)
	if verdict == porcupine.Ok || vizPath == "" {
		return res, nil
	}
	info.AddAnnotations(notes)
	if err := os.MkdirAll(filepath.Dir(vizPath), 0o755); err != nil {
		return res, fmt.Errorf("chaos: visualization dir: %w", err)
	}
	if err := porcupine.VisualizePath(model, info, vizPath); err != nil {
		return res, fmt.Errorf("chaos: write visualization: %w", err)
	}
	res.Visualization = vizPath
	return res, nil
}

// annotate fills each write's Input.Index with the log index of the entry it
// became, when the history tells it, and reports inconsistencies.
func annotate(ops []porcupine.Operation, refused map[string]string) ([]porcupine.Operation, []string) {
	type seen struct {
		index uint64
		by    string
	}
	var problems []string
	indexOf := map[string]seen{} // value → its modify index and who said so
	written := map[string]bool{}
	learn := func(value string, index uint64, by string) {
		if index == 0 {
			problems = append(problems, fmt.Sprintf("%s reports value %q with modify index 0", by, value))
			return
		}
		if s, ok := indexOf[value]; ok && s.index != index {
			problems = append(problems, fmt.Sprintf("value %q has modify index %d (%s) and %d (%s)", value, s.index, s.by, index, by))
			return
		}
		indexOf[value] = seen{index, by}
	}
	for _, op := range ops {
		in, out := op.Input.(Input), op.Output.(Output)
		switch {
		case in.Kind == OpPut || in.Kind == OpCASPut || in.Kind == OpPutIf:
			written[in.Value] = true
			if out.Status == StatusOK {
				learn(in.Value, out.Index, "its write's answer")
			}
		case in.Kind == OpTxn:
			written[in.Value] = true
			switch {
			case out.Status == StatusOK && out.Succeeded:
				learn(in.Value, out.Index, "its txn's answer")
			case out.Status == StatusOK && out.Found:
				learn(out.Value, out.ReadIndex, fmt.Sprintf("the failure get of a txn on %s", in.Key))
			}
		case in.Kind == OpGet && out.Found:
			learn(out.Value, out.Index, fmt.Sprintf("a get of %s", in.Key))
		}
	}
	byIndex := map[uint64]string{}
	for v, s := range indexOf {
		if other, ok := byIndex[s.index]; ok {
			problems = append(problems, fmt.Sprintf("values %q and %q both have modify index %d", other, v, s.index))
		}
		byIndex[s.index] = v
	}
	out := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		in, o := op.Input.(Input), op.Output.(Output)
		switch in.Kind {
		case OpPut, OpCASPut, OpTxn, OpPutIf:
			if o.Status != StatusUnknown && o.Index != 0 {
				in.Index = o.Index
			} else if s, ok := indexOf[in.Value]; ok && (o.Status == StatusUnknown || o.Status == StatusOK) {
				in.Index = s.index
			}
		case OpDelete:
			if o.Status != StatusUnknown {
				in.Index = o.Index
			}
		}
		if (in.Kind == OpGet || (in.Kind == OpTxn && !o.Succeeded)) && o.Status == StatusOK {
			if o.Found && !written[o.Value] {
				if why, ok := refused[o.Value]; ok {
					problems = append(problems, fmt.Sprintf("a get of %s at %d returned %q, whose write was refused (%s)", in.Key, op.Call, o.Value, why))
				} else {
					problems = append(problems, fmt.Sprintf("a get of %s at %d returned %q, which no write wrote", in.Key, op.Call, o.Value))
				}
			}
		}
		op.Input = in
		out[i] = op
	}
	sort.Strings(problems)
	return out, problems
}
