package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dmonitor/dmonitor/tsdb"
)

// A record's payload is its points, one after another:
//
//	metric  string
//	ntags   uvarint
//	tags    ntags × (key string, value string)
//	seconds varint, the difference to the previous point's Unix seconds
//	nanos   uvarint, 0..999999999
//	value   8 bytes, IEEE 754 bits, little endian
//
// A string is a uvarint reference: 0 introduces a new string (uvarint
// length, then its bytes), which takes the next number of the record's
// table; n > 0 repeats string n of the table. Metric names, tag keys and
// most tag values recur within a batch, and the time delta of points taken
// together is one byte, so a check result takes about 20 bytes against 144
// as OpenTSDB JSON (BenchmarkEncode).

// errCorrupt is wrapped by decoding errors: the bytes passed the checksum
// but do not decode, which only a bug or a forged file can cause.
var errCorrupt = errors.New("corrupt record")

// encoder appends the encoding of points to a buffer. Its string table is
// reused from record to record, so it must not be shared between
// goroutines.
type encoder struct {
	strs map[string]uint64
	buf  []byte // the last record buffer, for reuse
}

func newEncoder() *encoder { return &encoder{strs: make(map[string]uint64)} }

// appendPayload appends the payload of one record holding pts to buf.
func (e *encoder) appendPayload(buf []byte, pts []tsdb.Point) []byte {
	clear(e.strs)
	var prevSec int64
	for i := range pts {
		p := &pts[i]
		buf = e.appendString(buf, p.Metric)
		buf = binary.AppendUvarint(buf, uint64(len(p.Tags)))
		for k, v := range p.Tags {
			buf = e.appendString(buf, k)
			buf = e.appendString(buf, v)
		}
		sec := p.Time.Unix()
		buf = binary.AppendVarint(buf, sec-prevSec)
		prevSec = sec
		buf = binary.AppendUvarint(buf, uint64(p.Time.Nanosecond()))
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(p.Value))
	}
	return buf
}

func (e *encoder) appendString(buf []byte, s string) []byte {
	if n, ok := e.strs[s]; ok {
		return binary.AppendUvarint(buf, n)
	}
	e.strs[s] = uint64(len(e.strs) + 1)
	buf = append(buf, 0)
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// decodePayload appends the n points encoded in b to pts.
func decodePayload(pts []tsdb.Point, b []byte, n int) ([]tsdb.Point, error) {
	d := decoder{b: b}
	var sec int64
	for i := 0; i < n; i++ {
		metric := d.string()
		ntags := d.uvarint()
		if ntags > uint64(len(d.b)) { // each tag takes at least two bytes
			return pts, fmt.Errorf("point %d: %d tags in %d bytes: %w", i, ntags, len(d.b), errCorrupt)
		}
		var tags map[string]string
		if ntags > 0 {
			tags = make(map[string]string, ntags)
			for range ntags {
				k := d.string()
				tags[k] = d.string()
			}
		}
		sec += d.varint()
		nsec := d.uvarint()
		v := d.float()
		if d.err != nil {
			return pts, fmt.Errorf("point %d: %w", i, d.err)
		}
		if nsec >= uint64(time.Second) {
			return pts, fmt.Errorf("point %d: %d nanoseconds: %w", i, nsec, errCorrupt)
		}
		pts = append(pts, tsdb.Point{Metric: metric, Tags: tags, Time: time.Unix(sec, int64(nsec)).UTC(), Value: v})
	}
	if len(d.b) != 0 {
		return pts, fmt.Errorf("%d bytes after %d points: %w", len(d.b), n, errCorrupt)
	}
	return pts, nil
}

// decoder reads a payload; the first error sticks and later reads return
// zero values, so a caller checks once per point.
type decoder struct {
	b    []byte
	strs []string
	err  error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("truncated %s: %w", what, errCorrupt)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) float() float64 {
	if len(d.b) < 8 {
		d.fail("value")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

func (d *decoder) string() string {
	ref := d.uvarint()
	if d.err != nil {
		return ""
	}
	if ref > 0 {
		if ref > uint64(len(d.strs)) {
			if d.err == nil {
				d.err = fmt.Errorf("string reference %d of %d: %w", ref, len(d.strs), errCorrupt)
			}
			d.b = nil
			return ""
		}
		return d.strs[ref-1]
	}
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail("string")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	d.strs = append(d.strs, s)
	return s
}
