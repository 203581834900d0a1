package ui

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// stream serves verdicts as server-sent events: first those after ?after= (or the Last-Event-ID a
// reconnecting EventSource sends) that the ring still holds, oldest first, then each as it arrives.
// Each event's id is its Seq, so that a client that paused or lost its connection resumes where it
// left off; an event "lost" says how many verdicts (of any kind) fell out of the ring meanwhile.
// Query parameters narrow the verdicts sent (ParseFilter); ?follow=false ends the stream once the
// ring's verdicts are sent.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	after, err := strconv.ParseUint(cmp.Or(r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after"), "0"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "after: want a verdict sequence number")
		return
	}
	filter, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	follow, err := parseFollow(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rc := startStream(w, s)
	keepAlive := time.NewTicker(s.opts.KeepAlive)
	defer keepAlive.Stop()
	for {
		vs, lost, more := s.feed.After(after)
		if lost > 0 {
			fmt.Fprintf(w, "event: lost\ndata: %d\n\n", lost)
		}
		for _, v := range vs {
			after = v.Seq
			if !filter.Match(v) {
				continue
			}
			data, _ := json.Marshal(v)
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", v.Seq, data)
		}
		if err := rc.Flush(); err != nil || !follow {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-more:
		case <-keepAlive.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		}
	}
}

// startStream answers a request with a stream of server-sent events that lives as long as its
// reader: the policy API's write timeout bounds long-polls, not streams.
func startStream(w http.ResponseWriter, s *Server) *http.ResponseController {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil {
		s.log.V(1).Info("cannot lift the write deadline of a verdict stream", "error", err.Error())
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return rc
}
