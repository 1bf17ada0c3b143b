package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// stage is what a Dockerfile stage sets, with what it inherits.
type stage struct {
	from        string
	entrypoint  []string
	healthcheck []string // the CMD of HEALTHCHECK
	copiesTo    []string // destinations of COPY
}

// readStages reads a Dockerfile's stages by name, following FROM chains.
func readStages(t *testing.T, file string) map[string]*stage {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stages := map[string]*stage{}
	var cur *stage
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest, _ := strings.Cut(line, " ")
		jsonArray := func(s string) []string {
			var v []string
			if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &v); err != nil {
				t.Fatalf("%s: %q is not a JSON array: %v", file, s, err)
			}
			return v
		}
		switch strings.ToUpper(word) {
		case "FROM":
			fields := strings.Fields(rest)
			cur = &stage{from: fields[0]}
			if parent, ok := stages[fields[0]]; ok {
				c := *parent
				c.from = fields[0]
				c.copiesTo = append([]string(nil), parent.copiesTo...)
				cur = &c
			}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				stages[fields[2]] = cur
			}
		case "ENTRYPOINT":
			cur.entrypoint = jsonArray(rest)
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(rest, "CMD ")
			if !ok {
				t.Fatalf("%s: HEALTHCHECK without CMD", file)
			}
			cur.healthcheck = jsonArray(cmd)
		case "COPY":
			fields := strings.Fields(rest)
			cur.copiesTo = append(cur.copiesTo, fields[len(fields)-1])
		}
	}
	return stages
}

// The images name their program by absolute path, in the folder the
// binary is copied to: Windows starts a container's process without the
// image's PATH, so a bare name works on Linux only. compose.windows.yml
// builds the Windows targets, checks health with the same absolute path
// and chooses an isolation.
func TestImagesNameTheirProgramsByPath(t *testing.T) {
	root := repoRoot(t)
	var compose struct {
		Services map[string]struct {
			Build struct {
				Dockerfile, Target string
			}
			Isolation   string
			Healthcheck struct{ Test []string }
		}
	}
	data, err := os.ReadFile(filepath.Join(root, "compose.windows.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	for _, img := range []struct{ dockerfile, prog, service string }{
		{"Dockerfile.registry", "registry", "registry"},
		{"Dockerfile.auth", "authserver", "auth"},
	} {
		stages := readStages(t, filepath.Join(root, img.dockerfile))
		for _, target := range []struct {
			name, path, dir string
		}{
			{"prebuilt", "/usr/local/bin/" + img.prog, "/usr/local/bin/"},
			{"release", "/usr/local/bin/" + img.prog, "/usr/local/bin/"},
			{"prebuilt-windows", `C:\berth\` + img.prog + ".exe", "C:/berth/"},
			{"release-windows", `C:\berth\` + img.prog + ".exe", "C:/berth/"},
		} {
			s := stages[target.name]
			if s == nil {
				t.Errorf("%s has no target %s", img.dockerfile, target.name)
				continue
			}
			if len(s.entrypoint) != 1 || s.entrypoint[0] != target.path {
				t.Errorf("%s %s: ENTRYPOINT %q, want [%q]", img.dockerfile, target.name, s.entrypoint, target.path)
			}
			if len(s.healthcheck) != 2 || s.healthcheck[0] != target.path || s.healthcheck[1] != "healthcheck" {
				t.Errorf("%s %s: HEALTHCHECK CMD %q, want [%q healthcheck]", img.dockerfile, target.name, s.healthcheck, target.path)
			}
			if !slices.Contains(s.copiesTo, target.dir) {
				t.Errorf("%s %s: the binary is not copied to %s (COPY destinations %q)", img.dockerfile, target.name, target.dir, s.copiesTo)
			}
		}
		svc, ok := compose.Services[img.service]
		if !ok {
			t.Fatalf("compose.windows.yml has no service %s", img.service)
		}
		windowsPath := `C:\berth\` + img.prog + ".exe"
		if svc.Build.Dockerfile != img.dockerfile || svc.Build.Target != "release-windows" {
			t.Errorf("compose.windows.yml %s builds %s target %q, want %s target release-windows", img.service, svc.Build.Dockerfile, svc.Build.Target, img.dockerfile)
		}
		if len(svc.Healthcheck.Test) < 2 || svc.Healthcheck.Test[1] != windowsPath {
			t.Errorf("compose.windows.yml %s: healthcheck %q does not run %s", img.service, svc.Healthcheck.Test, windowsPath)
		}
		if svc.Isolation == "" {
			t.Errorf("compose.windows.yml %s: no isolation chosen", img.service)
		}
	}
}
