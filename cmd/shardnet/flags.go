package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/shardnet/shardnet/api"
)

// cmdFlags is one command's flag set plus the client flags every client
// command shares.
type cmdFlags struct {
	*flag.FlagSet
	c      *cli
	addr   string
	token  string
	caFile string
	json   bool
	nargs  string // the positional part of the usage line
}

// newFlags returns the flag set of "shardnet <name>"; synopsis is the
// positional part of its usage line, help the text below it.
func (c *cli) newFlags(name, synopsis, help string) *cmdFlags {
	f := &cmdFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), c: c, nargs: synopsis}
	f.SetOutput(c.stderr)
	f.StringVar(&f.addr, "addr", "", "HTTP address of any node (default $SHARDNET_ADDR, else "+api.DefaultAddr+")")
	f.StringVar(&f.token, "token", "", "bearer token (default $SHARDNET_TOKEN)")
	f.StringVar(&f.caFile, "ca-file", "", "PEM file of the CA that signed the nodes' HTTPS certificates, trusted besides the system's (default $SHARDNET_CA_FILE)")
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "Usage: shardnet %s [flags] %s\n\n%s\n\nFlags:\n", name, synopsis, help)
		f.PrintDefaults()
	}
	return f
}

// withJSON adds -json (machine output) to a read command.
func (f *cmdFlags) withJSON() *cmdFlags {
	f.BoolVar(&f.json, "json", false, "print JSON instead of text")
	return f
}

// parse parses args, flags and positional arguments in any order ("--"
// ends the flags), and checks the count of positional arguments. It
// returns the positional arguments, or an exit code when the command
// must stop: 0 after -h, 2 on a usage error.
func (f *cmdFlags) parse(args []string, minArgs, maxArgs int) ([]string, int, bool) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a) // "-" alone is an argument: stdin
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		fl := f.Lookup(name)
		if fl == nil {
			continue // Parse reports it
		}
		if bf, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if err := f.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, false
		}
		return nil, 2, false
	}
	if len(pos) < minArgs || (maxArgs >= 0 && len(pos) > maxArgs) {
		fmt.Fprintf(f.c.stderr, "Usage: shardnet %s [flags] %s (see -h)\n", f.Name(), f.nargs)
		return nil, 2, false
	}
	return pos, 0, true
}

// target returns the address, token and CA file the flags and the
// environment select.
func (f *cmdFlags) target() (addr, token, caFile string) {
	addr, token, caFile = f.addr, f.token, f.caFile
	if addr == "" {
		addr = f.c.getenv("SHARDNET_ADDR")
	}
	if addr == "" {
		addr = api.DefaultAddr
	}
	if token == "" {
		token = f.c.getenv("SHARDNET_TOKEN")
	}
	if caFile == "" {
		caFile = f.c.getenv("SHARDNET_CA_FILE")
	}
	return addr, token, caFile
}

// client returns the API client the flags and the environment select.
func (f *cmdFlags) client() *api.Client {
	addr, token, ca := f.target()
	hc := f.c.httpClient
	if ca != "" {
		var err error
		if hc, err = api.NewHTTPClient(ca); err != nil {
			// Every call of this client fails with err: the commands
			// report it as they report any request that failed.
			hc = &http.Client{Transport: failingTransport{err}}
		}
	}
	return api.NewClient(addr, token, hc)
}

// failingTransport fails every request with err.
type failingTransport struct{ err error }

func (t failingTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, t.err }

// fail prints err as "Error: <message> (<code>, HTTP <status>)" and
// returns exit code 1.
func (c *cli) fail(err error) int {
	fmt.Fprintf(c.stderr, "Error: %v\n", err)
	return 1
}

// usageError prints a usage mistake and returns exit code 2.
func (c *cli) usageError(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "Error: "+format+"\n", args...)
	return 2
}

// printJSON writes v indented.
func (c *cli) printJSON(v any) int {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s\n", b)
	return 0
}

// optUint is an unsigned integer flag that knows whether it was set (-cas
// 0 differs from no -cas).
type optUint struct {
	set bool
	v   uint64
}

func (o *optUint) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatUint(o.v, 10)
}

func (o *optUint) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("must be an unsigned integer")
	}
	o.set, o.v = true, v
	return nil
}

func (o *optUint) ptr() *uint64 {
	if !o.set {
		return nil
	}
	return &o.v
}

// listFlag is a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// sizeFlag is a size in bytes: a number, or a number with a KiB, MiB or
// GiB suffix ("4MiB").
type sizeFlag uint64

func (s *sizeFlag) String() string { return strconv.FormatUint(uint64(*s), 10) }

func (s *sizeFlag) Set(v string) error {
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil || n > (1<<63)/mult {
		return fmt.Errorf("%q is not a size (bytes, or a number with KiB, MiB or GiB)", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}
