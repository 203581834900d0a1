package ui

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// APIPort is the port of policygen's Service that serves the policy API and the UI.
const APIPort = 8443

// Peers says how a replica finds the other replicas of policygen and speaks to them: the ready
// endpoints of its Service's EndpointSlices, over TLS verified against policygen's CA by the name its
// certificate carries.
type Peers struct {
	// Namespace and Service name policygen's Service; Port is its port that serves the UI (8443).
	Namespace, Service string
	Port               int32
	// ServerName is the DNS name every replica's certificate carries (the Service's, name.namespace.svc).
	ServerName string
	// CA returns the CA bundle that verifies the replicas' certificates, read at each connection so
	// that a renewed CA is taken up.
	CA func(context.Context) (*x509.CertPool, error)
}

// peer is one other replica: its pod's name and address.
type peer struct {
	name, addr string
}

// list returns the other replicas behind the Service, by pod name, skipping self; none without the
// Service (a replica run on its own). A Service port without a name matches the EndpointSlice port
// without one, as the EndpointSlice controller writes them.
func (p *Peers) list(ctx context.Context, reader client.Reader, self string) ([]peer, error) {
	var svc corev1.Service
	if err := reader.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Service}, &svc); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("get Service %s/%s: %w", p.Namespace, p.Service, err)
	}
	portName, found := "", false
	for _, sp := range svc.Spec.Ports {
		if sp.Port == p.Port {
			portName, found = sp.Name, true
		}
	}
	if !found {
		return nil, fmt.Errorf("the Service %s/%s has no port %d", p.Namespace, p.Service, p.Port)
	}
	var eps discoveryv1.EndpointSliceList
	if err := reader.List(ctx, &eps, client.InNamespace(p.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: p.Service}); err != nil {
		return nil, fmt.Errorf("list the EndpointSlices of Service %s/%s: %w", p.Namespace, p.Service, err)
	}
	byName := map[string]peer{}
	for _, s := range eps.Items {
		var port int32
		for _, sp := range s.Ports {
			if sp.Port != nil && ptr.Deref(sp.Name, "") == portName {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 || !ptr.Deref(e.Conditions.Ready, true) {
				continue
			}
			name := e.Addresses[0]
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				name = e.TargetRef.Name
			}
			if name != self {
				byName[name] = peer{name: name, addr: net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(port)))}
			}
		}
	}
	out := slices.Collect(maps.Values(byName))
	slices.SortFunc(out, func(a, b peer) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// Cursor is where a client of the cluster stream is in each replica's verdicts: replica name → the
// Seq of the last verdict seen from it. It travels as the events' id, "name=seq,name=seq" in name
// order, so that a reconnecting client (Last-Event-ID) resumes at every replica at once.
type Cursor map[string]uint64

// ParseCursor reads a cursor; a part that is not name=number is an error.
func ParseCursor(s string) (Cursor, error) {
	c := Cursor{}
	if s == "" {
		return c, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		name, seq, ok := strings.Cut(part, "=")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || name == "" || err != nil {
			return nil, fmt.Errorf("after: want replica=seq,... as the stream's ids carry it, not %q", s)
		}
		c[name] = n
	}
	return c, nil
}

func (c Cursor) String() string {
	var b strings.Builder
	for i, name := range slices.Sorted(maps.Keys(c)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%d", name, c[name])
	}
	return b.String()
}

// Unreachable names a replica whose verdicts the cluster stream cannot get now, and why.
type Unreachable struct {
	Replica string `json:"replica"`
	Error   string `json:"error"`
}

// Lost says how many verdicts a replica's ring dropped before a stream read them.
type Lost struct {
	Replica string `json:"replica"`
	Lost    uint64 `json:"lost"`
}

// message is what one replica's reader hands the cluster stream: a verdict, a loss, the replica
// unreachable, or done (its backlog sent, when not following).
type message struct {
	replica     string
	verdict     *Event
	lost        uint64
	unreachable error
	done        bool
}

// clusterStream serves the verdicts of every replica as server-sent events, each tagged with its
// replica: this replica's from its feed, the others' from their own stream (api/verdicts), asked with
// the caller's token so that each replica checks the caller itself and none acts for them. Each event's
// id is the Cursor after it. A replica that does not answer is named in an event "unreachable" and
// asked again (with backoff) while the stream lasts; "lost" says what a replica's ring dropped.
// ?follow=false ends the stream once every replica has sent what it holds. Query parameters narrow
// the verdicts as api/verdicts does, applied by each replica.
func (s *Server) clusterStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cursor, err := ParseCursor(cmp.Or(r.Header.Get("Last-Event-ID"), q.Get("after")))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	filter, err := ParseFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	follow, err := parseFollow(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q.Del("after")
	q.Del("follow")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	rc := startStream(w, s)
	msgs := make(chan message)
	running := map[string]bool{}
	start := func(name string, read func(ctx context.Context, after uint64, out chan<- message)) {
		if running[name] {
			return
		}
		running[name] = true
		go read(ctx, cursor[name], msgs)
	}
	start(s.opts.Replica, func(ctx context.Context, after uint64, out chan<- message) {
		s.readLocal(ctx, after, filter, follow, out)
	})
	peers := s.startPeers(ctx, r, q, follow, start, msgs)
	keepAlive := time.NewTicker(s.opts.KeepAlive)
	defer keepAlive.Stop()
	for {
		if !follow && len(running) == 0 {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case m := <-msgs:
			switch {
			case m.verdict != nil:
				cursor[m.replica] = m.verdict.Seq
				m.verdict.Replica = m.replica
				data, _ := json.Marshal(m.verdict)
				fmt.Fprintf(w, "id: %s\ndata: %s\n\n", cursor, data)
			case m.lost > 0:
				data, _ := json.Marshal(Lost{Replica: m.replica, Lost: m.lost})
				fmt.Fprintf(w, "event: lost\ndata: %s\n\n", data)
			case m.unreachable != nil:
				data, _ := json.Marshal(Unreachable{Replica: m.replica, Error: m.unreachable.Error()})
				fmt.Fprintf(w, "event: unreachable\ndata: %s\n\n", data)
			}
			if m.done {
				delete(running, m.replica)
			}
		case <-keepAlive.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			if follow && peers != nil {
				peers()
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// startPeers starts a reader per other replica and returns a function that starts readers for
// replicas that appeared since (nil without Peers). A replica list that cannot be read is reported
// as the unreachable replica "peers".
func (s *Server) startPeers(ctx context.Context, r *http.Request, q url.Values, follow bool,
	start func(string, func(context.Context, uint64, chan<- message)), msgs chan<- message) func() {
	if s.opts.Peers == nil {
		return nil
	}
	auth := r.Header.Get("Authorization")
	listed := func() {
		ps, err := s.opts.Peers.list(ctx, s.reader, s.opts.Replica)
		if err != nil {
			start("peers", func(ctx context.Context, _ uint64, out chan<- message) {
				send(ctx, out, message{replica: "peers", unreachable: err, done: true})
			})
			return
		}
		for _, p := range ps {
			start(p.name, func(ctx context.Context, after uint64, out chan<- message) {
				s.readPeer(ctx, p, auth, q, after, follow, out)
			})
		}
	}
	listed()
	return listed
}

func send(ctx context.Context, out chan<- message, m message) bool {
	select {
	case out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}

// parseFollow reads ?follow= (true when absent).
func parseFollow(q url.Values) (bool, error) {
	if q.Get("follow") == "" {
		return true, nil
	}
	follow, err := strconv.ParseBool(q.Get("follow"))
	if err != nil {
		return false, fmt.Errorf("follow: want true or false, not %q", q.Get("follow"))
	}
	return follow, nil
}

// readLocal sends this replica's verdicts after seq that pass filter, then, when following, each as
// it arrives.
func (s *Server) readLocal(ctx context.Context, after uint64, filter Filter, follow bool, out chan<- message) {
	for {
		vs, lost, more := s.feed.After(after)
		if lost > 0 && !send(ctx, out, message{replica: s.opts.Replica, lost: lost}) {
			return
		}
		for _, v := range vs {
			after = v.Seq
			if filter.Match(v) && !send(ctx, out, message{replica: s.opts.Replica, verdict: &v}) {
				return
			}
		}
		if !follow {
			send(ctx, out, message{replica: s.opts.Replica, done: true})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-more:
		}
	}
}

// readPeer reads another replica's stream, resuming after the last verdict it sent; while following
// it connects again, backing off, whenever the connection fails or ends, until the replica leaves the
// Service's endpoints.
func (s *Server) readPeer(ctx context.Context, p peer, auth string, q url.Values, after uint64, follow bool, out chan<- message) {
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: 15 * time.Second}
	for {
		err := s.readPeerOnce(ctx, p, auth, q, &after, follow, out)
		if ctx.Err() != nil {
			return
		}
		if !follow {
			m := message{replica: p.name, done: true}
			if err != nil {
				m.unreachable = err
			}
			send(ctx, out, m)
			return
		}
		if !s.stillListed(ctx, p.name) {
			send(ctx, out, message{replica: p.name, done: true}) // scaled down or replaced: nothing more to read
			return
		}
		if err != nil && !send(ctx, out, message{replica: p.name, unreachable: err}) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff.Step()):
		}
	}
}

// stillListed reports whether the replica name is still behind the Service; when the list cannot be
// read it is taken to be.
func (s *Server) stillListed(ctx context.Context, name string) bool {
	ps, err := s.opts.Peers.list(ctx, s.reader, s.opts.Replica)
	return err != nil || slices.ContainsFunc(ps, func(p peer) bool { return p.name == name })
}

// errPeerEnded is a peer's stream that ended while following: the replica is going away.
var errPeerEnded = errors.New("the replica ended its stream")

// readPeerOnce makes one connection to the peer's api/verdicts and relays what it sends, updating
// after.
func (s *Server) readPeerOnce(ctx context.Context, p peer, auth string, q url.Values, after *uint64, follow bool, out chan<- message) error {
	q = maps.Clone(q)
	q.Set("after", strconv.FormatUint(*after, 10))
	q.Set("follow", strconv.FormatBool(follow))
	body, err := s.getPeer(ctx, p, auth, "verdicts", q)
	if err != nil {
		return err
	}
	defer body.Close()
	err = ReadEvents(body, func(event, _, data string) error {
		switch event {
		case "lost":
			n, err := strconv.ParseUint(data, 10, 64)
			if err != nil {
				return fmt.Errorf("event lost: %q is no count", data)
			}
			send(ctx, out, message{replica: p.name, lost: n})
		case "":
			var v Event
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				return fmt.Errorf("a verdict that is no JSON: %w", err)
			}
			*after = v.Seq
			send(ctx, out, message{replica: p.name, verdict: &v})
		}
		return ctx.Err()
	})
	if err == nil && follow {
		return errPeerEnded
	}
	return err
}

// getPeer asks the peer's ui/api/<path>?q with the caller's Authorization, over TLS verified against
// policygen's CA read now, and returns the body of its 200 answer, or the error it answered with.
func (s *Server) getPeer(ctx context.Context, p peer, auth, path string, q url.Values) (io.ReadCloser, error) {
	pool, err := s.opts.Peers.CA(ctx)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: s.opts.Peers.ServerName, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.addr+"/ui/api/"+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		tr.CloseIdleConnections()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer tr.CloseIdleConnections()
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return nil, fmt.Errorf("%s: %s", resp.Status, e.Error)
	}
	return peerBody{resp.Body, tr}, nil
}

// peerBody is a peer's answer; closing it closes its connection.
type peerBody struct {
	io.ReadCloser
	tr *http.Transport
}

func (b peerBody) Close() error {
	err := b.ReadCloser.Close()
	b.tr.CloseIdleConnections()
	return err
}

// Local is what one replica holds of the sidecars' reports beyond the verdict ring: the flows reported
// to it in a window, each workload's denies and audits of the last hour, and its pods' reported
// states. Each sidecar reports to one replica at a time, so the map and the workloads page merge every
// replica's (everywhere); ui/api/local serves this replica's own.
type Local struct {
	Flows []FlowCount `json:"flows"`
	// LastHour and Pods are by workload, "namespace/Kind/name".
	LastHour map[string]uint64     `json:"lastHour"`
	Pods     map[string][]PodState `json:"pods"`
}

// merge adds o to l: flows side by side (the map sums a flow's replicas into its edge), counts
// summed, and of a pod's states the latest (a sidecar that moved to another replica).
func (l *Local) merge(o Local) {
	l.Flows = append(l.Flows, o.Flows...)
	for k, n := range o.LastHour {
		l.LastHour[k] += n
	}
	for k, states := range o.Pods {
		for _, st := range states {
			i := slices.IndexFunc(l.Pods[k], func(h PodState) bool { return h.Pod == st.Pod })
			switch {
			case i < 0:
				l.Pods[k] = append(l.Pods[k], st)
			case st.Seen.After(l.Pods[k][i].Seen):
				l.Pods[k][i] = st
			}
		}
		slices.SortFunc(l.Pods[k], func(a, b PodState) int { return strings.Compare(a.Pod, b.Pod) })
	}
}

// peerTimeout bounds how long the map and the workloads page wait for another replica's part.
const peerTimeout = 5 * time.Second

// local serves this replica's Local: the flows of ?window= (none when unset), the last hour's counts
// and the pods' states.
func (s *Server) local(w http.ResponseWriter, r *http.Request) {
	window := r.URL.Query().Get("window")
	if _, ok := Windows[window]; !ok && window != "" {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("window %q: want 5m, 1h or 24h", window))
		return
	}
	writeJSON(w, s.feed.Local(Windows[window]))
}

// Replicas says whose reports a merged answer holds: the replicas that answered, and those that did
// not, with why (their flows and counts are missing).
type Replicas struct {
	Answered    []string      `json:"replicas"`
	Unreachable []Unreachable `json:"unreachable"`
}

// everywhere returns every replica's Local for the window Windows names ("": no flows) merged: this
// one's, and each other's asked with the caller's token (each replica checks the caller itself),
// waiting at most peerTimeout for them.
func (s *Server) everywhere(r *http.Request, window string) (Local, Replicas) {
	all := s.feed.Local(Windows[window])
	answered := Replicas{Answered: []string{s.opts.Replica}, Unreachable: []Unreachable{}}
	if s.opts.Peers == nil {
		return all, answered
	}
	ctx, cancel := context.WithTimeout(r.Context(), peerTimeout)
	defer cancel()
	ps, err := s.opts.Peers.list(ctx, s.reader, s.opts.Replica)
	if err != nil {
		answered.Unreachable = append(answered.Unreachable, Unreachable{Replica: "peers", Error: err.Error()})
		return all, answered
	}
	q := url.Values{}
	if window != "" {
		q.Set("window", window)
	}
	type part struct {
		name  string
		local Local
		err   error
	}
	parts := make(chan part, len(ps))
	for _, p := range ps {
		go func() {
			var l Local
			body, err := s.getPeer(ctx, p, r.Header.Get("Authorization"), "local", q)
			if err == nil {
				err = json.NewDecoder(body).Decode(&l)
				body.Close()
			}
			parts <- part{p.name, l, err}
		}()
	}
	for range ps {
		p := <-parts
		if p.err != nil {
			answered.Unreachable = append(answered.Unreachable, Unreachable{Replica: p.name, Error: p.err.Error()})
			continue
		}
		all.merge(p.local)
		answered.Answered = append(answered.Answered, p.name)
	}
	slices.Sort(answered.Answered)
	slices.SortFunc(answered.Unreachable, func(a, b Unreachable) int { return strings.Compare(a.Replica, b.Replica) })
	return all, answered
}

// ReadEvents calls handle with each server-sent event's type ("" for a verdict), id and data until the
// stream ends (nil) or handle fails.
func ReadEvents(body io.Reader, handle func(event, id, data string) error) error {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var event, id string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if len(data) > 0 {
				if err := handle(event, id, strings.Join(data, "\n")); err != nil {
					return err
				}
			}
			event, data = "", nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event = value
		case "id":
			id = value
		case "data":
			data = append(data, value)
		}
	}
	return sc.Err()
}
