package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// manifestBase is a repository with a config and a layer blob that the
// manifests of the manifest tests refer to.
type manifestBase struct {
	repo          string
	config, layer *Blob
}

const manifestType = "application/vnd.oci.image.manifest.v1+json"

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

func (m *manifestBase) manifest(seq string) []byte {
	b, _ := json.Marshal(struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        descriptor        `json:"config"`
		Layers        []descriptor      `json:"layers"`
		Annotations   map[string]string `json:"annotations"`
	}{
		SchemaVersion: 2,
		MediaType:     manifestType,
		Config:        descriptor{"application/vnd.oci.image.config.v1+json", m.config.Digest(), m.config.Size},
		Layers:        []descriptor{{"application/vnd.oci.image.layer.v1.tar+gzip", m.layer.Digest(), m.layer.Size}},
		Annotations:   map[string]string{"org.berth.bench.seq": seq},
	})
	return b
}

func (b *bencher) manifestSetup(ctx context.Context, t *target) (*manifestBase, error) {
	if t.manifest != nil {
		return t.manifest, nil
	}
	m := &manifestBase{repo: b.opt.Repo + "/manifest", config: b.newBlob(1234), layer: b.newBlob(4096)}
	if err := t.ping(ctx, t.c, m.repo); err != nil {
		return nil, err
	}
	for _, bl := range []*Blob{m.config, m.layer} {
		if err := t.pushMonolithic(ctx, t.c, m.repo, bl); err != nil {
			return nil, err
		}
	}
	if err := t.putManifest(ctx, m, "get", m.manifest("get")); err != nil {
		return nil, err
	}
	t.manifest = m
	return m, nil
}

func (t *target) putManifest(ctx context.Context, m *manifestBase, tag string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, t.c.base.String()+"/v2/"+m.repo+"/manifests/"+tag, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", manifestType)
	resp, err := expect(http.StatusCreated)(t.c.Do(req, scopeFor(m.repo)))
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

func (t *target) getManifest(ctx context.Context, m *manifestBase, tag string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.c.base.String()+"/v2/"+m.repo+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", manifestType+", application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := expect(http.StatusOK)(t.c.Do(req, scopeFor(m.repo)))
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// manifestOps PUTs distinct manifests under fresh tags (each a real
// write), or GETs one manifest by tag, from Parallel clients.
func (b *bencher) manifestOps(ctx context.Context, t *target, put bool) (Result, error) {
	m, err := b.manifestSetup(ctx, t)
	if err != nil {
		return Result{}, err
	}
	run := strconv.FormatUint(b.seq.Add(1), 10)
	t.timed()
	lat, d, err := b.ops(ctx, func(ctx context.Context, w, i int) error {
		if put {
			tag := fmt.Sprintf("r%s-w%d-%d", run, w, i)
			return t.putManifest(ctx, m, tag, m.manifest(tag))
		}
		return t.getManifest(ctx, m, "get")
	})
	if err != nil {
		return Result{}, err
	}
	r := opsResult(lat, d)
	r.Proto = t.c.proto
	return r, nil
}
