package chunk

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run a Put in a child process (this test binary, told by
// the environment to be that child) and kill it with SIGKILL: nothing of
// the store's can run after that, as after a crash of the node. (A power
// cut, which also loses what was not synced, is not simulated: the store
// relies on fsync of the file and of its directory for that.)
const crashEnv = "CHUNK_CRASH_CHILD"

// TestCrashChild is the child: it opens the store in $CHUNK_CRASH_DIR and
// puts a 4 MiB chunk; "stall" stops the upload halfway, "done" finishes it.
// Either way it says so on stdout and waits to be killed.
func TestCrashChild(t *testing.T) {
	mode := os.Getenv(crashEnv)
	if mode == "" {
		t.Skip("the child of the crash tests")
	}
	s, err := Open(os.Getenv("CHUNK_CRASH_DIR"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(42, DefaultMaxChunkSize)
	if mode == "stall" {
		r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), stallReader{})
		s.Put(r)
		return
	}
	id, err := s.Put(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("put " + id.String() + "\n")
	select {}
}

// stallReader says it is halfway, then blocks forever.
type stallReader struct{}

func (stallReader) Read([]byte) (int, error) {
	os.Stdout.WriteString("halfway\n")
	select {}
}

// crashChild runs the child in mode on dir until it prints a line, kills
// it with SIGKILL and returns the line.
func crashChild(t *testing.T, dir, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+mode, "CHUNK_CRASH_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "halfway") || strings.HasPrefix(l, "put ") {
				lines <- l
				return
			}
		}
		close(lines)
	}()
	var line string
	select {
	case l, ok := <-lines:
		if !ok {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the child ended without putting")
		}
		line = l
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the child did not get halfway in 60 s")
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	return line
}

// TestCrashMidPut: a node killed halfway through a Put leaves no chunk
// under any id, and the next Open removes its temp file.
func TestCrashMidPut(t *testing.T) {
	dir := t.TempDir()
	crashChild(t, dir, "stall")
	ents, _ := os.ReadDir(dir + "/" + tmpDir)
	if len(ents) != 1 {
		t.Fatalf("the killed Put left %d temp files, want its 1 (the test would not see the cleanup)", len(ents))
	}
	s := openStore(t, dir, Options{})
	if s.Count() != 0 || len(storedIDs(t, s)) != 0 {
		t.Fatalf("a chunk is stored after a crash mid-put: %v", storedIDs(t, s))
	}
	if left := tmpFiles(t, s); len(left) > 0 {
		t.Fatalf("temp files left after Open: %v", left)
	}
}

// TestCrashAfterPut: a chunk whose Put returned survives the kill whole.
func TestCrashAfterPut(t *testing.T) {
	dir := t.TempDir()
	line := crashChild(t, dir, "done")
	id, err := ParseID(strings.TrimPrefix(line, "put "))
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, Options{})
	if err := s.Verify(id); err != nil {
		t.Fatalf("chunk after the crash: %v", err)
	}
	if s.Count() != 1 || s.Bytes() != DefaultMaxChunkSize {
		t.Fatalf("Count %d Bytes %d", s.Count(), s.Bytes())
	}
}
