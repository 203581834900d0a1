// Package plugin is kubectl-podwall, podwall's kubectl plugin: `kubectl podwall ui` opens policygen's
// web UI on this machine, signed in as the user; flows and explain read the UI's API the same way
// (the merged verdicts of every policygen replica; a connection judged by the sidecar's decision code);
// status, promote and export read and patch WorkloadPolicies through the API server, as kubectl does.
//
// It finds a Ready pod behind policygen's Service, port-forwards to its policy API port through the
// API server (as `kubectl port-forward` does: SPDY, or SPDY over WebSocket), and serves a reverse
// proxy on 127.0.0.1 that speaks TLS to policygen, verified against the CA policygen publishes, and
// adds a bearer token: a short-lived one minted by TokenRequest for a ServiceAccount the user names,
// or the user's own kubeconfig token (exec and auth-provider plugins included). The UI checks that
// token with a TokenReview for the API server's own audiences and asks RBAC what its owner may do,
// so the browser sees exactly what the user's identity may see. A client certificate cannot be
// forwarded: such users name a ServiceAccount.
//
// The proxy carries credentials, so it trusts nothing the browser sends about them: it drops the
// browser's Authorization and Cookie headers, serves only /ui/, and answers only requests whose Host
// is an IP address or localhost, which a DNS-rebinding page cannot forge.
package plugin
