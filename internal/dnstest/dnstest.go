// Package dnstest is a small DNS server for tests: it answers A and AAAA queries, over UDP and TCP on
// one address, from a table the test changes while it runs (names with their addresses and TTL, or a
// CNAME to another name), and counts the queries it got. Unknown names answer NXDOMAIN. A UDP answer
// larger than the query allows (512 bytes, or its EDNS0 size) is sent truncated (TC, no records), so
// that a resolver retries over TCP, as with a real server. It uses golang.org/x/net/dns/dnsmessage, the
// one DNS library of the project.
package dnstest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"podwall.io/podwall/api/policy"
)

// Server is a running test DNS server.
type Server struct {
	udp     *net.UDPConn
	tcp     *net.TCPListener
	queries atomic.Int64
	wg      sync.WaitGroup

	mu     sync.Mutex
	table  map[string]entry // canonical name → what it answers
	conns  map[net.Conn]struct{}
	closed bool
}

type entry struct {
	ttl   uint32
	addrs []netip.Addr
	cname string // canonical; set: the name is an alias
}

// Start serves DNS on addr ("127.0.0.1:0": a free port), UDP and TCP on the same port, until Close.
// Its sockets belong to the network namespace of the thread that calls Start.
func Start(addr string) (*Server, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns test server address: %w", err)
	}
	s := &Server{table: map[string]entry{}, conns: map[net.Conn]struct{}{}}
	// With port 0 the UDP port is free, its TCP twin need not be: try a few.
	for try := 0; ; try++ {
		s.udp, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, fmt.Errorf("dns test server: %w", err)
		}
		s.tcp, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(s.Addr()))
		if err == nil {
			break
		}
		s.udp.Close()
		if ap.Port() != 0 || try == 10 {
			return nil, fmt.Errorf("dns test server: %w", err)
		}
	}
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// Addr is the address the server answers on, UDP and TCP.
func (s *Server) Addr() netip.AddrPort {
	return s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Set makes name answer addrs (A for IPv4, AAAA for IPv6 addresses) with ttl, replacing what it
// answered before. With no addrs the name exists without addresses (an empty answer, not NXDOMAIN).
func (s *Server) Set(name string, ttl uint32, addrs ...netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table[policy.CanonicalName(name)] = entry{ttl: ttl, addrs: addrs}
}

// SetCNAME makes name an alias of target (CNAME, with ttl), replacing what it answered before; queries
// for name answer the CNAME and then what target answers.
func (s *Server) SetCNAME(name, target string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table[policy.CanonicalName(name)] = entry{ttl: ttl, cname: policy.CanonicalName(target)}
}

// Queries is the number of queries the server answered, over UDP and TCP.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// Close stops the server and waits until it stopped.
func (s *Server) Close() {
	s.udp.Close()
	s.tcp.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed
		}
		if resp := s.answer(buf[:n], true); resp != nil {
			s.udp.WriteToUDPAddrPort(resp, from) // a lost answer: the client retries
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		if s.closed { // accepted as Close ran
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

// serveConn answers the length-prefixed queries of one TCP connection until the client closes it.
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var prefix [2]byte
	for {
		if _, err := io.ReadFull(c, prefix[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(prefix[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp := s.answer(msg, false)
		if resp == nil {
			return
		}
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
			return
		}
	}
}
