package redislease

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// NewClient returns a client for the Redis server or Sentinel-managed master
// that rawURL names:
//
//	redis://[[user]:password@]host[:port][/db][?option=value&...]
//	rediss://...                       the same over TLS
//	unix://[[user]:password@]/path/to/redis.sock[?db=N]
//	redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db][?option=value&...]
//	rediss+sentinel://...              the same, TLS to the sentinels and the master
//
// The port defaults to 6379, and to 26379 for sentinels. The password
// authenticates to Redis (in the Sentinel form, to the master); sentinels
// that require one take ?sentinel_password= (and ?sentinel_username=). The
// options are go-redis's, in snake case (dial_timeout=3s, max_retries=2,
// skip_verify=true, ...). context_timeout_enabled defaults to true here, so
// a renewal never outlives the lease's deadline.
//
// Errors name the URL with its passwords replaced by "xxxxx". The client is
// not connected yet; the first command dials.
func NewClient(rawURL string) (redis.UniversalClient, error) {
	single, failover, err := parseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis url %q: %w", redact(rawURL), err)
	}
	if failover != nil {
		return redis.NewFailoverClient(failover), nil
	}
	return redis.NewClient(single), nil
}

// parseURL returns the options of one of NewClient's forms: single for a
// server, failover for Sentinel. Its errors must not repeat the URL, whose
// password NewClient redacts.
func parseURL(rawURL string) (single *redis.Options, failover *redis.FailoverOptions, err error) {
	scheme, _, ok := strings.Cut(rawURL, "://")
	if !ok {
		return nil, nil, errors.New("not a URL: want redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://")
	}
	switch scheme {
	case "redis", "rediss", "unix":
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, nil, unwrapURLError(err)
		}
		// go-redis reads this option for Sentinel URLs only.
		ctxTimeout := true
		q := u.Query()
		if q.Has("context_timeout_enabled") {
			if ctxTimeout, err = strconv.ParseBool(q.Get("context_timeout_enabled")); err != nil {
				return nil, nil, fmt.Errorf("invalid context_timeout_enabled %q", q.Get("context_timeout_enabled"))
			}
			q.Del("context_timeout_enabled")
			u.RawQuery = q.Encode()
		}
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, nil, err
		}
		o.ContextTimeoutEnabled = ctxTimeout
		return o, nil, nil
	case "redis+sentinel", "rediss+sentinel":
		o, err := parseSentinelURL(rawURL)
		return nil, o, err
	default:
		return nil, nil, fmt.Errorf("unknown scheme %q: want redis, rediss, unix, redis+sentinel or rediss+sentinel", scheme)
	}
}

// parseSentinelURL reads the Sentinel form into go-redis's own failover URL
// (sentinels' credentials in the user info, the first sentinel as host, the
// others as addr=, the master's name and credentials as options), so every
// go-redis option keeps working.
func parseSentinelURL(rawURL string) (*redis.FailoverOptions, error) {
	scheme, rest, _ := strings.Cut(rawURL, "://")
	// url.Parse does not take a list of hosts, so the authority is cut out
	// by hand: it ends at the first '/', '?' or '#' after the user info.
	var userinfo string
	if at := strings.LastIndex(rest, "@"); at >= 0 && !strings.ContainsAny(rest[:at], "/?#") {
		userinfo, rest = rest[:at], rest[at+1:]
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	hostList, tail := rest[:end], rest[end:]

	var hosts []string
	for h := range strings.SplitSeq(hostList, ",") {
		if h == "" {
			return nil, errors.New("empty sentinel address")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "26379")
		}
		if host, port, err := net.SplitHostPort(h); err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("bad sentinel address %q", h)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, fmt.Errorf("bad sentinel port in %q", h)
		}
		hosts = append(hosts, h)
	}

	tu, err := url.Parse("x://h" + tail)
	if err != nil {
		return nil, unwrapURLError(err)
	}
	path := strings.Split(strings.Trim(tu.Path, "/"), "/")
	if path[0] == "" || len(path) > 2 {
		return nil, errors.New("want the master's name as the path: /master or /master/db")
	}
	q := tu.Query()
	q.Set("master_name", path[0])
	db := "0"
	if len(path) == 2 {
		db = path[1]
		if _, err := strconv.Atoi(db); err != nil {
			return nil, fmt.Errorf("invalid database number %q", db)
		}
	}
	for _, h := range hosts[1:] {
		q.Add("addr", h)
	}
	if userinfo != "" {
		uu, err := url.Parse("x://" + userinfo + "@h")
		if err != nil || uu.User == nil {
			return nil, errors.New("invalid user info")
		}
		if name := uu.User.Username(); name != "" {
			q.Set("username", name)
		}
		if pw, ok := uu.User.Password(); ok {
			q.Set("password", pw)
		}
	}
	if !q.Has("context_timeout_enabled") {
		q.Set("context_timeout_enabled", "true")
	}
	fu := url.URL{Scheme: strings.TrimSuffix(scheme, "+sentinel"), Host: hosts[0], Path: "/" + db}
	if su, sp := q.Get("sentinel_username"), q.Get("sentinel_password"); su != "" || sp != "" {
		fu.User = url.UserPassword(su, sp)
	}
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	fu.RawQuery = q.Encode()
	return redis.ParseFailoverURL(fu.String())
}

var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// unwrapURLError returns url.Parse's reason without the URL, nor the piece
// of it the reason quotes: in a broken URL that may be the password.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return errors.New("malformed URL: " + quoted.ReplaceAllString(err.Error(), `"…"`) +
		" (is a character of the password not percent-encoded?)")
}

var passwordOption = regexp.MustCompile(`(?i)((?:^|[?&])(?:sentinel_)?password=)[^&#]*`)

// redact replaces the passwords in a Redis URL, also in one too broken to
// parse: the user info's after its first ':' (up to the last '@'), the
// password options', and without a scheme all before the last '@'.
func redact(rawURL string) string {
	s := rawURL
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				s = s[:i+3] + rest[:c+1] + "xxxxx" + rest[at:]
			}
		}
	} else if at := strings.LastIndex(s, "@"); at >= 0 {
		s = "xxxxx" + s[at:]
	}
	return passwordOption.ReplaceAllString(s, "${1}xxxxx")
}
