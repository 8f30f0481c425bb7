package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/shardnet/shardnet/api"
)

// createTimeout bounds the wait for a created channel to serve.
const createTimeout = 60 * time.Second

// prepareTargets creates the missing channels (Config.Create), checks that
// every channel exists, and with the leader or follower target finds the
// node each channel's load goes to.
func (r *runner) prepareTargets(ctx context.Context) error {
	if r.cfg.Create {
		if err := r.createChannels(ctx); err != nil {
			return err
		}
	}
	if r.cfg.Target == TargetAny {
		// Only a channel that does not exist stops the run here: any
		// other refusal (a wrong token, say) is what the load will meet
		// too, and is counted there by its status.
		for _, name := range r.channels {
			if _, err := r.admin.Channel(ctx, name); api.IsNotFound(err) {
				return channelErr(name, err)
			}
		}
		return nil
	}
	chans, nodes, err := r.describe(ctx)
	if err != nil {
		return err
	}
	r.eps = r.eps[:0]
	index := map[string]int{} // base URL → its place in r.eps
	r.chanEP = make([]int, len(r.channels))
	for i, ch := range chans {
		node, err := pickNode(ch, r.cfg.Target, i)
		if err != nil {
			return err
		}
		ep, err := r.nodeEndpoint(nodes, node)
		if err != nil {
			return fmt.Errorf("loadgen: channel %s: %w", ch.Name, err)
		}
		j, ok := index[ep.String()]
		if !ok {
			j = len(r.eps)
			index[ep.String()] = j
			r.eps = append(r.eps, ep)
		}
		r.chanEP[i] = j
	}
	return nil
}

// describe reads every channel and the nodes' addresses.
func (r *runner) describe(ctx context.Context) ([]api.Channel, map[string]api.Node, error) {
	ns, err := r.admin.Nodes(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("loadgen: list nodes (to find where the channels' leaders are; it takes the operator token): %w", err)
	}
	nodes := map[string]api.Node{}
	for _, n := range ns {
		nodes[n.ID] = n
	}
	chans := make([]api.Channel, 0, len(r.channels))
	for _, name := range r.channels {
		ch, err := r.admin.Channel(ctx, name)
		if err != nil {
			return nil, nil, channelErr(name, err)
		}
		chans = append(chans, ch)
	}
	return chans, nodes, nil
}

func channelErr(name string, err error) error {
	if api.IsNotFound(err) {
		return fmt.Errorf("loadgen: channel %s does not exist (-create creates it): %w", name, err)
	}
	return fmt.Errorf("loadgen: channel %s: %w", name, err)
}

// pickNode returns the node id that gets channel ch's load: its leader, or
// one of its healthy followers (the i-th, round-robin, so that the load of
// many channels spreads over their followers).
func pickNode(ch api.Channel, target Target, i int) (string, error) {
	if ch.Leader == "" {
		return "", fmt.Errorf("loadgen: channel %s has no leader now", ch.Name)
	}
	if target == TargetLeader {
		return ch.Leader, nil
	}
	var followers []string
	for _, rep := range ch.Placement {
		if rep.NodeID != ch.Leader && rep.Voter && rep.Healthy && slices.Contains(ch.Voters, rep.NodeID) {
			followers = append(followers, rep.NodeID)
		}
	}
	if len(followers) == 0 {
		return "", fmt.Errorf("loadgen: channel %s has no healthy follower", ch.Name)
	}
	slices.Sort(followers)
	return followers[i%len(followers)], nil
}

// nodeEndpoint returns the API base of node id: its advertised HTTP address
// with the scheme of the first -addr; a node bound to every interface
// (0.0.0.0:port) is reached at the host of the first -addr.
func (r *runner) nodeEndpoint(nodes map[string]api.Node, id string) (endpoint, error) {
	n, ok := nodes[id]
	if !ok || n.HTTPAddr == "" {
		return endpoint{}, fmt.Errorf("node %s has no HTTP address in the node list", id)
	}
	host, port, err := net.SplitHostPort(n.HTTPAddr)
	if err != nil {
		return endpoint{}, fmt.Errorf("node %s's HTTP address %q: %w", id, n.HTTPAddr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if host, _, err = net.SplitHostPort(r.eps0().host); err != nil {
			host = r.eps0().host
		}
	}
	return endpoint{scheme: r.eps0().scheme, host: net.JoinHostPort(host, port)}, nil
}

// eps0 is the first -addr, which answers the set-up calls.
func (r *runner) eps0() endpoint {
	ep, _ := parseEndpoint(r.cfg.Addrs[0]) // checked in setup
	return ep
}

// createChannels creates each missing channel and waits until every one
// has a leader, all its replicas follow, and a linearizable read through
// the first -addr is answered.
func (r *runner) createChannels(ctx context.Context) error {
	deadline := time.Now().Add(createTimeout)
	for _, name := range r.channels {
		for {
			_, err := r.admin.CreateChannel(ctx, api.CreateChannelRequest{Name: name, Replicas: r.cfg.Replicas})
			if e := api.AsError(err); e != nil && e.Code == api.CodeChannelExists {
				err = nil
			}
			if err == nil {
				break
			}
			// A busy cluster (no meta leader for a moment: 503; 429)
			// is waited for; any other refusal is the caller's mistake.
			if e := api.AsError(err); e == nil || (e.Status != 503 && e.Status != 429) || time.Now().After(deadline) {
				return fmt.Errorf("loadgen: create channel %s: %w", name, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("loadgen: create channel %s: %w", name, ctx.Err())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	for _, name := range r.channels {
		for {
			err := r.serves(ctx, name)
			if err == nil {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("loadgen: channel %s does not serve after %v: %w", name, createTimeout, err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

var errNotYet = errors.New("not yet")

func (r *runner) serves(ctx context.Context, name string) error {
	ch, err := r.admin.Channel(ctx, name)
	if err != nil {
		return err
	}
	if ch.Leader == "" || ch.Health != "healthy" {
		return fmt.Errorf("%w: leader %q, health %s", errNotYet, ch.Leader, ch.Health)
	}
	_, _, err = r.admin.Get(ctx, name, "key-probe", api.GetOptions{})
	if api.IsNotFound(err) {
		err = nil
	}
	return err
}

// checkLeaders notes in res the channels whose leader moved during the
// run, when the load was meant for leaders or followers.
func (r *runner) checkLeaders(res *Result) {
	if r.chanEP == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	chans, nodes, err := r.describe(ctx)
	if err != nil {
		return // the run's numbers stand; the check is advice
	}
	for i, ch := range chans {
		sent, lead := r.eps[r.chanEP[i]].String(), r.leaderEndpoint(nodes, ch)
		if lead == "" || (r.cfg.Target == TargetLeader) != (sent == lead) {
			res.LeaderMoved = append(res.LeaderMoved, ch.Name)
		}
	}
}

// leaderEndpoint is the base of ch's leader, "" when unknown.
func (r *runner) leaderEndpoint(nodes map[string]api.Node, ch api.Channel) string {
	ep, err := r.nodeEndpoint(nodes, ch.Leader)
	if err != nil {
		return ""
	}
	return ep.String()
}
