package embedded

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer a logger can write to from the engine's
// goroutines while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestEngineInfoAtDebug: the engine's write-ahead log replay, logged at
// every start, reaches dmonitor's log at debug level, so a daemon at the
// default info level does not print it; it is there at debug.
func TestEngineInfoAtDebug(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Append(context.Background(), series("m", tags("host=a"), sv{0, 1}, sv{10, 2})); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err = Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Logf("engine log at debug:\n%s", out)
	var replay []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "WAL") {
			replay = append(replay, l)
		}
	}
	if len(replay) == 0 {
		t.Fatalf("no WAL replay logged at debug:\n%s", out)
	}
	for _, l := range replay {
		if !strings.Contains(l, "level=DEBUG") {
			t.Errorf("engine line not at debug: %s", l)
		}
	}
	if strings.Contains(out, "level=INFO") {
		t.Errorf("a line at info when the store opens and closes:\n%s", out)
	}
}
