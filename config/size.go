package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// sizeUnits are the suffixes ParseSize accepts, longest first so "MiB" is
// not read as "B".
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// ParseSize parses a positive byte size: a whole number with an optional
// unit, binary (KiB, MiB, GiB, TiB) or decimal (KB, MB, GB, TB), e.g.
// "256MiB", "1GB" or "4096".
func ParseSize(s string) (int64, error) {
	bad := fmt.Errorf("invalid size %q (want e.g. 256MiB, 1GB or 4096)", s)
	num, factor := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v <= 0 || v > math.MaxInt64/factor {
		return 0, bad
	}
	return v * factor, nil
}
