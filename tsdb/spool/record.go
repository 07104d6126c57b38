package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/dmonitor/dmonitor/tsdb"
)

// A segment file is a sequence of records, each a header and a payload:
//
//	length  uint32 LE, bytes of payload
//	count   uint32 LE, the record's kind in the high 8 bits and the number
//	        of entries in payload in the low 24
//	crc     uint32 LE, CRC-32C of length, count and payload
//	payload the entries (codec.go)
//
// Kind 0 is points, 1 to 1024 of them; it is the only kind segments held
// before annotations were spooled, when the field counted points alone, so
// those segments read as they are. Kind 1 is one annotation. A spool that
// does not know kind 1 (an older binary) reads such a record as damage and
// cuts its segment off there, so going back to it loses the spooled
// entries from the first annotation on.
//
// A record is written with one write(2), after which it survives the
// process being killed. A record cut short or damaged (a kernel crash, a
// power loss, a full disk) fails its length or checksum and is cut off at
// open, with everything after it in its segment: a record is never
// misread.
const headerSize = 12

// maxRecordPoints bounds the points in one record. An Append of more is
// written as several records, so a record stays small enough to read whole
// and a refused point in replay costs at most this many others their
// batch (see replayer.deliver).
const maxRecordPoints = 1024

// kind is what a record holds.
type kind uint8

const (
	kindPoints     kind = 0
	kindAnnotation kind = 1
)

// maxCount is the largest entry count a header's count field can hold.
const maxCount = 1<<24 - 1

// maxPayload bounds a record's payload. A larger length field is damage;
// a larger batch of real points is refused (ErrInvalid).
const maxPayload = 64 << 20

// minPointBytes is the smallest encoding of a point: a metric reference,
// a tag count, two time fields of one byte and the value.
const minPointBytes = 12

// minAnnotationBytes is the smallest encoding of an annotation: a start of
// two bytes, an end flag, the TSUID as a new string of two bytes, two
// string references and a custom count.
const minAnnotationBytes = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errDamaged is returned by recordReader.next for bytes that are not a
// whole, valid record.
var errDamaged = errors.New("damaged record")

// appendRecords appends pts to buf as records of at most maxRecordPoints
// points each.
func (e *encoder) appendRecords(buf []byte, pts []tsdb.Point) ([]byte, error) {
	for len(pts) > 0 {
		n := min(len(pts), maxRecordPoints)
		start := len(buf)
		buf = append(buf, make([]byte, headerSize)...)
		buf = e.appendPayload(buf, pts[:n])
		if err := seal(buf[start:], kindPoints, n); err != nil {
			return buf, fmt.Errorf("%d points: %w", n, err)
		}
		pts = pts[n:]
	}
	return buf, nil
}

// appendAnnotationRecord appends a to buf as one record.
func (e *encoder) appendAnnotationRecord(buf []byte, a tsdb.Annotation) ([]byte, error) {
	start := len(buf)
	buf = append(buf, make([]byte, headerSize)...)
	buf = e.appendAnnotation(buf, a)
	if err := seal(buf[start:], kindAnnotation, 1); err != nil {
		return buf, fmt.Errorf("annotation: %w", err)
	}
	return buf, nil
}

// seal fills in the header of rec, a record whose payload follows its
// header space, holding n entries of kind k.
func seal(rec []byte, k kind, n int) error {
	payload := len(rec) - headerSize
	if payload > maxPayload {
		return fmt.Errorf("encodes to %d bytes, over the record limit of %d: %w", payload, maxPayload, tsdb.ErrInvalid)
	}
	h := rec[:headerSize]
	binary.LittleEndian.PutUint32(h[0:], uint32(payload))
	binary.LittleEndian.PutUint32(h[4:], uint32(k)<<24|uint32(n))
	crc := crc32.Update(crc32.Checksum(h[:8], castagnoli), castagnoli, rec[headerSize:])
	binary.LittleEndian.PutUint32(h[8:], crc)
	return nil
}

// header returns the kind, entry count and whole length of the record at
// the start of b, which appendRecords or appendAnnotationRecord wrote.
func header(b []byte) (k kind, n int, size int) {
	count := binary.LittleEndian.Uint32(b[4:])
	return kind(count >> 24), int(count & maxCount), headerSize + int(binary.LittleEndian.Uint32(b[0:]))
}

// recordReader reads the records of a segment file between two offsets.
type recordReader struct {
	br      *bufio.Reader
	off     int64 // where the next record starts
	limit   int64
	hdr     [headerSize]byte
	payload []byte
}

func newRecordReader(f *os.File, off, limit int64, buf *bufio.Reader) *recordReader {
	sr := io.NewSectionReader(f, off, limit-off)
	if buf == nil {
		buf = bufio.NewReaderSize(sr, 256<<10)
	} else {
		buf.Reset(sr)
	}
	return &recordReader{br: buf, off: off, limit: limit}
}

// next reads the record at r.off and advances past it, returning its
// kind, its number of entries and its payload. It returns io.EOF at the
// limit, an error wrapping errDamaged when the bytes from r.off on are not
// a whole valid record, or an I/O error. The payload is valid until the
// next call.
func (r *recordReader) next() (k kind, n int, payload []byte, err error) {
	if r.off == r.limit {
		return 0, 0, nil, io.EOF
	}
	if r.limit-r.off < headerSize {
		return 0, 0, nil, fmt.Errorf("offset %d: %d bytes, short of a header: %w", r.off, r.limit-r.off, errDamaged)
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return 0, 0, nil, fmt.Errorf("offset %d: %w", r.off, err)
	}
	if err := checkHeader(r.hdr[:]); err != nil {
		return 0, 0, nil, fmt.Errorf("offset %d: %w", r.off, err)
	}
	k, n, size := header(r.hdr[:])
	length := int64(size - headerSize)
	if r.off+int64(size) > r.limit {
		return 0, 0, nil, fmt.Errorf("offset %d: record of %d bytes runs past the end at %d: %w", r.off, size, r.limit, errDamaged)
	}
	if int64(cap(r.payload)) < length {
		r.payload = make([]byte, length)
	}
	r.payload = r.payload[:length]
	if _, err := io.ReadFull(r.br, r.payload); err != nil {
		return 0, 0, nil, fmt.Errorf("offset %d: %w", r.off, err)
	}
	crc := crc32.Update(crc32.Checksum(r.hdr[:8], castagnoli), castagnoli, r.payload)
	if crc != binary.LittleEndian.Uint32(r.hdr[8:]) {
		return 0, 0, nil, fmt.Errorf("offset %d: checksum mismatch: %w", r.off, errDamaged)
	}
	r.off += int64(size)
	return k, n, r.payload, nil
}

// checkHeader returns an error wrapping errDamaged unless h is a header
// that a record of a known kind can have.
func checkHeader(h []byte) error {
	k, n, size := header(h)
	length := size - headerSize
	var ok bool
	switch k {
	case kindPoints:
		ok = n > 0 && n <= maxRecordPoints && length >= n*minPointBytes
	case kindAnnotation:
		ok = n == 1 && length >= minAnnotationBytes
	}
	if !ok || length > maxPayload {
		return fmt.Errorf("header says kind %d, %d entries in %d bytes: %w", k, n, length, errDamaged)
	}
	return nil
}

// position is a place in the spool: a segment and an offset in it.
type position struct {
	seq uint64
	off int64
}

// The cursor file holds the replay position, the first byte not yet
// delivered: sequence, offset (uint64 LE each) and a CRC-32C of both. It is
// rewritten in place with one pwrite(2) of 20 bytes, which a killed
// process cannot leave half done; a damaged cursor (a power loss) is
// detected and replay starts over at the oldest segment, which repeats
// deliveries rather than skipping any.
const cursorSize = 20

func encodeCursor(p position) [cursorSize]byte {
	var b [cursorSize]byte
	binary.LittleEndian.PutUint64(b[0:], p.seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(p.off))
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], castagnoli))
	return b
}

// decodeCursor returns the position in b, or false if b is not a valid
// cursor.
func decodeCursor(b []byte) (position, bool) {
	if len(b) != cursorSize || crc32.Checksum(b[:16], castagnoli) != binary.LittleEndian.Uint32(b[16:]) {
		return position{}, false
	}
	p := position{seq: binary.LittleEndian.Uint64(b[0:]), off: int64(binary.LittleEndian.Uint64(b[8:]))}
	return p, p.off >= 0
}
