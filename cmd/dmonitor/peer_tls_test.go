package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dmonitor/dmonitor/internal/await"
	"github.com/dmonitor/dmonitor/internal/httpserve/tlstest"
	"github.com/dmonitor/dmonitor/internal/loopback"
	"github.com/dmonitor/dmonitor/internal/smtptest"
)

// TestPeerTLS: peers across a network they do not trust. The control
// ports serve HTTPS with certificates of the operators' CA, the nodes call
// each other over it (a quorum of two needs both nodes' results at the
// decider), and a failing check is paged once, with its recovery. Plain
// HTTP gets nothing.
func TestPeerTLS(t *testing.T) {
	set := steer(t)
	set("127.0.0.1", "0")
	mail := smtptest.Start(t, "127.0.0.1:0")
	ca := tlstest.NewCA(t, "dmonitor test CA")
	addrs := []string{loopback.FreeAddr(t), loopback.FreeAddr(t)}
	slices.Sort(addrs)
	var nodes []*daemon
	for _, addr := range addrs {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{
			"dmonitor.yaml": fmt.Sprintf(`observer: %q
interval: 1s
control: {listen: %q, token_file: token, tls_cert_file: cert.pem, tls_key_file: key.pem, tls_ca_file: ca.pem}
tsdb: {listen: ""}
smtp: {addr: %q, from: dmonitor@example.org, tls: none}
receivers: {default: {group_wait: 0s}} # one mail per alert, as counted below
`, addr, addr, mail.Addr),
			"nodes.txt":                  strings.Join(addrs, "\n") + "\n",
			"token":                      clusterToken + "\n",
			"hosts.d/127.0.0.1/ctl":      "",
			"alert.d/oncall@example.org": "",
		})
		writeCtlPlugin(t, dir)
		ca.WriteCert(t, filepath.Join(dir, "ca.pem"))
		ca.Issue(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
		nodes = append(nodes, startTLSDaemon(t, dir, addr, ca.Pool()))
	}
	for _, d := range nodes {
		await.Until(t, "pushes to the peer over HTTPS", func() bool { return d.metric(t, "dmonitor_peer_pushes_total") > 0 })
	}

	set("127.0.0.1", "2")
	mailsOf(t, mail, "[FIRING] default on 127.0.0.1 (ctl)")
	set("127.0.0.1", "0")
	mailsOf(t, mail, "[RESOLVED] default on 127.0.0.1 (ctl)")

	resp, err := http.Get("http://" + addrs[0] + "/status")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the control port: %s, want 400", resp.Status)
		}
	}
	for _, d := range nodes {
		d.stop(t)
	}
	noSelfMail(t, mail, "default")
}
