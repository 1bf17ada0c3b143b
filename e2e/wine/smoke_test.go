package wine

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/winetest"
)

// registry.exe and authserver.exe, run under Wine with token auth over
// TLS, serve a real client: login, push, pull, a chunked upload resumed
// across a crash and restart, a delete, and a kill followed by a restart
// that serves everything acknowledged. The key and the user are made with
// authserver.exe's own commands.
func TestServersUnderWine(t *testing.T) {
	w := winetest.Need(t)
	s := newSite(t, w)
	password := rand.Text()
	s.tool(t, "", "authserver.exe", "keys", "generate", "--key", "certs/token.key", "--certificate", "certs/token.crt", "--algorithm", "ES256")
	s.tool(t, password+"\n", "authserver.exe", "user", "add", "alice", "--htpasswd", "config/htpasswd", "--password-stdin")
	s.write(t, "config/authserver.yml", fmt.Sprintf(`server:
  addr: 127.0.0.1:%d
  certificate: certs/authserver.crt
  key: certs/authserver.key
token:
  issuer: berth-auth
  services: [berth]
  expiration: 300
  certificate: certs/token.crt
  key: certs/token.key
users:
  htpasswd: config/htpasswd
acl:
  - match: {account: alice}
    actions: ["*"]
`, s.authPort))
	s.writeRegistryConfig(t, fmt.Sprintf(`auth:
  token:
    realm: https://localhost:%d/token
    service: berth
    issuer: berth-auth
    rootcertbundle: certs/token.crt
`, s.authPort))

	s.start(t, "authserver.exe", "config/authserver.yml", answers(fmt.Sprintf("https://localhost:%d/healthz", s.authPort), http.StatusOK))
	reg := s.startRegistry(t, "config/registry.yml", http.StatusUnauthorized)
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: password})
	tr := remote.WithTransport(s.client(60 * time.Second).Transport)

	// Login, push, pull.
	pushed := map[string]v1.Hash{}
	push := func(ref string) {
		t.Helper()
		img, err := random.Image(300_000, 3)
		if err != nil {
			t.Fatal(err)
		}
		r, err := name.ParseReference(s.registryHost() + "/" + ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img, alice, tr); err != nil {
			t.Fatalf("push %s: %v\n%s", ref, err, reg.log.String())
		}
		pushed[ref], _ = img.Digest()
	}
	pull := func(ref string, want v1.Hash) {
		t.Helper()
		r, _ := name.ParseReference(s.registryHost() + "/" + ref)
		img, err := remote.Image(r, alice, tr)
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		if got, _ := img.Digest(); got != want {
			t.Fatalf("pull %s: digest %s, want %s", ref, got, want)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			want, _ := l.Digest()
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err != nil || fmt.Sprintf("sha256:%x", h.Sum(nil)) != want.String() {
				t.Fatalf("pull %s: layer %s reads back wrong (%v)", ref, want, err)
			}
		}
	}
	push("team/app:v1")
	pull("team/app:v1", pushed["team/app:v1"])
	if _, err := remote.Image(mustRef(t, s.registryHost()+"/team/app:v1"), remote.WithAuth(&authn.Basic{Username: "alice", Password: "wrong"}), tr); err == nil {
		t.Fatal("a wrong password pulled")
	}
	t.Log("login, push and pull: ok")

	// A chunked upload, half of it sent before a crash, the rest after
	// the restart, from where the registry says it stands.
	token := s.token(t, "alice", password, "repository:team/app:pull,push,delete")
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	dg := digest.FromBytes(blob)
	api := s.api(token)
	resp := api(t, "POST", "/v2/team/app/blobs/uploads/", nil, nil, http.StatusAccepted)
	location := resp.Header.Get("Location")
	half := len(blob) / 2
	api(t, "PATCH", location, blob[:half], map[string]string{"Content-Range": fmt.Sprintf("0-%d", half-1), "Content-Type": "application/octet-stream"}, http.StatusAccepted)
	reg.kill()
	reg = s.startRegistry(t, "config/registry.yml", http.StatusUnauthorized)
	api = s.api(token) // a new client: see server.kill
	resp = api(t, "GET", location, nil, nil, http.StatusNoContent)
	if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", half-1); got != want {
		t.Fatalf("after the restart the upload stands at %q, want %q", got, want)
	}
	resp = api(t, "PATCH", location, blob[half:], map[string]string{"Content-Range": fmt.Sprintf("%d-%d", half, len(blob)-1), "Content-Type": "application/octet-stream"}, http.StatusAccepted)
	put := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(put, "?") {
		sep = "&"
	}
	api(t, "PUT", put+sep+"digest="+url.QueryEscape(dg.String()), nil, nil, http.StatusCreated)
	resp = api(t, "GET", "/v2/team/app/blobs/"+dg.String(), nil, nil, http.StatusOK)
	if got := resp.body; !bytes.Equal(got, blob) {
		t.Fatalf("the resumed blob reads back %d bytes, not what was sent", len(got))
	}
	t.Log("chunked upload resumed across a crash and restart: ok")

	// Delete a manifest.
	push("team/app:gone")
	api(t, "DELETE", "/v2/team/app/manifests/"+pushed["team/app:gone"].String(), nil, nil, http.StatusAccepted)
	resp = api(t, "GET", "/v2/team/app/manifests/gone", nil, map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"}, http.StatusNotFound)
	if !strings.Contains(string(resp.body), "MANIFEST_UNKNOWN") {
		t.Fatalf("deleted manifest: %s", resp.body)
	}
	delete(pushed, "team/app:gone")
	t.Log("delete: ok")

	// Kill, restart: everything acknowledged is served.
	for i := range 3 {
		push(fmt.Sprintf("team/app:k%d", i))
	}
	reg.kill()
	s.startRegistry(t, "config/registry.yml", http.StatusUnauthorized)
	tr = remote.WithTransport(s.client(60 * time.Second).Transport) // see server.kill
	for ref, dg := range pushed {
		pull(ref, dg)
	}
	t.Logf("kill and restart: the %d acknowledged images pull", len(pushed))
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// token asks the auth server for a token, as the Docker token spec says.
func (s *site) token(t *testing.T, user, password, scope string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://localhost:%d/token?service=berth&scope=%s", s.authPort, url.QueryEscape(scope)), nil)
	req.SetBasicAuth(user, password)
	resp, err := s.client(30 * time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Token == "" {
		t.Fatalf("token: %s, %v", resp.Status, err)
	}
	return body.Token
}

type apiResponse struct {
	*http.Response
	body []byte
}

// api returns a function that sends one request to the registry with the
// token and checks its status.
func (s *site) api(token string) func(t *testing.T, method, path string, body []byte, header map[string]string, want int) apiResponse {
	client := s.client(60 * time.Second)
	return func(t *testing.T, method, path string, body []byte, header map[string]string, want int) apiResponse {
		t.Helper()
		u := path
		if !strings.HasPrefix(u, "https://") {
			u = "https://" + s.registryHost() + path
		}
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s, want %d: %s", method, path, resp.Status, want, b)
		}
		return apiResponse{resp, b}
	}
}
