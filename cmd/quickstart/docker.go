package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// containerUID is the user the images run as (USER 65532:65532).
const containerUID = 65532

// composeCommand is `docker compose` where the plugin is installed, else
// docker-compose.
func composeCommand(ctx context.Context) (string, []string, error) {
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return "docker", []string{"compose"}, nil
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return p, nil, nil
	}
	return "", nil, fmt.Errorf("neither `docker compose` nor docker-compose found")
}

// buildForDocker compiles static Linux binaries of both servers into
// <root>/<rel> for the images' prebuilt target (so nothing is pulled), for
// the engine's architecture.
func buildForDocker(ctx context.Context, root, rel string, stderr io.Writer) error {
	arch := runtime.GOARCH
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Arch}}").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		arch = strings.TrimSpace(string(out))
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-o", filepath.Join(root, rel)+string(filepath.Separator), "./cmd/registry", "./cmd/authserver")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for linux/%s: %w", arch, err)
	}
	return nil
}

// containerOwner makes the state directory usable by the containers'
// user and returns the uid and gid compose runs them as: the invoking
// user's own (bind mounts keep host ownership), or 65532 with the files
// handed over to it when quickstart runs as root, so no container runs as
// root.
func containerOwner(st *state) (uid, gid int, err error) {
	if runtime.GOOS != "linux" {
		// Docker Desktop's bind mounts do not enforce host ownership.
		return containerUID, containerUID, nil
	}
	if os.Geteuid() != 0 {
		return os.Getuid(), os.Getgid(), nil
	}
	for _, d := range []string{certsDir, configDir, dataDir} {
		err := filepath.Walk(st.l.path(d), func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, containerUID, containerUID)
		})
		if err != nil {
			return 0, 0, err
		}
	}
	return containerUID, containerUID, nil
}

// dockerProcesses is `docker compose up` of compose.yml with the state
// directory mounted, as one process.
func dockerProcesses(ctx context.Context, st *state, root, prebuilt string) ([]process, error) {
	bin, pre, err := composeCommand(ctx)
	if err != nil {
		return nil, err
	}
	uid, gid, err := containerOwner(st)
	if err != nil {
		return nil, err
	}
	args := append(pre, "-f", filepath.Join(root, "compose.yml"))
	if os.Getenv("COMPOSE_PROJECT_NAME") == "" {
		args = append(args, "-p", "berth")
	}
	args = append(args, "up", "--build")
	return []process{{
		name: "compose", bin: bin, args: args, dir: root,
		env: []string{
			"BERTH_DIR=" + st.l.dir,
			"BERTH_HOST=" + st.public,
			"BERTH_UID=" + strconv.Itoa(uid),
			"BERTH_GID=" + strconv.Itoa(gid),
			"BERTH_REGISTRY_PORT=" + strconv.Itoa(st.registryPort),
			"BERTH_AUTH_PORT=" + strconv.Itoa(st.authPort),
			"BERTH_BUILD_TARGET=prebuilt",
			"BERTH_PREBUILT=" + filepath.ToSlash(prebuilt),
		},
	}}, nil
}
