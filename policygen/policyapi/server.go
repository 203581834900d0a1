// Package policyapi is the HTTP API sidecars talk to, served over TLS by every policygen replica from
// its own informer cache: GET /v1/policy long-polls the caller's own workload's resolved policy, in
// the form for the caller's own pod (a canary pod's is Protect: resolve.Snapshot.For), POST
// /v1/reports takes the connections it observed. A caller is the pod its projected service-account
// token (audience podwall) is bound to, reviewed by the API server (package kubeauth); api/policy/API.md
// documents the wire protocol. Each replica writes its own entry of each WorkloadPolicy's
// status.replicas: its subscribers, those in sync, and their versions (the X-Podwall-Version header).
package policyapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/resolve"
)

// Options configure the server; zero values take the defaults in parentheses.
type Options struct {
	// Addr is the TLS listen address (":8443").
	Addr string
	// Cert is the serving certificate; Start runs its keeper, which renews or reloads it.
	Cert certs.Source
	// Audience is the token audience sidecars request ("podwall").
	Audience string
	// DefaultWait is how long a long-poll waits when the caller does not say (30s); MaxWait bounds
	// what it may ask for (2m).
	DefaultWait, MaxWait time.Duration
	// MaxReportBytes bounds a report's body (2 MiB: a full report of 4096 entries takes up to ~1 MiB).
	MaxReportBytes int64
	// ReportInterval and ReportBurst rate-limit reports per pod: one per interval on average, burst at
	// once (5s, 5).
	ReportInterval time.Duration
	ReportBurst    int
	// Replica names this replica in the WorkloadPolicy status (its pod name).
	Replica string
	// StatusInterval is how often subscriber counts are written to the status (5s).
	StatusInterval time.Duration
	// StatusTTL is how long a replica's status entry counts without being rewritten (2m); unchanged
	// entries are rewritten every third of it. The promoter must drop entries after the same TTL.
	StatusTTL time.Duration
	// UI, if set, is served under /ui/ on the same listener (the web UI, package ui), so that people
	// reach it where sidecars reach policygen, over the same certificate.
	UI http.Handler
	// APIReader reads, uncached, the owners of a caller's pod that the cache does not have yet, such as
	// the ReplicaSet a rollout has just created; nil reads only the cache, and such a caller is taken
	// for a bare pod until the cache catches up.
	APIReader client.Reader
	// Events records the Warning Event on a pod whose sidecar refused the workload's config file (the
	// manager's recorder, as the generator's); nil records none.
	Events events.EventRecorder
	// Registerer receives the server's metrics; nil registers none.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() {
	o.Addr = cmp.Or(o.Addr, ":8443")
	o.Audience = cmp.Or(o.Audience, policy.TokenAudience)
	o.DefaultWait = cmp.Or(o.DefaultWait, 30*time.Second)
	o.MaxWait = cmp.Or(o.MaxWait, 2*time.Minute)
	o.DefaultWait = min(o.DefaultWait, o.MaxWait)
	o.MaxReportBytes = cmp.Or(o.MaxReportBytes, 2<<20)
	o.ReportInterval = cmp.Or(o.ReportInterval, 5*time.Second)
	o.ReportBurst = cmp.Or(o.ReportBurst, 5)
	o.Replica = cmp.Or(o.Replica, "policygen")
	o.StatusInterval = cmp.Or(o.StatusInterval, 5*time.Second)
	o.StatusTTL = cmp.Or(o.StatusTTL, 2*time.Minute)
}

// QueryEvaluator is the evaluator of a DNS query's verdict (the sidecar judges queries when the policy
// restricts DNS, api/policy: Policy.RestrictDNS). A report entry it decided is the query itself: its
// peer is the pod's resolver and its name the name asked for, not a name of the peer's address.
const QueryEvaluator = "dns-query"

// ReportSink takes a validated report of the caller's own workload.
type ReportSink interface {
	Accept(ctx context.Context, id Identity, r *policy.Report) error
}

// Server serves the policy API.
type Server struct {
	opts     Options
	hub      *resolve.Hub
	auth     *authenticator
	sink     ReportSink
	limits   *limiter
	sidecars *tracker
	metrics  metrics
	log      logr.Logger
}

// New returns a server reading pods from reader (a cache), having tokens reviewed by reviewer and
// writing status through writer.
func New(opts Options, hub *resolve.Hub, reviewer *kubeauth.Reviewer, reader client.Reader, writer client.Client, sink ReportSink, log logr.Logger) *Server {
	opts.setDefaults()
	m := newMetrics(opts.Registerer)
	return &Server{
		opts: opts, hub: hub, sink: sink, metrics: m, log: log,
		auth:     &authenticator{reviewer: reviewer, reader: reader, api: opts.APIReader, audience: opts.Audience},
		limits:   newLimiter(opts.ReportInterval, opts.ReportBurst),
		sidecars: newTracker(hub, writer, opts.Replica, m.subscribers, log),
	}
}

// Handler routes the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+policy.PolicyPath, s.getPolicy)
	mux.HandleFunc("POST "+policy.ReportsPath, s.postReport)
	if s.opts.UI != nil {
		mux.Handle("/ui/", s.opts.UI)
	}
	return mux
}

// identify authenticates the request, writing the error response when it fails.
func (s *Server) identify(w http.ResponseWriter, r *http.Request, kind string) (Identity, bool) {
	id, err := s.auth.authenticate(r)
	switch {
	case errors.Is(err, kubeauth.ErrNoToken):
		s.fail(w, kind, http.StatusUnauthorized, "missing bearer token")
	case errors.Is(err, kubeauth.ErrRefused), errors.Is(err, errUnauthenticated):
		s.fail(w, kind, http.StatusUnauthorized, err.Error())
	case errors.Is(err, errForbidden):
		s.fail(w, kind, http.StatusForbidden, err.Error())
	case err != nil:
		s.log.Error(err, "authenticate")
		s.fail(w, kind, http.StatusServiceUnavailable, "cannot authenticate now, retry")
	default:
		return id, true
	}
	return Identity{}, false
}

// fail writes a JSON error and counts it.
func (s *Server) fail(w http.ResponseWriter, kind string, code int, msg string) {
	s.metrics.requests.WithLabelValues(kind, strconv.Itoa(code)).Inc()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// getPolicy long-polls the caller's policy: it answers as soon as the policy differs from what the
// caller holds (after, If-None-Match), else 304 when the wait ends.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) {
	id, ok := s.identify(w, r, "policy")
	if !ok {
		return
	}
	q := r.URL.Query()
	if wl := q.Get("workload"); wl != "" && wl != id.Workload.String() {
		s.fail(w, "policy", http.StatusForbidden, fmt.Sprintf("pod %s may read only the policy of %s", id.Pod, id.Workload))
		return
	}
	after, err := strconv.ParseInt(cmp.Or(q.Get("after"), "0"), 10, 64)
	if err != nil || after < 0 {
		s.fail(w, "policy", http.StatusBadRequest, "after: want a revision (a non-negative integer)")
		return
	}
	wait := s.opts.DefaultWait
	if v := q.Get("wait"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs < 0 {
			s.fail(w, "policy", http.StatusBadRequest, "wait: want seconds (a non-negative integer)")
			return
		}
		wait = min(time.Duration(secs)*time.Second, s.opts.MaxWait)
	}
	v, g, err := sidecarHeaders(r)
	if err != nil {
		s.fail(w, "policy", http.StatusBadRequest, err.Error())
		return
	}
	held := strings.Trim(r.Header.Get("If-None-Match"), `"`)
	done := s.sidecars.polling(id, v, g, after, held)
	defer done()
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	s.longPoll(ctx, w, id, after, held)
}

func (s *Server) longPoll(ctx context.Context, w http.ResponseWriter, id Identity, after int64, held string) {
	for {
		snap, release, err := s.hub.Acquire(ctx, id.Workload)
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			release()
			s.metrics.requests.WithLabelValues("policy", "304").Inc()
			w.WriteHeader(http.StatusNotModified) // the wait ended while the first resolution ran
			return
		}
		if err != nil && !errors.Is(err, resolve.ErrNoPolicy) {
			release()
			s.log.Error(err, "resolve policy", "workload", id.Workload.String())
			s.fail(w, "policy", http.StatusServiceUnavailable, "policy cannot be resolved now, retry")
			return
		}
		if err == nil {
			pol, hash := snap.For(id.Pod.Name)
			newer := pol.Revision > after
			if held != "" {
				newer = hash != held
				if newer && pol.Revision <= after {
					// The caller holds other content under a revision another replica issued.
					release()
					s.hub.Bump(id.Workload, after)
					continue
				}
			}
			if newer {
				release()
				s.writePolicy(w, pol, hash)
				return
			}
		}
		select {
		case <-snap.Changed:
			release()
		case <-ctx.Done():
			release()
			if err != nil {
				s.fail(w, "policy", http.StatusNotFound, fmt.Sprintf("no WorkloadPolicy for %s yet", id.Workload))
				return
			}
			s.metrics.requests.WithLabelValues("policy", "304").Inc()
			_, hash := snap.For(id.Pod.Name)
			w.Header().Set("ETag", `"`+hash+`"`)
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
}

// writePolicy answers with pol, the form of the policy served to the caller's pod, and its hash.
func (s *Server) writePolicy(w http.ResponseWriter, pol *policy.Policy, hash string) {
	s.metrics.requests.WithLabelValues("policy", "200").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", `"`+hash+`"`)
	w.Header().Set(policy.HeaderRevision, strconv.FormatInt(pol.Revision, 10))
	_ = json.NewEncoder(w).Encode(pol)
}

// sidecarHeaders reads what a sidecar says of itself on each request: its version and its guard.
func sidecarHeaders(r *http.Request) (string, policy.Guard, error) {
	v, err := policy.SidecarVersion(r.Header.Get(policy.HeaderVersion))
	if err != nil {
		return "", policy.Guard{}, err
	}
	g, err := policy.ParseGuard(r.Header.Get(policy.HeaderGuard))
	return v, g, err
}

// postReport accepts a report of the caller's own workload.
func (s *Server) postReport(w http.ResponseWriter, r *http.Request) {
	id, ok := s.identify(w, r, "report")
	if !ok {
		return
	}
	if wait, ok := s.limits.allow(string(id.UID)); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+1)))
		s.fail(w, "report", http.StatusTooManyRequests, fmt.Sprintf("more than one report per %s from pod %s", s.opts.ReportInterval, id.Pod))
		return
	}
	v, g, err := sidecarHeaders(r)
	if err != nil {
		s.fail(w, "report", http.StatusBadRequest, err.Error())
		return
	}
	rep, err := decodeReport(http.MaxBytesReader(w, r.Body, s.opts.MaxReportBytes))
	if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
		s.fail(w, "report", http.StatusRequestEntityTooLarge, fmt.Sprintf("report over %d bytes", s.opts.MaxReportBytes))
		return
	}
	if err != nil {
		s.fail(w, "report", http.StatusBadRequest, err.Error())
		return
	}
	if (rep.Namespace != "" && rep.Namespace != id.Workload.Namespace) ||
		(rep.Workload != "" && rep.Workload != id.Workload.Kind+"/"+id.Workload.Name) ||
		(rep.Pod != "" && rep.Pod != id.Pod.Name) {
		s.fail(w, "report", http.StatusForbidden, fmt.Sprintf("pod %s may report only for itself, in %s", id.Pod, id.Workload))
		return
	}
	if refused := s.sidecars.reported(id, v, g, rep); refused != "" {
		s.recordRefusal(id, refused)
	}
	if err := s.sink.Accept(r.Context(), id, rep); err != nil {
		s.log.Error(err, "accept report", "workload", id.Workload.String())
		s.fail(w, "report", http.StatusServiceUnavailable, "report not stored, retry")
		return
	}
	s.metrics.requests.WithLabelValues("report", "202").Inc()
	w.WriteHeader(http.StatusAccepted)
}

// decodeReport reads one JSON report, refusing unknown fields and anything after it, and validates it.
func decodeReport(body io.Reader) (*policy.Report, error) {
	var rep policy.Report
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if _, tooBig := errors.AsType[*http.MaxBytesError](err); tooBig {
			return nil, err
		}
		return nil, fmt.Errorf("decode report: data after the report")
	}
	if err := rep.Validate(); err != nil {
		return nil, fmt.Errorf("invalid report: %w", err)
	}
	return &rep, nil
}
