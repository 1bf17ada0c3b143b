package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A replica killed while it serves an upload: the test re-executes its own
// binary as that replica (a registry on the test's bucket, plain HTTP) and
// kills it with SIGKILL, then finishes the upload on a replica that lives.

// replicaChildEnv, when set, makes TestReplicaKilledMidUpload the replica:
// it serves the storage.s3 section the variable holds (JSON) and prints
// its address.
const replicaChildEnv = "BERTH_TEST_REPLICA_S3"

// replicaChild is a replica running as a child process.
type replicaChild struct {
	*childRegistry
	base   string // http://127.0.0.1:port
	client *http.Client
}

func runReplicaChild(t *testing.T, s3json string) {
	cfg := defaultConfig()
	if err := json.Unmarshal([]byte(s3json), &cfg.Storage.S3); err != nil {
		t.Fatal(err)
	}
	serveChild(t, cfg)
}

// startReplicaChild starts a replica on b in a child process and waits
// until it answers.
func startReplicaChild(t *testing.T, b *s3Bucket) *replicaChild {
	t.Helper()
	s3json, err := json.Marshal(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "TestReplicaKilledMidUpload", replicaChildEnv, string(s3json))
	return &replicaChild{childRegistry: c, base: "http://" + c.addr,
		client: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
}

// do sends one request with a body of n bytes read from body and returns
// the response, its body read, or the error.
func (c *replicaChild) do(ctx context.Context, method, p string, hdr http.Header, body io.Reader, n int64) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+p, body)
	if err != nil {
		return nil, nil, err
	}
	req.ContentLength = n
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// startUpload begins an upload on the child and returns its path and id.
func (c *replicaChild) startUpload(t *testing.T, name string) (string, string) {
	t.Helper()
	resp, _, err := c.do(t.Context(), http.MethodPost, "/v2/"+name+"/blobs/uploads/", nil, nil, 0)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST on the child: %v, %v", resp, err)
	}
	return uploadPathOf(t, resp), resp.Header.Get("Docker-Upload-UUID")
}

// uploadRange asks r where upload p stands and returns its size.
func uploadRange(t *testing.T, r *testServer, p string) int {
	t.Helper()
	resp, _ := r.do(t, http.MethodGet, r.url(p), nil, nil)
	rng := resp.Header.Get("Range")
	_, last, ok := strings.Cut(rng, "-")
	n, err := strconv.Atoi(last)
	if resp.StatusCode != http.StatusNoContent || !ok || err != nil {
		t.Fatalf("GET upload status: %d, Range %q", resp.StatusCode, rng)
	}
	if n == 0 {
		return 0 // "0-0" is also an empty upload's answer
	}
	return n + 1
}

// finishUpload sends blob[from:] to r in one PATCH and completes the upload
// there, then checks that the blob reads back whole and that no multipart
// upload is left in the bucket.
func finishUpload(t *testing.T, b *s3Bucket, r *testServer, name, p string, blob []byte, dg string, from int) {
	t.Helper()
	if from < len(blob) {
		resp, body := r.do(t, http.MethodPatch, r.url(p), chunkHeader(from, len(blob)-1), blob[from:])
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != wantRange(len(blob)) {
			t.Fatalf("PATCH from %d: %d, Range %q\n%s", from, resp.StatusCode, resp.Header.Get("Range"), body)
		}
		p = uploadPathOf(t, resp)
	}
	resp, body := r.do(t, http.MethodPut, r.url(withDigest(p, dg)), nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s", resp.StatusCode, body)
	}
	resp, body = r.do(t, http.MethodGet, r.url("/v2/"+name+"/blobs/"+dg), nil, nil)
	if resp.StatusCode != http.StatusOK || sha256Digest(body) != dg {
		t.Fatalf("GET blob: %d, %d bytes hashing to %s; want 200, %d bytes, %s", resp.StatusCode, len(body), sha256Digest(body), len(blob), dg)
	}
	if left := b.uploads(t); len(left) != 0 {
		t.Errorf("multipart uploads left in the bucket: %v", left)
	}
}

// killMidChunk sends to the child a PATCH of blob[from:] whose body stops
// after sent bytes, waits until the child has uploaded parts of it into
// the bucket (the upload then holds more than partsBefore parts), and
// kills the child while the request still waits for the rest.
func killMidChunk(t *testing.T, b *s3Bucket, c *replicaChild, name, p, id string, blob []byte, from, sent, partsBefore int) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		resp, _, err := c.do(t.Context(), http.MethodPatch, p, chunkHeader(from, len(blob)-1), pr, int64(len(blob)-from))
		if err == nil {
			err = fmt.Errorf("the PATCH was answered: %d", resp.StatusCode)
		}
		done <- err
	}()
	go func() { _, _ = pw.Write(blob[from : from+sent]) }() // the rest never comes
	key := b.key("repositories/" + name + "/_uploads/" + id + "/data")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ids := b.uploads(t)[key]; len(ids) > 0 {
			n := 0
			for _, u := range ids {
				n = max(n, b.parts(t, key, u))
			}
			if n > partsBefore {
				t.Logf("the child uploaded %d parts; killing it", n)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the child uploaded no part of the PATCH within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.kill(t)
	pw.CloseWithError(io.ErrUnexpectedEOF)
	if err := <-done; err == nil || strings.Contains(err.Error(), "answered") {
		t.Fatalf("PATCH to the killed replica: %v, want a broken connection", err)
	}
}

// TestReplicaKilledMidUpload: an upload survives the death of the replica
// serving it, between chunks and while a chunk streams in, and another
// replica completes it from where the bucket says it stands.
func TestReplicaKilledMidUpload(t *testing.T) {
	if s3json := os.Getenv(replicaChildEnv); s3json != "" {
		runReplicaChild(t, s3json)
		return
	}
	b := newS3Bucket(t)
	rb := b.startReplica(t, nil)

	t.Run("between chunks", func(t *testing.T) {
		const name = "kill/between"
		blob, dg := randomBlob(2*replicaChunk + 12345)
		first := replicaChunk + 1<<20
		a := startReplicaChild(t, b)
		p, _ := a.startUpload(t, name)
		resp, body, err := a.do(t.Context(), http.MethodPatch, p, chunkHeader(0, first-1), bytes.NewReader(blob[:first]), int64(first))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH on the child: %v, %v %s", resp, err, body)
		}
		a.kill(t)
		if got := uploadRange(t, rb, p); got != first {
			t.Fatalf("after the kill the upload holds %d bytes, want the %d acknowledged", got, first)
		}
		finishUpload(t, b, rb, name, p, blob, dg, first)
	})

	t.Run("mid chunk", func(t *testing.T) {
		const name = "kill/mid"
		blob, dg := randomBlob(5*replicaChunk + 777)
		first := replicaChunk + 1<<20 // one part and 1 MiB pending
		a := startReplicaChild(t, b)
		p, id := a.startUpload(t, name)
		resp, body, err := a.do(t.Context(), http.MethodPatch, p, chunkHeader(0, first-1), bytes.NewReader(blob[:first]), int64(first))
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH on the child: %v, %v %s", resp, err, body)
		}
		p = uploadPathOf(t, resp)
		// 11 MiB of the next chunk arrive: with the pending MiB, two more
		// parts go into the bucket before the child dies.
		sent := 2*replicaChunk + 1<<20
		killMidChunk(t, b, a, name, p, id, blob, first, sent, 1)
		got := uploadRange(t, rb, p)
		t.Logf("after the kill the upload holds %d bytes (%d acknowledged, %d more sent)", got, first, sent)
		if got < first || got > first+sent {
			t.Fatalf("after the kill the upload holds %d bytes, want between the %d acknowledged and the %d sent", got, first, first+sent)
		}
		finishUpload(t, b, rb, name, p, blob, dg, got)
	})

	t.Run("mid first chunk, then cancelled", func(t *testing.T) {
		// Killed before it ever kept a chunk, the replica leaves only a
		// multipart upload; cancelling the session must remove it too.
		const name = "kill/cancelled"
		blob, _ := randomBlob(3 * replicaChunk)
		a := startReplicaChild(t, b)
		p, id := a.startUpload(t, name)
		killMidChunk(t, b, a, name, p, id, blob, 0, replicaChunk+1<<20, 0)
		if got := uploadRange(t, rb, p); got != 0 {
			t.Fatalf("after the kill the upload holds %d bytes, want 0", got)
		}
		resp, _ := rb.do(t, http.MethodDelete, rb.url(p), nil, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE upload: %d, want 204", resp.StatusCode)
		}
		if left := b.uploads(t); len(left) != 0 {
			t.Errorf("multipart uploads left in the bucket after the session was cancelled: %v", left)
		}
	})
}
