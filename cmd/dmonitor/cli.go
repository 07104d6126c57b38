package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dmonitor/dmonitor/config"
	"github.com/dmonitor/dmonitor/control"
	"github.com/dmonitor/dmonitor/internal/httpserve"
)

// The exit codes of the commands that talk to a node's control API
// (status, silence, ack, acks), for scripts. They follow the Nagios
// plugins' habit of one small number per kind of outcome.
const (
	// exitRefused: the command line, the configuration or the request is
	// wrong: a bad flag or matcher, a configuration that does not load, or
	// a 4xx answer of the API (no or a wrong token, an unknown silence, an
	// alert that is not firing). Trying again the same way will not help.
	exitRefused = 1
	// exitUnreachable: no usable answer from the node: it cannot be
	// reached (connection refused, time-out, TLS) or it answered 5xx (503
	// from a node that does not evaluate alerts). Later, or another node,
	// may do.
	exitUnreachable = 2
	// exitAlerts: `dmonitor status` only: the node answered, and at least
	// one alert is firing or unknown.
	exitAlerts = 3
)

// exitCodesHelp is the exit codes' paragraph of every API command's help.
const exitCodesHelp = `Exit codes: 0 done; 1 refused: a bad flag, argument or configuration, or
the API answered 4xx (no or a wrong token, an unknown silence, an alert that
is not firing), its message printed; 2 the node cannot be reached (connection,
time-out, TLS) or answered 5xx (503: it does not evaluate alerts).`

// connectionHelp is the paragraph of every API command's help on how the
// node is found.
const connectionHelp = `The node is --url, else the configuration's control.listen (on 127.0.0.1
when it listens on every address; https when control.tls_cert_file is set,
trusting control.tls_ca_file). Changes send the bearer token of --token-file,
else of the configuration's control.token_file. The configuration (--config,
default /etc/dmonitor) is read only when it is needed: a missing default is
fine, with --url and, for changes, --token-file.`

// defaultControlURL is the control API of a node with the default
// control.listen, when there is no configuration to say otherwise.
const defaultControlURL = "http://" + config.DefaultControlListen

// maxAnswer bounds an answer read from the API: /status for ten thousand
// checks of several observers is a few tens of megabytes.
const maxAnswer = 256 << 20

// apiFlags are the flags of every command that calls a node's control API.
type apiFlags struct {
	url       string
	dir       string
	tokenFile string
	timeout   time.Duration
}

// register adds the flags to cmd.
func (f *apiFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "url", "", "the node's control API, e.g. https://mon1:2929 (default: from --config's control.listen, else "+defaultControlURL+")")
	cmd.Flags().StringVar(&f.dir, "config", "/etc/dmonitor", "configuration directory, read for control.listen, control.token_file and control.tls_ca_file")
	cmd.Flags().StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default: the configuration's control.token_file)")
	cmd.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "how long to wait for the node's answer")
}

// cliError ends a command with code after printing err.
type cliError struct {
	code int
	err  error
}

func (e *cliError) Error() string { return e.err.Error() }
func (e *cliError) Unwrap() error { return e.err }

func refused(format string, args ...any) error {
	return &cliError{exitRefused, fmt.Errorf(format, args...)}
}

// apiCommand runs run and turns a *cliError into its message on stderr and
// its exit code; other errors go to Main, which prints them and exits 1
// (cobra's usage errors among them).
func apiCommand(run func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := run(cmd, args)
		var ce *cliError
		if errors.As(err, &ce) {
			fmt.Fprintf(cmd.ErrOrStderr(), "dmonitor: %v\n", ce.err)
			return exitError{ce.code}
		}
		return err
	}
}

// apiClient calls one node's control API.
type apiClient struct {
	base   string // scheme://host:port[/prefix], without a trailing slash
	token  string // sent when not empty
	client *http.Client
}

// connect works out the node's URL, the HTTP client that trusts it and,
// when withToken (for changes), the token to send. Reading commands send
// none, so that they work for whoever may not read the token file.
func (f *apiFlags) connect(cmd *cobra.Command, withToken bool) (*apiClient, error) {
	explicit := cmd.Flags().Changed("config")
	var cfg *config.Config
	if explicit || f.url == "" || withToken && f.tokenFile == "" {
		var err error
		if cfg, err = loadControlConfig(f.dir, explicit); err != nil {
			return nil, err
		}
	}
	c := &apiClient{base: defaultControlURL}
	if cfg != nil {
		u, err := controlURL(cfg.Control)
		if err != nil {
			return nil, refused("%s: %w", filepath.Join(f.dir, config.FileName), err)
		}
		c.base = u
	}
	if f.url != "" {
		u, err := url.Parse(f.url)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return nil, refused("--url %q: want http:// or https:// and host:port, e.g. %s", f.url, defaultControlURL)
		}
		c.base = strings.TrimRight(u.String(), "/")
	}
	tokenFile := f.tokenFile
	if tokenFile == "" && cfg != nil {
		tokenFile = cfg.Control.TokenFile
	}
	if withToken && tokenFile != "" {
		tok, err := control.ReadToken(tokenFile)
		if err != nil {
			return nil, refused("%w", err)
		}
		c.token = tok
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if strings.HasPrefix(c.base, "https://") {
		var ca string
		if cfg != nil {
			ca = cfg.Control.TLSCAFile
		}
		tc, err := httpserve.ClientTLS(ca)
		if err != nil {
			return nil, refused("control.tls_ca_file: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	c.client = &http.Client{Transport: tr, Timeout: f.timeout}
	return c, nil
}

// loadControlConfig loads the configuration in dir for its control
// section. A missing dmonitor.yaml is no configuration (nil) unless the
// user named dir; one that is refused is an error either way, since its
// control settings cannot be trusted.
func loadControlConfig(dir string, explicit bool) (*config.Config, error) {
	if _, err := os.Stat(filepath.Join(dir, config.FileName)); errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil, nil
	}
	cfg, err := config.Load(dir)
	if err != nil {
		return nil, refused("configuration %s refused (or give --url and --token-file to do without it):\n%w", dir, err)
	}
	return cfg, nil
}

// controlURL is the URL this host reaches the control port of c at: the
// loopback address when it listens on every address.
func controlURL(c config.Control) (string, error) {
	if c.Listen == "" {
		return "", errors.New(`control.listen is "" (off): this node serves no control API; give --url`)
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return "", fmt.Errorf("control.listen %q: %w", c.Listen, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.Is4() && ip.IsUnspecified() {
		host = "127.0.0.1"
	} else if err == nil && ip.IsUnspecified() {
		host = "::1"
	}
	scheme := "http"
	if c.TLSCertFile != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}

// apiError is an error answer of the control API.
type apiError struct {
	method, url string
	status      string // "401 Unauthorized"
	code        int
	msg         string // the API's "error", or the body's first line
	hint        string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("%s (%s from %s %s)", e.msg, e.status, e.method, e.url)
	if e.hint != "" {
		s += "\n" + e.hint
	}
	return s
}

// call sends method path with body (JSON-encoded, when not nil) and
// returns the answer's body. Errors are *cliError: exitUnreachable when
// the node cannot be reached or answers 5xx, exitRefused for 4xx, each
// with the API's own message.
func (c *apiClient) call(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	target := c.base + path
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, refused("%s %s: %w", method, target, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		// url.Error repeats the method and URL; say it once, as the
		// node's address.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &cliError{exitUnreachable, fmt.Errorf("cannot reach dmonitor at %s: %w", c.base, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, &cliError{exitUnreachable, fmt.Errorf("%s %s: read the answer: %w", method, target, err)}
	}
	if resp.StatusCode < 300 {
		return b, nil
	}
	e := &apiError{method: method, url: target, status: resp.Status, code: resp.StatusCode, msg: errorMessage(b)}
	if resp.StatusCode == http.StatusUnauthorized && c.token == "" {
		e.hint = "no token was sent: give --token-file, or --config with control.token_file"
	}
	code := exitRefused
	if resp.StatusCode >= 500 {
		code = exitUnreachable
	}
	return nil, &cliError{code, e}
}

// errorMessage is the message of an error answer: the API's {"error": ...},
// else the first line of what came (a proxy's page, Go's answer to plain
// HTTP on a TLS port).
func errorMessage(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	if line == "" {
		return "no message"
	}
	return line
}

// get calls GET path and decodes the JSON answer into v; the raw answer
// is returned too, for --json.
func (c *apiClient) get(ctx context.Context, path string, v any) ([]byte, error) {
	b, err := c.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, &cliError{exitUnreachable, fmt.Errorf("GET %s%s: the answer is not what a dmonitor node says: %w", c.base, path, err)}
	}
	return b, nil
}

// defaultAuthor is who a change is made by unless --author says: the
// user at this host, as Alertmanager's amtool says it.
func defaultAuthor() string {
	name := os.Getenv("USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return name
	}
	return name + "@" + host
}

// ago says how long before now t was, to the second: "3m12s ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t).Round(time.Second)
	switch {
	case d < 0:
		return "in " + (-d).String()
	case d == 0:
		return "just now"
	}
	return d.String() + " ago"
}

// when is t in the local time zone to the minute, with how long ago or
// ahead of now it is.
func when(now, t time.Time) string {
	return t.Local().Format("2006-01-02 15:04") + " (" + ago(now, t) + ")"
}
