package verdictlog

import (
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/sidecar/decide"
)

// appendIdentity returns the fixed part of every line: pod, namespace and workload, escaped once.
func appendIdentity(b []byte, id Identity) []byte {
	b = append(b, `,"pod":`...)
	b = appendString(b, id.Pod)
	b = append(b, `,"namespace":`...)
	b = appendString(b, id.Namespace)
	b = append(b, `,"workload":`...)
	return appendString(b, id.Workload)
}

// appendLine appends the verdict line of c and d, newline included: the fields of verdict.Line, in
// its order.
func (l *Logger) appendLine(b []byte, now time.Time, c *decide.Conn, d *decide.Decision) []byte {
	b = appendTime(append(b, `{"time":`...), now)
	b = append(b, l.identity...)
	b = append(b, `,"direction":"`...)
	b = append(b, c.Direction.String()...)
	b = append(b, `","proto":`...)
	b = appendProto(b, c.Proto)
	b = append(b, `,"src":`...)
	b = appendAddrPort(b, c.Src())
	b = append(b, `,"dst":`...)
	b = appendAddrPort(b, c.Dst())
	b = append(b, `,"peer":`...)
	b = appendString(b, d.Peer)
	if d.Name != "" {
		b = append(b, `,"dst_name":`...)
		b = appendString(b, d.Name)
	}
	b = append(b, `,"verdict":"`...)
	b = append(b, d.Verdict.String()...)
	b = append(b, `","rule":`...)
	b = appendString(b, d.Rule)
	b = append(b, `,"mode":`...)
	b = appendString(b, string(d.Mode))
	b = append(b, `,"policy_revision":`...)
	b = strconv.AppendInt(b, d.Revision, 10)
	if d.Canary {
		b = append(b, `,"canary":true`...)
	}
	b = append(b, `,"evaluator":`...)
	b = appendString(b, d.Evaluator)
	if d.Redirected {
		b = append(b, `,"original_dst":`...)
		b = appendAddrPort(b, c.Original)
	}
	return append(b, "}\n"...)
}

// appendSummary appends the summary line (verdict.Line's summary fields) for what was suppressed
// since s.since.
func (l *Logger) appendSummary(b []byte, now time.Time, s *suppressed) []byte {
	b = appendTime(append(b, `{"time":`...), now)
	b = append(b, l.identity...)
	b = appendCount(b, "suppressed", s.rateLimited+s.dropped)
	b = appendCount(b, "rate_limited", s.rateLimited)
	b = appendCount(b, "dropped", s.dropped)
	b = appendCount(b, "suppressed_deny", s.byVerdict[policy.Deny])
	b = appendCount(b, "suppressed_audit", s.byVerdict[policy.Audit])
	b = appendCount(b, "suppressed_allow", s.byVerdict[policy.Allow])
	b = appendCount(b, "suppressed_revoked", s.byVerdict[policy.Revoked])
	b = appendTime(append(b, `,"since":`...), s.since)
	return append(b, "}\n"...)
}

// appendNotice appends a notice line: verdict.Line's notice fields.
func (l *Logger) appendNotice(b []byte, now time.Time, notice, message string, containers []string) []byte {
	b = appendTime(append(b, `{"time":`...), now)
	b = append(b, l.identity...)
	b = appendString(append(b, `,"notice":`...), notice)
	b = appendString(append(b, `,"message":`...), message)
	b = append(b, `,"containers":[`...)
	for i, c := range containers {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, c)
	}
	return append(b, "]}\n"...)
}

func appendCount(b []byte, key string, n uint64) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":`...)
	return strconv.AppendUint(b, n, 10)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendProto writes the protocol as verdict.Proto encodes it: by name if it has one, else by number.
func appendProto(b []byte, proto uint8) []byte {
	name := verdict.Proto(proto).Name()
	if name == "" {
		return strconv.AppendUint(b, uint64(proto), 10)
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"')
}

// appendAddrPort appends ap as a JSON string. Addresses and ports are plain ASCII, but an IPv6 zone may
// hold any character: such a rare address is escaped the slow way.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	b = append(b, '"')
	start := len(b)
	b = ap.AppendTo(b)
	for _, c := range b[start:] {
		if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return appendString(b[:start-1], ap.String())
		}
	}
	return append(b, '"')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json, it replaces each byte of invalid UTF-8
// with U+FFFD, so that every line is valid JSON whatever a policy or the network put in a field.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, `\n`...)
			case '\r':
				b = append(b, `\r`...)
			case '\t':
				b = append(b, `\t`...)
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
