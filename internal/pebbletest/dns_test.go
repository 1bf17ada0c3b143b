package pebbletest

import (
	"context"
	"net"
	"testing"
)

func TestDNSHelper(t *testing.T) {
	addr := StartDNS(t)
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	addrs, err := r.LookupHost(context.Background(), "alpn.berth.test")
	if err != nil || len(addrs) != 1 || addrs[0] != "127.0.0.1" {
		t.Fatalf("LookupHost = %v, %v; want [127.0.0.1]", addrs, err)
	}
}
