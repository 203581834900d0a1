package policy

import (
	"fmt"
	"net/netip"
	"time"
)

// MaxReportEntries bounds one report; a sidecar with more sends several.
const MaxReportEntries = 4096

// Report is what a sidecar posts to policygen (POST /v1/reports): the connections it observed since
// its last report, aggregated to one entry per direction, peer, protocol and port. policygen accepts a
// report only for the caller's own workload; Namespace, Workload and Pod may be left empty, and when set
// must name the caller.
type Report struct {
	Namespace string `json:"namespace,omitempty"`
	// Workload is "Kind/name", as in Policy.Workload.
	Workload string `json:"workload,omitempty"`
	Pod      string `json:"pod,omitempty"`
	// Revision is the policy revision the sidecar runs, and Mode the mode it enforces.
	Revision int64         `json:"revision"`
	Mode     Mode          `json:"mode,omitempty"`
	Entries  []ReportEntry `json:"entries"`
	// Dropped counts connections the sidecar evicted unreported (its bound was reached) since it last
	// reported.
	Dropped uint64 `json:"dropped,omitempty"`
	// Config is the sidecar's effective configuration and what became of its workload's config file.
	// A sidecar sends it at start and whenever it changes, in a report of its own if need be.
	Config *SidecarConfig `json:"config,omitempty"`
}

// MaxConfigMessage bounds SidecarConfig.Message.
const MaxConfigMessage = 2048

// SidecarConfig is a sidecar's effective configuration: the platform's settings (the flags and
// environment the injector set) with the workload's config file applied, which may only tighten them.
type SidecarConfig struct {
	// Mode is the configured mode floor ("" for none); the mode enforced is the strictest of it and
	// the policy's (Report.Mode).
	Mode Mode `json:"mode,omitempty"`
	// FailMode is closed or open.
	FailMode string `json:"failMode"`
	// LogAllows (first, all or none), LogRate and LogBurst are the verdict log's settings.
	LogAllows string  `json:"logAllows"`
	LogRate   float64 `json:"logRate"`
	LogBurst  int     `json:"logBurst"`
	// File is what became of the workload's config file; Message says why it was refused.
	File    ConfigFileState `json:"file"`
	Message string          `json:"message,omitempty"`
}

// ConfigFileState is what became of a workload's config file.
type ConfigFileState string

// The config file states.
const (
	// ConfigNone: there is no file (no ConfigMap podwall-config), or it is empty.
	ConfigNone ConfigFileState = "none"
	// ConfigApplied: the file is in force.
	ConfigApplied ConfigFileState = "applied"
	// ConfigRefused: the file was refused (Message says why); the last good configuration stays in
	// force, at start the platform's settings alone.
	ConfigRefused ConfigFileState = "refused"
)

func (c *SidecarConfig) validate() error {
	switch c.Mode {
	case "", Learn, Monitor, Protect:
	default:
		return fmt.Errorf("config.mode %q: want Learn, Monitor or Protect", c.Mode)
	}
	switch c.File {
	case ConfigNone, ConfigApplied, ConfigRefused:
	default:
		return fmt.Errorf("config.file %q: want none, applied or refused", c.File)
	}
	if len(c.Message) > MaxConfigMessage {
		return fmt.Errorf("config.message: over %d bytes", MaxConfigMessage)
	}
	return nil
}

// ReportEntry is one aggregated observation.
type ReportEntry struct {
	Direction Direction  `json:"direction"`
	Peer      netip.Addr `json:"peer"`
	Protocol  Protocol   `json:"protocol"`
	// Port is the pod's own port for ingress, the remote (original) port for egress and loopback. It is
	// 0 for ICMP and ICMPv6, which have no ports: policygen learns such an entry as a rule for every
	// type of the protocol.
	Port uint16 `json:"port"`
	// Name is, for egress, the DNS name the pod resolved Peer from (the name its query asked for,
	// canonical; see CanonicalName), when a DNS answer it received recently mapped a name to the
	// address; policygen learns such an entry as a rule for the name rather than the address.
	Name  string `json:"name,omitempty"`
	Count uint64 `json:"count"`
	// Verdict is the latest verdict for the entry: allow, audit (Monitor: Protect would deny) or deny.
	Verdict Verdict `json:"verdict,omitempty"`
	// Rule and Evaluator name what decided the latest verdict, as the verdict line does: a rule id of
	// the policy revision the sidecar ran ("default" for the mode's default), and the decision step.
	Rule      string    `json:"rule,omitempty"`
	Evaluator string    `json:"evaluator,omitempty"`
	FirstSeen time.Time `json:"firstSeen,omitzero"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
}

// Validate reports the first malformed entry.
func (r *Report) Validate() error {
	if r.Revision < 0 {
		return fmt.Errorf("revision %d is negative", r.Revision)
	}
	switch r.Mode {
	case "", Learn, Monitor, Protect:
	default:
		return fmt.Errorf("mode %q: want Learn, Monitor or Protect", r.Mode)
	}
	if r.Config != nil {
		if err := r.Config.validate(); err != nil {
			return err
		}
	}
	if len(r.Entries) > MaxReportEntries {
		return fmt.Errorf("%d entries, over the %d limit", len(r.Entries), MaxReportEntries)
	}
	for i, e := range r.Entries {
		if err := e.validate(); err != nil {
			return fmt.Errorf("entries[%d]: %w", i, err)
		}
	}
	return nil
}

func (e *ReportEntry) validate() error {
	if !e.Direction.Valid() {
		return fmt.Errorf("direction: missing")
	}
	if !e.Peer.IsValid() {
		return fmt.Errorf("peer: missing or invalid address")
	}
	if e.Protocol.Number() == 0 {
		return fmt.Errorf("protocol %q: want TCP, UDP, SCTP, ICMP or ICMPv6", e.Protocol)
	}
	if e.Protocol.IsICMP() != (e.Port == 0) {
		return fmt.Errorf("port %d for %s: want 0 for ICMP and ICMPv6 only", e.Port, e.Protocol)
	}
	if e.Count == 0 {
		return fmt.Errorf("count 0")
	}
	if e.Name != "" {
		if e.Direction != Egress {
			return fmt.Errorf("name %q: names are for egress entries only", e.Name)
		}
		if err := ValidateName(e.Name); err != nil {
			return err
		}
	}
	if e.Verdict != 0 && !e.Verdict.Valid() {
		return fmt.Errorf("verdict %d is invalid", e.Verdict)
	}
	return nil
}
