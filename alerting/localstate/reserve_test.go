package localstate

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/dmonitor/dmonitor/internal/tmpfstest"
)

// On a full disk the incidents decided still get stored, in the space set
// aside for them, and a restart on the still full disk knows them.
func TestSaveOnFullDisk(t *testing.T) {
	dir := tmpfstest.Mount(t, "16m")
	path := filepath.Join(dir, "state.db")
	ctx := context.Background()
	s, err := Open(path, Options{Reserve: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.TakeOver(ctx, 1); err != nil {
		t.Fatal(err)
	}
	tmpfstest.Fill(t, dir)
	for i := range 200 {
		host := fmt.Sprintf("www%d", i)
		if err := s.Save(ctx, 1, "www-http\x00"+host+"\x00http", firing(host)); err != nil {
			t.Fatalf("save %d on a full disk: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, Options{Reserve: 1 << 20})
	if got := len(loadAll(t, s)); got != 200 {
		t.Fatalf("after a restart on the full disk: %d incidents, want the 200 saved", got)
	}
}
