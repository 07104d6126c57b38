package statuspage

import (
	"fmt"
	"html/template"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dmonitor/dmonitor/alerting"
	"github.com/dmonitor/dmonitor/check"
	"github.com/dmonitor/dmonitor/tsdb"
)

// graphSize is the drawing of one graph.
type graphSize struct {
	width  int // of the plot, in px
	line   int // height of the run-time line's area
	strip  int // height of one observer's strip
	labels bool
}

var (
	smallGraph = graphSize{width: 240, line: 18, strip: 5}
	largeGraph = graphSize{width: 900, line: 120, strip: 14, labels: true}
)

// The margins of a large graph, for its labels.
const (
	labelLeft   = 110
	labelBottom = 16
)

// drawGraph draws t's history as inline SVG: the plugin's run time as a
// line (its maximum at the top), each observer's status as a strip of
// coloured runs below it, and the alert transitions as marks on the line's
// area. Colour is never the only carrier: every run and mark has a title,
// and the graph a text summary for screen readers. observers fixes the
// strips' order, so every graph on a page reads the same way.
func drawGraph(h *history, t target, observers []string, g graphSize) template.HTML {
	if h == nil {
		return ""
	}
	var b strings.Builder
	b.Grow(1024)
	left, bottom := 0, 0
	if g.labels {
		left, bottom = labelLeft, labelBottom
	}
	byObs := h.status[t]
	strips := stripsOf(observers, byObs)
	height := g.line + 2 + len(strips)*(g.strip+1) + bottom
	width := left + g.width
	bw := float64(g.width) / float64(h.buckets)

	fmt.Fprintf(&b, `<svg class="graph" width="%d" height="%d" viewBox="0 0 %d %d" role="img" xmlns="http://www.w3.org/2000/svg"><title>`,
		width, height, width, height)
	template.HTMLEscape(&b, []byte(summary(h, t, strips)))
	b.WriteString(`</title>`)
	fmt.Fprintf(&b, `<rect class="bg" x="%d" y="0" width="%d" height="%d"/>`, left, g.width, g.line)

	// The run time, scaled to its maximum in the window.
	d, has := h.duration[t], h.has[t]
	var top float64
	for i, v := range d {
		if has[i] {
			top = max(top, v)
		}
	}
	if top > 0 {
		var pts strings.Builder
		n := 0
		for i, v := range d {
			if !has[i] {
				continue
			}
			x := float64(left) + (float64(i)+0.5)*bw
			y := float64(g.line) - 1 - v/top*float64(g.line-2)
			if n > 0 {
				pts.WriteByte(' ')
			}
			pts.WriteString(strconv.FormatFloat(x, 'f', 1, 64))
			pts.WriteByte(',')
			pts.WriteString(strconv.FormatFloat(y, 'f', 1, 64))
			n++
			if n == 1 || g.labels {
				// A lone bucket draws no line: mark it. The large graph
				// marks every bucket, with its value.
				fmt.Fprintf(&b, `<circle class="dur" cx="%.1f" cy="%.1f" r="1.5"><title>run time %s at %s</title></circle>`,
					x, y, seconds(v), h.start.Add(time.Duration(i)*h.step).Format("15:04:05"))
			}
		}
		fmt.Fprintf(&b, `<polyline class="dur" points="%s"/>`, pts.String())
		if g.labels {
			fmt.Fprintf(&b, `<text x="%d" y="11" text-anchor="end">%s</text>`, left-4, seconds(top))
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">run time</text>`, left-4, g.line-2)
		}
	}

	// One strip per observer: runs of buckets of one status.
	for k, o := range strips {
		y := g.line + 2 + k*(g.strip+1)
		if g.labels {
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">`, left-4, y+g.strip-2)
			template.HTMLEscape(&b, []byte(o.name))
			b.WriteString(`</text>`)
		}
		bs := byObs[o.tag]
		for i := 0; i < len(bs); {
			j := i + 1
			for j < len(bs) && bs[j] == bs[i] {
				j++
			}
			if bs[i] >= 0 {
				st := check.Status(bs[i])
				fmt.Fprintf(&b, `<rect class="s%d" x="%.1f" y="%d" width="%.1f" height="%d"><title>`,
					bs[i], float64(left)+float64(i)*bw, y, float64(j-i)*bw, g.strip)
				template.HTMLEscape(&b, []byte(fmt.Sprintf("%s: %s %s–%s", o.name, st,
					h.start.Add(time.Duration(i)*h.step).Format("15:04"), h.start.Add(time.Duration(j)*h.step).Format("15:04"))))
				b.WriteString(`</title></rect>`)
			}
			i = j
		}
	}

	// Alert transitions: a mark where each one happened, coloured by the
	// state entered.
	for _, a := range h.alerts[t] {
		if a.at.Before(h.start) || !a.at.Before(h.end) {
			continue
		}
		x := float64(left) + float64(a.at.Sub(h.start))/float64(h.step)*bw
		st := alerting.State(a.state)
		fmt.Fprintf(&b, `<circle class="a%d" cx="%.1f" cy="4" r="3"><title>`, a.state, x)
		template.HTMLEscape(&b, []byte(fmt.Sprintf("%s %s at %s", a.rule, st, a.at.Format("15:04:05"))))
		b.WriteString(`</title></circle>`)
	}

	if g.labels {
		y := height - 3
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`, left, y, h.start.Format("Jan 2 15:04"))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, width, y, h.end.Format("Jan 2 15:04"))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// strip is one observer's row of a graph: its tag in the TSDB and its
// name.
type strip struct{ tag, name string }

// stripsOf returns the observers that byObs has, in the order of names
// (the page's observers), then those the page does not know, sorted (an
// observer no longer in the cluster still has its history).
func stripsOf(names []string, byObs map[string][]int8) []strip {
	var out []strip
	known := make(map[string]bool, len(names))
	for _, n := range names {
		tag := tsdb.SanitizeTag(n)
		known[tag] = true
		if _, ok := byObs[tag]; ok {
			out = append(out, strip{tag, n})
		}
	}
	var extra []strip
	for tag := range byObs {
		if !known[tag] {
			extra = append(extra, strip{tag, tag})
		}
	}
	slices.SortFunc(extra, func(a, b strip) int { return strings.Compare(a.tag, b.tag) })
	return append(out, extra...)
}

// summary says in words what the graph shows.
func summary(h *history, t target, strips []strip) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s on %s from %s to %s, in %d intervals of %s.", t.check, t.host, h.start.Format("15:04"), h.end.Format("15:04"),
		h.buckets, h.step)
	for _, o := range strips {
		var n [4]int
		for _, s := range h.status[t][o.tag] {
			if s >= 0 {
				n[s]++
			}
		}
		fmt.Fprintf(&b, " %s:", o.name)
		sep := ""
		for s, c := range n {
			if c > 0 {
				fmt.Fprintf(&b, "%s %d %s", sep, c, check.Status(s))
				sep = ","
			}
		}
		b.WriteByte(';')
	}
	if a := len(h.alerts[t]); a > 0 {
		fmt.Fprintf(&b, " %d alert transitions.", a)
	}
	return b.String()
}

// seconds formats a run time.
func seconds(v float64) string {
	switch {
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	default:
		return strconv.FormatFloat(v*1000, 'f', 1, 64) + " ms"
	}
}
