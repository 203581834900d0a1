package ui

import (
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podwall.io/podwall/policygen/kubeauth"
)

//go:embed assets
var assets embed.FS

// Options configure the UI; zero values take the defaults in parentheses.
type Options struct {
	// KeepAlive is how often an idle verdict stream sends a comment, so that proxies keep it open (15s).
	KeepAlive time.Duration
	// Replica names this replica's verdicts in the cluster stream ("policygen"; the pod's name in a
	// cluster, as its EndpointSlice names it).
	Replica string
	// Policies serves the resolved policies api/explain judges by; nil: it answers 503.
	Policies Policies
	// Peers finds the other replicas whose verdicts the cluster stream merges; nil: this replica's
	// alone.
	Peers *Peers
}

// Server serves the UI.
type Server struct {
	opts     Options
	reader   client.Reader
	writer   client.Client
	reviewer *kubeauth.Reviewer
	feed     *Feed
	log      logr.Logger
}

// New returns a UI reading from reader (policygen's cache), patching modes through writer, having
// callers checked by reviewer, and streaming verdicts from feed.
func New(opts Options, reader client.Reader, writer client.Client, reviewer *kubeauth.Reviewer, feed *Feed, log logr.Logger) *Server {
	opts.KeepAlive = cmp.Or(opts.KeepAlive, 15*time.Second)
	opts.Replica = cmp.Or(opts.Replica, "policygen")
	return &Server{opts: opts, reader: reader, writer: writer, reviewer: reviewer, feed: feed, log: log}
}

// Handler serves the UI under /ui/: the page and its assets to anyone (they hold no data), the JSON
// API under /ui/api/ to callers RBAC lets read WorkloadPolicies.
func (s *Server) Handler() http.Handler {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded folder is part of the build
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/api/workloads", s.reading(s.workloads))
	mux.HandleFunc("GET /ui/api/policies/{namespace}/{name}", s.reading(s.policy))
	mux.HandleFunc("POST /ui/api/policies/{namespace}/{name}/mode", writing(s.setMode))
	mux.HandleFunc("POST /ui/api/policies/{namespace}/{name}/accept", writing(s.acceptProposals))
	mux.HandleFunc("GET /ui/api/graph", s.reading(s.graph))
	mux.HandleFunc("GET /ui/api/local", s.reading(s.local))
	mux.HandleFunc("GET /ui/api/verdicts", s.reading(s.stream))
	mux.HandleFunc("GET /ui/api/cluster/verdicts", s.reading(s.clusterStream))
	mux.HandleFunc("GET /ui/api/explain", s.reading(s.explain))
	return securityHeaders(mux)
}

// securityHeaders keeps the page from being framed or loading anything but its own assets.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		h.ServeHTTP(w, r)
	})
}

// reading lets through callers that may list WorkloadPolicies in every namespace.
func (s *Server) reading(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, ok := s.allowed(w, r, "list", "", ""); ok {
			h(w, r)
		}
	}
}

// writing lets through only JSON bodies sent from the UI's own origin or by a client that is not a
// browser. A bearer token an authenticating proxy adds, or a cookie-borne one, would otherwise ride
// along on a POST another site's page makes the browser send: the JSON content type forces such a
// page into a CORS preflight this server never answers, and the origin check refuses it outright.
func writing(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "send the body as Content-Type: application/json")
			return
		}
		h(w, r)
	}
}

// sameOrigin refuses a request a browser marks as coming from another site: Sec-Fetch-Site, when
// sent, must be same-origin (or none: no site started it), and Origin, when sent, must be this
// server's scheme://host[:port] as the request's Host names it. Both are checked, unlike net/http's
// CrossOriginProtection, which takes Sec-Fetch-Site alone when present and compares no scheme.
// X-Forwarded-Host is not trusted: a proxy in front must pass the browser's Host through. A request
// with neither header comes from no browser (curl, scripts), which carries no ambient credentials.
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("refused a %s request: change policies from the UI's own page", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	if u, err := url.Parse(origin); err != nil || u.Scheme != scheme || !strings.EqualFold(u.Host, r.Host) || u.Path != "" {
		return fmt.Errorf("refused a request from origin %q: this UI is %s://%s", origin, scheme, r.Host)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
