package deploy_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// digestRef is an image pinned by content: name@sha256:<64 hex>.
	digestRef = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	// releaseTag is a tag that names one release: major.minor.patch, with
	// or without a leading v, and any variant after it (-bookworm, -alpine).
	releaseTag = regexp.MustCompile(`^v?[0-9]+\.[0-9]+\.[0-9]+([-.][0-9A-Za-z.-]+)?$`)
	// debianPointRelease is Debian's own numbering: 12.14 is one point
	// release of bookworm, never moved to the next.
	debianPointRelease = regexp.MustCompile(`^[0-9]+\.[0-9]+(-slim)?$`)
	// requiredVariable is ${NAME:?message}: compose refuses to start while
	// NAME is unset or empty, and there is no default to fall back on.
	requiredVariable = regexp.MustCompile(`^\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}$`)
)

// imagePinned returns why ref may change under the same name tomorrow, or
// nil when it names one release or one digest.
func imagePinned(ref string) error {
	if digestRef.MatchString(ref) {
		return nil
	}
	// The tag is after the last colon of the last path element: in
	// localhost:5000/x the colon is the registry's port.
	name, tag := ref, ""
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	switch {
	case tag == "":
		return fmt.Errorf("image %q has no tag, which means latest: pin a release or a digest", ref)
	case releaseTag.MatchString(tag):
		return nil
	case (name == "debian" || name == "library/debian" || name == "docker.io/library/debian") && debianPointRelease.MatchString(tag):
		return nil
	}
	return fmt.Errorf("image %q: tag %q names a series or a moving name, not a release: pin major.minor.patch or a digest", ref, tag)
}

// TestImagePinned shows what the two tests below refuse.
func TestImagePinned(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		ref string
		ok  bool
	}{
		{"redis:8.10.2", true},
		{"axllent/mailpit:v1.27.11", true},
		{"grafana/grafana-oss:11.5.2", true},
		{"golang:1.26.8-bookworm", true},
		{"debian:12.14-slim", true},
		{"petergrace/opentsdb-docker" + digest, true},
		{"petergrace/opentsdb-docker:latest" + digest, true},           // the digest decides
		{"redis:7", false},                                             // a major series
		{"axllent/mailpit:v1.27", false},                               // a minor series
		{"golang:1.26-bookworm", false},                                // a minor series with a variant
		{"nginx:stable", false},                                        // a moving name
		{"debian:bookworm-slim", false},                                // a moving name
		{"petergrace/opentsdb-docker:latest", false},                   // the moving name
		{"petergrace/opentsdb-docker", false},                          // latest, implied
		{"localhost:5000/dmonitor", false},                             // a port is no tag
		{"ubuntu:24.04", false},                                        // two numbers are a release only for Debian
		{"redis:8.10.2" + "@sha256:short", false},                      // not a digest
		{"nginx:1.30.6" + "@sha256:" + strings.Repeat("g", 64), false}, // not hex
	}
	for _, tt := range tests {
		err := imagePinned(tt.ref)
		if tt.ok && err != nil {
			t.Errorf("imagePinned(%q): %v, want pinned", tt.ref, err)
		}
		if !tt.ok && err == nil {
			t.Errorf("imagePinned(%q) = nil, want refused", tt.ref)
		}
	}
}

// TestComposeImagesPinned: every image the stack pulls names one release,
// or is one the operator must pin (a required variable, so compose refuses
// to start without it rather than fall back to latest). The evaluators'
// image is built from the Dockerfile, whose base images
// TestDockerfileImagesPinned checks.
func TestComposeImagesPinned(t *testing.T) {
	c := readCompose(t)
	pulled := 0
	for name, s := range c.Services {
		switch {
		case s.Build != nil:
			continue
		case s.Image == "":
			t.Errorf("service %s has neither image nor build", name)
		case requiredVariable.MatchString(s.Image):
			pulled++
		default:
			pulled++
			if err := imagePinned(s.Image); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
	}
	if pulled == 0 {
		t.Fatalf("%s pulls no image: the test looked at nothing", composeFile)
	}
}

// TestDockerfileImagesPinned: the build and the runtime stage start from
// one release each, so a rebuild does not silently change Go or Debian.
func TestDockerfileImagesPinned(t *testing.T) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var stages []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		args := slices.DeleteFunc(f[1:], func(a string) bool { return strings.HasPrefix(a, "--") })
		if len(args) == 0 {
			t.Errorf("%s: %q names no image", dockerfile, line)
			continue
		}
		ref := args[0]
		// An earlier stage of this file is no image to pull.
		if !slices.Contains(stages, ref) {
			if err := imagePinned(ref); err != nil {
				t.Errorf("%s: %v", dockerfile, err)
			}
		}
		if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
			stages = append(stages, args[2])
		}
	}
	if len(stages) == 0 {
		t.Errorf("%s: no named stage: want the multi-stage build TestDockerfile expects", dockerfile)
	}
}
