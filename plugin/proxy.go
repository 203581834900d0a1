package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// newProxy returns the handler the browser talks to: the UI's paths (/ui/, its page and its API)
// go to policygen at https://server through rt, which dials policygen, verifies it and adds the
// token; / redirects to /ui/; anything else is not found.
//
// The browser's Host is passed through and its Origin translated from this proxy's http:// to the
// https:// policygen is reached by, so that policygen's own same-origin check of writes still
// judges the browser's request: a page of another origin stays refused.
func newProxy(rt http.RoundTripper, server string, errOut io.Writer) http.Handler {
	target := &url.URL{Scheme: "https", Host: server}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = r.In.Host
			// rt adds the token only to a request without one.
			r.Out.Header.Del("Authorization")
			r.Out.Header.Del("Cookie")
			if r.In.Header.Get("Origin") == "http://"+r.In.Host {
				r.Out.Header.Set("Origin", "https://"+r.In.Host)
			}
		},
		Transport: rt,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			fmt.Fprintf(errOut, "%s %s: %v\n", r.Method, r.URL.Path, err)
			writeError(w, http.StatusBadGateway, "kubectl podwall ui cannot reach policygen: "+err.Error())
		},
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", rp)
	mux.Handle("GET /{$}", http.RedirectHandler("/ui/", http.StatusFound))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !literalHost(r.Host) {
			writeError(w, http.StatusMisdirectedRequest, "open the UI by the address kubectl podwall ui printed")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// literalHost reports whether a Host header names an IP address or localhost. A page can point a
// name it owns at 127.0.0.1 (DNS rebinding) and then read this proxy as its own origin, with the
// user's token added; the browser would send that name as Host, so only names no page can own pass.
func literalHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
	}
	return strings.EqualFold(host, "localhost") || net.ParseIP(host) != nil
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
