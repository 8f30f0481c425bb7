//go:build linux && amd64

package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
)

const metaLogHelperEnv = "SHARDNET_METALOG_HELPER_DIR"

// The meta group's log is raft-boltdb, on the OS's files (not a vfs.FS), so
// the power-loss tests of the shard package cannot cut it. This test checks
// at the system-call level, without strace, that each write raft makes to
// it reaches the disk before it returns: a child process (this test binary,
// TestMetaLogSyncsHelper) opens the log with openMetaLog and makes one
// write of each kind, each between two kill(pid, 0) markers, while this
// process traces it with ptrace and counts the fdatasync and fsync calls
// on raft.db (the file descriptor's target in /proc) in each interval.
//
// What it proves: every StoreLogs, SetUint64, Set and DeleteRange of the
// meta log, as opened by the node, issues at least one fdatasync/fsync of
// raft.db before it returns (and bolt writes its pages and its meta page
// in that order, one sync after each). What it does not: that the disk
// honours the sync (a volatile write cache), or bolt's own crash recovery.
func TestMetaLogSyncsEveryWrite(t *testing.T) {
	out, err := os.CreateTemp(t.TempDir(), "helper")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	runtime.LockOSThread() // ptrace answers only the thread that started the tracee
	defer runtime.UnlockOSThread()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMetaLogSyncsHelper$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), metaLogHelperEnv+"="+t.TempDir())
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("ptrace not permitted here: %v", err)
		}
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("tracee did not stop at exec: %v %v", err, ws)
	}
	const (
		optSysGood  = 0x1 // PTRACE_O_TRACESYSGOOD
		optClone    = 0x8 // PTRACE_O_TRACECLONE
		optExitKill = 0x100000
	)
	if err := syscall.PtraceSetOptions(pid, optSysGood|optClone|optExitKill); err != nil {
		t.Fatal(err)
	}
	if err := syscall.PtraceSyscall(pid, 0); err != nil {
		t.Fatal(err)
	}
	const phases = 6 // open, StoreLogs, SetUint64, Set, DeleteRange, close
	syncs := make([]int, phases+1)
	phase := 0
	exitCode := -1
	for exitCode < 0 {
		tid, err := syscall.Wait4(-1, &ws, syscall.WALL, nil)
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		switch {
		case ws.Exited() || ws.Signaled():
			if tid == pid {
				exitCode = ws.ExitStatus()
				if ws.Signaled() {
					exitCode = 128 + int(ws.Signal())
				}
			}
			continue
		case !ws.Stopped():
			continue
		}
		inject := 0
		switch sig := ws.StopSignal(); {
		case sig == syscall.SIGTRAP|0x80: // a system call
			var regs syscall.PtraceRegs
			if err := syscall.PtraceGetRegs(tid, &regs); err == nil && int64(regs.Rax) == -int64(syscall.ENOSYS) { // its entry
				switch regs.Orig_rax {
				case syscall.SYS_FDATASYNC, syscall.SYS_FSYNC:
					if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", tid, regs.Rdi)); filepath.Base(target) == "raft.db" {
						syncs[min(phase, phases)]++
					}
				case syscall.SYS_KILL:
					if regs.Rsi == 0 {
						phase++
					}
				}
			}
		case sig == syscall.SIGTRAP, sig == syscall.SIGSTOP: // an event (clone, exec) or a new thread's first stop
		default:
			inject = int(sig) // a signal for the tracee (the Go runtime's SIGURG): deliver it
		}
		if err := syscall.PtraceSyscall(tid, inject); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("ptrace: %v", err)
		}
	}
	b, _ := os.ReadFile(out.Name())
	if exitCode != 0 || !strings.Contains(string(b), "--- PASS: TestMetaLogSyncsHelper") {
		t.Fatalf("helper exited %d:\n%s", exitCode, b)
	}
	names := []string{"open", "StoreLogs", "SetUint64", "Set", "DeleteRange", "close"}
	t.Logf("fdatasync/fsync of raft.db: %v (phases %v)", syncs[:phases], names)
	if phase != phases-1 {
		t.Fatalf("saw %d markers, want %d: %v", phase, phases-1, syncs)
	}
	for i := 1; i <= 4; i++ {
		if syncs[i] == 0 {
			t.Errorf("%s on the meta log returned without syncing raft.db", names[i])
		}
	}
}

// TestMetaLogSyncsHelper is the child process of TestMetaLogSyncsEveryWrite.
func TestMetaLogSyncsHelper(t *testing.T) {
	dir := os.Getenv(metaLogHelperEnv)
	if dir == "" {
		t.Skip("the child process of TestMetaLogSyncsEveryWrite")
	}
	mark := func() {
		if err := syscall.Kill(os.Getpid(), 0); err != nil {
			t.Fatal(err)
		}
	}
	store, err := openMetaLog(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	mark()
	if err := store.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 1, Data: []byte("b")}}); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := store.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := store.Set([]byte("LastVoteCand"), []byte("n1@1")); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := store.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	mark()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
}
