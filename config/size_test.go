package config

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]int64{"4096": 4096, "256MiB": 256 << 20, "1GB": 1e9, "2 KiB": 2048, "10B": 10}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1MiB", "0", "1.5GiB", "12 apples", "99999999999TiB"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) succeeded", in)
		}
	}
}
