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
//
// An annotation record's payload is one annotation, its strings in the same
// scheme:
//
//	start   varint Unix seconds, uvarint nanos
//	end     uvarint 0 for none (a moment), or 1 then varint seconds, uvarint nanos
//	tsuid, description, notes  string
//	ncustom uvarint, then ncustom × (key string, value string)

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

// appendAnnotation appends the payload of one annotation record to buf.
func (e *encoder) appendAnnotation(buf []byte, a tsdb.Annotation) []byte {
	clear(e.strs)
	buf = appendTime(buf, a.Start)
	if a.End.IsZero() {
		buf = append(buf, 0)
	} else {
		buf = append(buf, 1)
		buf = appendTime(buf, a.End)
	}
	buf = e.appendString(buf, a.TSUID)
	buf = e.appendString(buf, a.Description)
	buf = e.appendString(buf, a.Notes)
	buf = binary.AppendUvarint(buf, uint64(len(a.Custom)))
	for k, v := range a.Custom {
		buf = e.appendString(buf, k)
		buf = e.appendString(buf, v)
	}
	return buf
}

func appendTime(buf []byte, t time.Time) []byte {
	buf = binary.AppendVarint(buf, t.Unix())
	return binary.AppendUvarint(buf, uint64(t.Nanosecond()))
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

// decodeAnnotation decodes the payload of an annotation record. Times come
// back in UTC; a zero time stays zero.
func decodeAnnotation(b []byte) (tsdb.Annotation, error) {
	d := decoder{b: b}
	var a tsdb.Annotation
	a.Start = d.time()
	switch hasEnd := d.uvarint(); hasEnd {
	case 0:
	case 1:
		a.End = d.time()
	default:
		if d.err == nil {
			return a, fmt.Errorf("annotation: end flag %d: %w", hasEnd, errCorrupt)
		}
	}
	a.TSUID = d.string()
	a.Description = d.string()
	a.Notes = d.string()
	ncustom := d.uvarint()
	if ncustom > uint64(len(d.b)) { // each pair takes at least two bytes
		return a, fmt.Errorf("annotation: %d custom fields in %d bytes: %w", ncustom, len(d.b), errCorrupt)
	}
	if ncustom > 0 {
		a.Custom = make(map[string]string, ncustom)
		for range ncustom {
			k := d.string()
			a.Custom[k] = d.string()
		}
	}
	if d.err != nil {
		return a, fmt.Errorf("annotation: %w", d.err)
	}
	if len(d.b) != 0 {
		return a, fmt.Errorf("annotation: %d bytes after it: %w", len(d.b), errCorrupt)
	}
	return a, nil
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

// time reads a time as appendTime writes it.
func (d *decoder) time() time.Time {
	sec := d.varint()
	nsec := d.uvarint()
	if d.err != nil {
		return time.Time{}
	}
	if nsec >= uint64(time.Second) {
		d.err = fmt.Errorf("%d nanoseconds: %w", nsec, errCorrupt)
		d.b = nil
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
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
