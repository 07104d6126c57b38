package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration as time.ParseDuration does ("90s",
// "1h30m", "250ms") and also accepts whole days ("30d", 24h each) and weeks
// ("2w", 7d each), alone or combined with the other units ("1d12h"). Days
// and weeks must be whole numbers: "1.5d" is refused, write "36h".
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("invalid duration %q (want e.g. 90s, 1h30m, 30d or 2w)", s)
	// Go's syntax has no day or week, so rewrite those into hours and let
	// time.ParseDuration do the rest, including its overflow checks.
	var b strings.Builder
	rest := s
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		b.WriteByte(rest[0])
		rest = rest[1:]
	}
	if rest == "" {
		return 0, bad
	}
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		var hoursPer int64
		switch unit {
		case "d":
			hoursPer = 24
		case "w":
			hoursPer = 7 * 24
		default:
			b.WriteString(num + unit)
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/hoursPer {
			return 0, bad
		}
		b.WriteString(strconv.FormatInt(n*hoursPer, 10) + "h")
	}
	d, err := time.ParseDuration(b.String())
	if err != nil {
		return 0, bad
	}
	return d, nil
}
