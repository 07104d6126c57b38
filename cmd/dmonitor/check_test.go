package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCheckPrintsPerfdataAsWritten: `dmonitor check` shows each perfdata
// value as the plugin printed it (check_disk's kilobytes, check_load's
// trailing zeros), and --json carries that text beside the number.
func TestCheckPrintsPerfdataAsWritten(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"dmonitor.yaml":               "observer: eu-1\n",
		"hosts.d/localhost/disk_free": "",
		"plugins/check_disk_free": "#!/bin/sh\n" +
			"echo 'DISK OK - 31% free on /|free=82138904KB;26421208:;13210604:;0;264212084 load1=0.500;4;8;0; tiny=1.0E-7s'\n",
	})
	code, out, stderr := runMain(t, "check", "--config", dir, "localhost", "disk_free")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	for _, want := range []string{
		"\n  free = 82138904KB (warn 26421208:, crit 13210604:)\n",
		"\n  load1 = 0.500 (warn 4, crit 8)\n",
		"\n  tiny = 1.0E-7s\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	code, out, _ = runMain(t, "check", "--config", dir, "localhost", "disk_free", "--json")
	var r struct {
		Perf []struct {
			Label, Text string
			Value       float64
		} `json:"perfdata"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 {
		t.Fatalf("exit %d, %v in %s", code, err, out)
	}
	if len(r.Perf) != 3 || r.Perf[0].Text != "82138904" || r.Perf[0].Value != 82138904 || r.Perf[1].Text != "0.500" || r.Perf[1].Value != 0.5 {
		t.Errorf("--json perfdata = %+v", r.Perf)
	}
}
