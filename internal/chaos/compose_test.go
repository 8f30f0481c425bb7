package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The container side of the chaos suite: the docker CLI and docker compose
// driven through os/exec, on the 5-node cluster of deploy/docker-compose.yml.
// The host talks to the nodes only through their HTTP ports published on
// 127.0.0.1; the nodes talk to each other on the project's own bridge
// network, which the test creates and removes.

// dockerServices are deploy/docker-compose.yml's services, which are also
// the nodes' ids: three core nodes, then two resource nodes. Their last
// address octets are in dockerHostOctet.
var dockerServices = []string{"n1", "n2", "n3", "r1", "r2"}

var dockerHostOctet = map[string]string{"n1": "11", "n2": "12", "n3": "13", "r1": "21", "r2": "22"}

// projectPrefix starts the compose project name of every run, followed by
// the test process's pid: a run killed before its cleanup (go test's own
// timeout does not run t.Cleanup) is swept by the next one.
const projectPrefix = "snchaos-"

// dockerTools are the docker CLI and the compose command of this machine.
type dockerTools struct {
	docker  string
	compose []string // {"docker", "compose"} or {"docker-compose"}
}

// findDocker returns the tools, or why the container suite cannot run here.
func findDocker() (dockerTools, string) {
	var dt dockerTools
	path, err := exec.LookPath("docker")
	if err != nil {
		return dt, "no docker CLI on PATH"
	}
	dt.docker = path
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return dt, fmt.Sprintf("the docker daemon does not answer (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	if exec.CommandContext(ctx, path, "compose", "version").Run() == nil {
		dt.compose = []string{path, "compose"}
	} else if p, err := exec.LookPath("docker-compose"); err == nil {
		dt.compose = []string{p}
	} else {
		return dt, "neither `docker compose` nor docker-compose is installed"
	}
	return dt, ""
}

// run runs a command with a deadline and returns its combined output.
func run(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// repoRoot is the module root: go test runs in the package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "docker-compose.yml")); err != nil {
		t.Fatalf("deploy/docker-compose.yml not found from %s: %v", root, err)
	}
	return root
}

// buildImage builds the static binary and the FROM scratch image of
// deploy/Dockerfile as tag, in a build context of its own (so concurrent
// runs and `make docker` do not share deploy/.build).
func buildImage(t *testing.T, dt dockerTools, root, tag string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build shardnet: %v", err)
	}
	ctxDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ctxDir, ".build", "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(ctxDir, ".build", "shardnet"), "./cmd/shardnet")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/shardnet: %v\n%s", err, out)
	}
	if _, err := run(context.Background(), 5*time.Minute, nil, dt.docker, "build", "-q", "-t", tag,
		"-f", filepath.Join(root, "deploy", "Dockerfile"), ctxDir); err != nil {
		t.Fatalf("docker build: %v", err)
	}
	t.Logf("built image %s in %v", tag, time.Since(start).Round(time.Millisecond))
}

// composeProject is one run's cluster: a compose project with a unique name,
// its own /24 network, and HTTP ports on 127.0.0.1.
type composeProject struct {
	t      *testing.T
	dt     dockerTools
	name   string
	file   string
	prefix string // the network's first three octets
	ports  map[string]int
	token  string
	image  string // built for this run, removed with the project
	built  bool

	containers map[string]string // service → container id
	network    string            // network id
}

// newComposeProject picks the project's name, image tag, ports and token;
// start brings it up. Its removal (containers, network, volumes, image) is
// registered with t.Cleanup before anything is created.
func newComposeProject(t *testing.T, dt dockerTools, root string) *composeProject {
	t.Helper()
	name := fmt.Sprintf("%s%d-%08x", projectPrefix, os.Getpid(), rand.Uint32())
	p := &composeProject{
		t: t, dt: dt, image: "shardnet:" + name,
		name:  name,
		file:  filepath.Join(root, "deploy", "docker-compose.yml"),
		ports: map[string]int{},
		token: fmt.Sprintf("chaos-%016x", rand.Uint64()),
	}
	// Free ports now; another process could take one before compose binds
	// it, which makes `up` fail loudly rather than test the wrong thing.
	var lns []net.Listener
	for _, svc := range dockerServices {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		lns = append(lns, ln)
		p.ports[svc] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range lns {
		ln.Close()
	}
	t.Cleanup(p.down)
	return p
}

func (p *composeProject) env() []string {
	env := []string{
		"SHARDNET_IMAGE=" + p.image,
		"SHARDNET_TOKEN=" + p.token,
		"SHARDNET_NET_PREFIX=" + p.prefix,
		"SHARDNET_LOG_LEVEL=info",
	}
	for i, svc := range dockerServices {
		env = append(env, fmt.Sprintf("SHARDNET_HTTP_PORT_%d=%d", i+1, p.ports[svc]))
	}
	return env
}

func (p *composeProject) compose(timeout time.Duration, args ...string) (string, error) {
	all := append(append(append([]string(nil), p.dt.compose[1:]...), "-p", p.name, "-f", p.file), args...)
	return run(context.Background(), timeout, p.env(), p.dt.compose[0], all...)
}

func (p *composeProject) docker(timeout time.Duration, args ...string) (string, error) {
	return run(context.Background(), timeout, nil, p.dt.docker, args...)
}

// start brings the project up on a free /24 (a random 172.31.x.0/24; another
// one if Docker says it overlaps a network that exists), and finds its
// containers and network.
func (p *composeProject) start() {
	t := p.t
	t.Helper()
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		p.prefix = fmt.Sprintf("172.31.%d", 16+rand.IntN(224))
		var out string
		out, err = p.compose(5*time.Minute, "up", "-d")
		if err == nil {
			break
		}
		if !strings.Contains(out, "overlap") {
			t.Fatalf("compose up: %v", err)
		}
		t.Logf("subnet %s.0/24 is taken; trying another", p.prefix)
		p.removeAll()
	}
	if err != nil {
		t.Fatalf("compose up: %v", err)
	}
	p.containers = map[string]string{}
	for _, svc := range dockerServices {
		out, err := p.docker(time.Minute, "ps", "-a", "-q", "--filter", "label=com.docker.compose.project="+p.name,
			"--filter", "label=com.docker.compose.service="+svc)
		if err != nil || len(strings.Fields(out)) != 1 {
			t.Fatalf("container of %s: %q %v", svc, out, err)
		}
		p.containers[svc] = strings.TrimSpace(out)
	}
	out, err := p.docker(time.Minute, "network", "ls", "-q", "--filter", "label=com.docker.compose.project="+p.name)
	if err != nil || len(strings.Fields(out)) != 1 {
		t.Fatalf("network of %s: %q %v", p.name, out, err)
	}
	p.network = strings.TrimSpace(out)
	t.Logf("compose project %s up: network %s.0/24, HTTP on 127.0.0.1 ports %v", p.name, p.prefix, p.ports)
}

func (p *composeProject) ip(svc string) string { return p.prefix + "." + dockerHostOctet[svc] }

// url is the node's published HTTP API.
func (p *composeProject) url(svc string) string {
	return "http://127.0.0.1:" + strconv.Itoa(p.ports[svc])
}

// The faults. Each returns the docker CLI's error.

// kill sends SIGKILL: a crash, the data volume kept.
func (p *composeProject) kill(svc string) error {
	_, err := p.docker(time.Minute, "kill", "-s", "KILL", p.containers[svc])
	return err
}

// stop sends SIGTERM and waits for the node's graceful shutdown (SIGKILL
// after grace).
func (p *composeProject) stop(svc string, grace time.Duration) error {
	_, err := p.docker(grace+time.Minute, "stop", "-t", strconv.Itoa(int(grace/time.Second)), p.containers[svc])
	return err
}

// startNode starts a killed or stopped container again, on its static IP.
func (p *composeProject) startNode(svc string) error {
	_, err := p.docker(time.Minute, "start", p.containers[svc])
	return err
}

// pause freezes every process of the container (cgroup freezer): the node
// neither answers nor notices that time passes.
func (p *composeProject) pause(svc string) error {
	_, err := p.docker(time.Minute, "pause", p.containers[svc])
	return err
}

func (p *composeProject) unpause(svc string) error {
	_, err := p.docker(time.Minute, "unpause", p.containers[svc])
	return err
}

// disconnect takes the container off the cluster network: it reaches no
// peer (gossip included) and its published port refuses connections.
func (p *composeProject) disconnect(svc string) error {
	_, err := p.docker(time.Minute, "network", "disconnect", p.network, p.containers[svc])
	return err
}

// connect puts it back with its own address, which its peers know it by.
func (p *composeProject) connect(svc string) error {
	_, err := p.docker(time.Minute, "network", "connect", "--ip", p.ip(svc), p.network, p.containers[svc])
	return err
}

// logs returns the container's output (the node logs to stderr).
func (p *composeProject) logs(svc string) string {
	out, err := p.docker(time.Minute, "logs", p.containers[svc])
	if err != nil {
		return fmt.Sprintf("(docker logs: %v)\n%s", err, out)
	}
	return out
}

// down removes the project: containers, network, volumes and the image.
// Paused containers are unpaused first (stopping a frozen process waits for
// the grace period in vain). It runs as a t.Cleanup, on failure too, and
// requires nothing of the project to be left.
func (p *composeProject) down() {
	t := p.t
	defer func() {
		if !p.built {
			return
		}
		if _, err := p.docker(time.Minute, "rmi", p.image); err != nil {
			t.Errorf("remove image: %v", err)
		}
	}()
	if p.prefix == "" {
		return // never started
	}
	if out, err := p.docker(time.Minute, "ps", "-q", "--filter", "label=com.docker.compose.project="+p.name,
		"--filter", "status=paused"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = p.docker(time.Minute, "unpause", id)
		}
	}
	if _, err := p.compose(5*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		t.Logf("compose down: %v; removing by label", err)
	}
	p.removeAll()
	if left := leftovers(p.dt, p.name); left != "" {
		t.Errorf("compose project %s left behind: %s", p.name, left)
	}
}

// removeAll removes whatever carries the project's label, without compose.
func (p *composeProject) removeAll() { removeProject(p.dt, p.name) }

func removeProject(dt dockerTools, project string) {
	label := "label=com.docker.compose.project=" + project
	ctx := context.Background()
	if out, err := run(ctx, time.Minute, nil, dt.docker, "ps", "-a", "-q", "--filter", label); err == nil && out != "" {
		for _, id := range strings.Fields(out) {
			_, _ = run(ctx, time.Minute, nil, dt.docker, "unpause", id)
		}
		_, _ = run(ctx, 2*time.Minute, nil, dt.docker, append([]string{"rm", "-f", "-v"}, strings.Fields(out)...)...)
	}
	if out, err := run(ctx, time.Minute, nil, dt.docker, "network", "ls", "-q", "--filter", label); err == nil && out != "" {
		_, _ = run(ctx, time.Minute, nil, dt.docker, append([]string{"network", "rm"}, strings.Fields(out)...)...)
	}
	if out, err := run(ctx, time.Minute, nil, dt.docker, "volume", "ls", "-q", "--filter", label); err == nil && out != "" {
		_, _ = run(ctx, time.Minute, nil, dt.docker, append([]string{"volume", "rm", "-f"}, strings.Fields(out)...)...)
	}
}

// leftovers lists the project's containers, networks and volumes that
// still exist ("" when none).
func leftovers(dt dockerTools, project string) string {
	label := "label=com.docker.compose.project=" + project
	var left []string
	for _, what := range [][]string{{"ps", "-a"}, {"network", "ls"}, {"volume", "ls"}} {
		args := append(append([]string(nil), what...), "-q", "--filter", label)
		out, err := run(context.Background(), time.Minute, nil, dt.docker, args...)
		if err != nil {
			left = append(left, fmt.Sprintf("%s: %v", strings.Join(what, " "), err))
		} else if ids := strings.Fields(out); len(ids) > 0 {
			left = append(left, fmt.Sprintf("%s: %s", strings.Join(what, " "), strings.Join(ids, " ")))
		}
	}
	return strings.Join(left, "; ")
}

// sweepStaleProjects removes the projects of earlier runs whose test
// process is gone (killed by go test's timeout before its cleanup ran).
func sweepStaleProjects(t *testing.T, dt dockerTools) {
	t.Helper()
	seen := map[string]bool{}
	for _, what := range [][]string{{"ps", "-a"}, {"network", "ls"}, {"volume", "ls"}} {
		args := append(append([]string(nil), what...), "--filter", "label=com.docker.compose.project",
			"--format", `{{.Label "com.docker.compose.project"}}`)
		out, err := run(context.Background(), time.Minute, nil, dt.docker, args...)
		if err != nil {
			t.Logf("sweep: %v", err)
			return
		}
		for _, project := range strings.Fields(out) {
			rest, ok := strings.CutPrefix(project, projectPrefix)
			if !ok || seen[project] {
				continue
			}
			seen[project] = true
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || processAlive(pid) {
				continue
			}
			t.Logf("removing what an earlier run left (its process %d is gone): %s", pid, project)
			removeProject(dt, project)
		}
	}
}

// processAlive: signal 0 checks that the process exists without touching it.
func processAlive(pid int) bool {
	proc, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = proc.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM)
}
