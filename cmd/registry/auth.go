package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/tlsutil"
)

// newAuthorizer builds the authorizer the auth section asks for; nil means
// no authentication. Background work (JWKS refresh, htpasswd reload) runs
// until ctx ends.
func newAuthorizer(ctx context.Context, cfg Config, log *slog.Logger) (registry.Authorizer, error) {
	tok, ht := cfg.Auth.Token, cfg.Auth.Htpasswd
	switch {
	case tok.Realm != "":
		v, err := newVerifier(ctx, cfg, log)
		if err != nil {
			return nil, err
		}
		log.Info("token authentication", "realm", tok.Realm, "service", tok.Service, "issuer", tok.Issuer)
		return registry.NewTokenAuthorizer(tok.Realm, tok.Service, v)
	case ht.Path != "":
		users, err := auth.NewUserStore(auth.UserStoreConfig{Path: ht.Path, Logger: log})
		if err != nil {
			return nil, err
		}
		go users.Watch(ctx)
		log.Info("htpasswd authentication: every user in the file has full access", "path", ht.Path, "users", users.Len())
		return registry.NewBasicAuthorizer(ht.Realm, users), nil
	}
	log.Warn("NO AUTHENTICATION: anyone who can reach this registry can push, pull and delete; configure auth.token (or auth.htpasswd)")
	return nil, nil
}

// newVerifier loads the token keys: the root bundle and a JWKS file, or a
// JWKS URL fetched now (if the auth server is up) and refreshed after.
func newVerifier(ctx context.Context, cfg Config, log *slog.Logger) (*auth.Verifier, error) {
	tok := cfg.Auth.Token
	url := ""
	jwksFile := tok.JWKS
	if strings.HasPrefix(tok.JWKS, "https://") {
		url, jwksFile = tok.JWKS, ""
	} else if strings.HasPrefix(tok.JWKS, "http://") {
		return nil, fmt.Errorf("config: auth.token.jwks must be a file or an https URL")
	}
	vc := auth.VerifierConfig{Issuer: tok.Issuer, Service: tok.Service, Algorithms: tok.SigningAlgorithms}
	var err error
	if tok.RootCertBundle != "" {
		if vc.Roots, err = auth.LoadCertificates(tok.RootCertBundle); err != nil {
			return nil, fmt.Errorf("auth.token.rootcertbundle: %w", err)
		}
	}
	if jwksFile != "" {
		if vc.JWKS, err = auth.LoadJWKS(jwksFile); err != nil {
			return nil, fmt.Errorf("auth.token.jwks: %w", err)
		}
	}
	if url != "" && vc.JWKS == nil {
		vc.JWKS = &auth.JWKS{} // filled by the first fetch
	}
	v, err := auth.NewVerifier(vc)
	if err != nil {
		return nil, err
	}
	if url != "" {
		tc, err := tlsutil.ClientConfig(tok.JWKSCA...)
		if err != nil {
			return nil, fmt.Errorf("auth.token.jwksca: %w", err)
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		if err := fetchJWKS(ctx, client, url, v); err != nil {
			log.Warn("could not fetch the JWKS yet; retrying", "url", url, "err", err)
		}
		go refreshJWKS(ctx, client, url, tok.JWKSRefresh, v, log)
	}
	return v, nil
}

func fetchJWKS(ctx context.Context, client *http.Client, url string, v *auth.Verifier) error {
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
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	set, err := auth.ParseJWKS(data)
	if err != nil {
		return err
	}
	return v.SetJWKS(set)
}

// refreshJWKS fetches the JWKS every interval, and every 10 s while the
// last fetch failed, until ctx ends.
func refreshJWKS(ctx context.Context, client *http.Client, url string, interval time.Duration, v *auth.Verifier, log *slog.Logger) {
	if interval <= 0 {
		interval = 5 * time.Minute
	}
	wait := interval
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := fetchJWKS(ctx, client, url, v); err != nil {
			log.Warn("JWKS refresh failed; keeping the keys we have", "url", url, "err", err)
			wait = 10 * time.Second
			continue
		}
		wait = interval
	}
}
