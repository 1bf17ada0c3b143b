package pebbletest

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
)

// StartDNS runs a DNS server on loopback, over TCP (Pebble's VA queries
// over TCP), that answers every A question with 127.0.0.1 and every other
// question with an empty NOERROR answer. It returns the address.
func StartDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go serveDNSConn(conn)
		}
	}()
	return ln.Addr().String()
}

// serveDNSConn answers length-prefixed DNS messages (RFC 1035 4.2.2)
// until the client closes the connection or sends something unexpected.
func serveDNSConn(conn net.Conn) {
	defer conn.Close()
	for {
		var size [2]byte
		if _, err := io.ReadFull(conn, size[:]); err != nil {
			return
		}
		query := make([]byte, binary.BigEndian.Uint16(size[:]))
		if _, err := io.ReadFull(conn, query); err != nil {
			return
		}
		resp := dnsAnswer(query)
		if resp == nil {
			return
		}
		binary.BigEndian.PutUint16(size[:], uint16(len(resp)))
		if _, err := conn.Write(append(size[:], resp...)); err != nil {
			return
		}
	}
}

// dnsAnswer builds the response to a query with one question, or returns
// nil for anything else.
func dnsAnswer(q []byte) []byte {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil
	}
	end := 12 // walk the question name's labels
	for {
		if end >= len(q) || q[end]&0xC0 != 0 {
			return nil
		}
		if q[end] == 0 {
			end++
			break
		}
		end += 1 + int(q[end])
	}
	if end+4 > len(q) {
		return nil
	}
	isA := binary.BigEndian.Uint16(q[end:]) == 1 && binary.BigEndian.Uint16(q[end+2:]) == 1
	question := q[12 : end+4]

	resp := make([]byte, 12, 12+len(question)+16)
	copy(resp, q[:2]) // ID
	// QR, AA and RA set; opcode and RD copied; RCODE 0.
	binary.BigEndian.PutUint16(resp[2:], 0x8480|binary.BigEndian.Uint16(q[2:4])&0x7900)
	binary.BigEndian.PutUint16(resp[4:], 1) // QDCOUNT
	resp = append(resp, question...)
	if isA {
		binary.BigEndian.PutUint16(resp[6:], 1) // ANCOUNT
		resp = append(resp,
			0xC0, 12, // name: pointer to the question's
			0, 1, 0, 1, // type A, class IN
			0, 0, 0, 60, // TTL
			0, 4, 127, 0, 0, 1)
	}
	return resp
}
