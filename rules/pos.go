package rules

import (
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// scalarPos returns the line and column in src (the file's bytes) of the
// rune at offset off into the value of the scalar node n, so that an error
// expr or text/template reports inside a condition points at the file.
//
// yaml.v3 gives only where the scalar starts: the indicator of a block
// scalar (| or >), the opening quote of a quoted one. The value differs
// from the source text by indentation, folded line breaks, quote escapes
// and the indicators, so the source is walked beside the value: equal
// runes advance both, a run of source white space that folding made into
// one space or line break advances both, an escape sequence of a
// double-quoted scalar stands for one value rune, and anything else in the
// source (indentation, quotes) is skipped. For any input the walk ends
// within src; when off is negative or n has no position, it is n's start.
func scalarPos(src []byte, n *yaml.Node, off int) (line, col int) {
	line, col = n.Line, n.Column
	if off < 0 || n.Line <= 0 || n.Column <= 0 {
		return line, col
	}
	i := byteIndex(src, n.Line, n.Column)
	if i < 0 {
		return line, col
	}
	adv := func() rune {
		r, w := utf8.DecodeRune(src[i:])
		i += w
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		return r
	}
	dq := n.Style&yaml.DoubleQuotedStyle != 0
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		// The value starts on the line after the indicator.
		for i < len(src) && src[i] != '\n' {
			adv()
		}
		if i < len(src) {
			adv()
		}
	case dq || n.Style&yaml.SingleQuotedStyle != 0:
		if i < len(src) {
			adv()
		}
	}
	val := []rune(n.Value)
	for k := 0; k < len(val); k++ {
		v := val[k]
		// Skip what in the source stands for no value rune: indentation,
		// a closing quote, a comment.
		for i < len(src) {
			r, _ := utf8.DecodeRune(src[i:])
			if r == v || dq && r == '\\' || (v == ' ' || v == '\n') && isSpace(r) {
				break
			}
			adv()
		}
		if k == off || i >= len(src) {
			break
		}
		switch r, _ := utf8.DecodeRune(src[i:]); {
		case r == v:
			adv()
		case r == '\\': // an escape sequence of a double-quoted scalar
			adv()
			if i >= len(src) {
				break
			}
			e := adv()
			if e == '\n' {
				k-- // an escaped line break stands for nothing
				continue
			}
			for skip := map[rune]int{'x': 2, 'u': 4, 'U': 8}[e]; skip > 0 && i < len(src); skip-- {
				adv()
			}
		default: // a run of white space folded into one space or line break
			for i < len(src) && isSpace(rune(src[i])) {
				adv()
			}
		}
	}
	return line, col
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// byteIndex returns the byte index in src of the 1-based line and rune
// column, or -1 when src has no such place.
func byteIndex(src []byte, line, col int) int {
	i := 0
	for l := 1; l < line; l++ {
		for i < len(src) && src[i] != '\n' {
			i++
		}
		if i == len(src) {
			return -1
		}
		i++
	}
	for c := 1; c < col; c++ {
		if i >= len(src) || src[i] == '\n' {
			return -1
		}
		_, w := utf8.DecodeRune(src[i:])
		i += w
	}
	return i
}
