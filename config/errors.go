package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
)

// Error is one problem in the config tree.
type Error struct {
	// File is the file or directory at fault, relative to the config
	// directory when it lies inside it ("dmonitor.yaml", "hosts.d/web1/http")
	// and absolute otherwise (the config directory itself, a plugin under
	// /usr/lib/nagios/plugins).
	File string
	Line int // 1-based line in File; 0 when the problem is not at a line
	Col  int // 1-based column; 0 when unknown
	Msg  string
	Err  error // the underlying error, if any; Msg already includes its text
}

// Error formats e as "file:line:col: message", leaving out the column or
// the position when it is not known.
func (e *Error) Error() string {
	switch {
	case e.Line > 0 && e.Col > 0:
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Unwrap returns the underlying error, so that errors.Is(err, fs.ErrNotExist)
// works through a config error.
func (e *Error) Unwrap() error { return e.Err }

// Errors is every problem Load found in a config tree, sorted by file, line
// and column. It is the only error type Load returns.
type Errors []*Error

// Error lists the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
}

// ioMessage describes a file system error without the path, which the Error
// carrying it already names: "open: no such file or directory".
func ioMessage(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}
