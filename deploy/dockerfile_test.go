package deploy_test

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// finalStage returns the instructions of the Dockerfile's last stage, and
// the build stages' RUN lines.
func finalStage(t *testing.T) (final []instruction, buildRuns []string) {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var all []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if s, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		all = append(all, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	last := -1
	for i, in := range all {
		if in.cmd == "FROM" {
			last = i
		}
	}
	if last < 1 {
		t.Fatalf("%s: want a multi-stage build, found %d FROM", dockerfile, last+1)
	}
	for _, in := range all[:last] {
		if in.cmd == "RUN" {
			buildRuns = append(buildRuns, in.args)
		}
	}
	return all[last:], buildRuns
}

// TestDockerfile checks what the stack and the configuration files count on
// in the image, since the image cannot be built here: a static build, a
// non-root user, the plugins, the data volume where data_dir points and the
// control port the configuration listens on.
func TestDockerfile(t *testing.T) {
	final, buildRuns := finalStage(t)
	stack := loadConfig(t, stackConfigDir)
	image := loadConfig(t, imageConfigDir)

	if !slices.ContainsFunc(buildRuns, func(r string) bool {
		return strings.Contains(r, "CGO_ENABLED=0") && strings.Contains(r, "go build") && strings.Contains(r, "./cmd/dmonitor")
	}) {
		t.Errorf("no build stage runs CGO_ENABLED=0 go build ./cmd/dmonitor: the binary would not be static")
	}

	got := make(map[string][]string)
	for _, in := range final {
		got[in.cmd] = append(got[in.cmd], in.args)
	}
	one := func(cmd string) string {
		t.Helper()
		if len(got[cmd]) != 1 {
			t.Errorf("final stage: %d %s instructions, want 1", len(got[cmd]), cmd)
			return ""
		}
		return got[cmd][0]
	}
	exec := func(cmd string) []string {
		t.Helper()
		var argv []string
		if s := one(cmd); s != "" {
			if err := json.Unmarshal([]byte(s), &argv); err != nil {
				t.Errorf("%s %s: want the exec (JSON) form, so signals reach dmonitor: %v", cmd, s, err)
			}
		}
		return argv
	}

	if u := one("USER"); u == "" || u == "root" || u == "0" || strings.HasPrefix(u, "0:") {
		t.Errorf("USER %q: want a non-root user", u)
	}
	if !slices.ContainsFunc(got["RUN"], func(r string) bool { return strings.Contains(r, "monitoring-plugins-basic") }) {
		t.Errorf("the final stage does not install monitoring-plugins-basic, which every check of %s runs", stackConfigDir)
	}
	for _, dir := range []string{stack.DataDir, image.DataDir} {
		if v := one("VOLUME"); v != dir {
			t.Errorf("VOLUME %s, but data_dir is %s", v, dir)
		}
	}
	_, stackPort := urlHostPort(t, stack.Control.Listen)
	_, imagePort := urlHostPort(t, image.Control.Listen)
	for _, port := range []string{stackPort, imagePort} {
		if e := one("EXPOSE"); e != port {
			t.Errorf("EXPOSE %s, but the control port is %s", e, port)
		}
	}
	if hc := one("HEALTHCHECK"); !strings.Contains(hc, "-p "+imagePort) || !strings.Contains(hc, "/healthz") {
		t.Errorf("HEALTHCHECK %q does not ask /healthz on the control port %s", hc, imagePort)
	}
	if !slices.Contains(got["COPY"], "deploy/image/dmonitor.yaml /etc/dmonitor/dmonitor.yaml") {
		t.Errorf("the image does not ship %s/dmonitor.yaml as /etc/dmonitor/dmonitor.yaml", imageConfigDir)
	}
	if ep := exec("ENTRYPOINT"); !slices.Equal(ep, []string{"dmonitor"}) {
		t.Errorf("ENTRYPOINT %q, want [dmonitor]", ep)
	}
	if cmd := exec("CMD"); !slices.Equal(cmd, []string{"run", "--config", "/etc/dmonitor", "--log-format", "json"}) {
		t.Errorf("CMD %q, want [run --config /etc/dmonitor --log-format json]", cmd)
	}
}
