package tsdb

import "testing"

func TestSanitizeTag(t *testing.T) {
	cases := []struct{ in, want string }{
		{"www1.example.org", "www1.example.org"}, // allowed as is
		{"/var/lib", "/var/lib"},                 // check_disk's labels keep their slashes
		{"a-b_c", "a-b_c"},                       //
		{"load avg", "load_avg"},                 // space replaced, not dropped
		{"ünï", "_n_"},                           // one '_' per character, not per byte
		{"host:8080", "host_8080"},               //
		{"", "_"},                                // OpenTSDB refuses empty tag values
	}
	for _, tc := range cases {
		if got := SanitizeTag(tc.in); got != tc.want {
			t.Errorf("SanitizeTag(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
