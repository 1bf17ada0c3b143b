package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"
)

// HealthURL is the address of endpoint (such as "/healthz") on a server
// listening on addr, reached on the loopback interface when addr names no
// host (":5000").
func HealthURL(addr string, tlsOn bool, endpoint string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "https"
	if !tlsOn {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + endpoint, nil
}

// Healthcheck asks url and succeeds on 200 OK. It is a container's
// HEALTHCHECK (scratch and Nano Server images have no shell or curl): the
// server checks itself, so the certificate is not verified (the question is
// only whether it answers).
func Healthcheck(ctx context.Context, url string) error {
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
