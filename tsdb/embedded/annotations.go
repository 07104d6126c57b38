package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dmonitor/dmonitor/tsdb"
)

var _ tsdb.Annotator = (*Store)(nil)

// annotationsFile is the bbolt database holding annotations, beside the
// engine's files in the store's directory (the engine only reads the
// directories it made).
const annotationsFile = "annotations.db"

// annotationsBucket holds one key per annotation: its TSUID, a 0 byte
// (never inside a TSUID) and its start in whole seconds as 8 big-endian
// bytes with the sign bit flipped, so a series' annotations are contiguous
// and sorted by start.
var annotationsBucket = []byte("annotations")

// storedAnnotation is an annotation as the database holds it.
type storedAnnotation struct {
	Start       int64             `json:"start"` // Unix seconds
	End         int64             `json:"end,omitempty"`
	TSUID       string            `json:"tsuid,omitempty"`
	Description string            `json:"description,omitempty"`
	Notes       string            `json:"notes,omitempty"`
	Custom      map[string]string `json:"custom,omitempty"`
}

// openAnnotations opens or creates the annotation database in dir.
func openAnnotations(dir string) (*bolt.DB, error) {
	path := filepath.Join(dir, annotationsFile)
	// The engine's lock already keeps a second Open out; the timeout only
	// guards against a stray process holding the file.
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: open annotations %s: %w", dir, path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(annotationsBucket)
		return err
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("embedded tsdb %s: init annotations %s: %w", dir, path, err), db.Close())
	}
	return db, nil
}

// annUsable says why an annotation call cannot use the database now, nil
// if it can. s.mu is held.
func (s *Store) annUsable() error {
	if s.closed {
		return ErrClosed
	}
	if s.ann == nil {
		return s.usable() // not opened yet, for the engine's reason
	}
	return nil
}

func annotationPrefix(tsuid string) []byte {
	return append([]byte(tsuid), 0)
}

func annotationKey(tsuid string, start int64) []byte {
	return binary.BigEndian.AppendUint64(annotationPrefix(tsuid), uint64(start)^1<<63)
}

// PutAnnotation stores a durably (the database is fsynced before it
// returns), replacing any annotation of the same TSUID and start. Times are
// kept in whole seconds, as OpenTSDB keeps them: a start within the same
// second replaces, and Annotations returns the times truncated. A zero
// Start wraps tsdb.ErrInvalid.
func (s *Store) PutAnnotation(ctx context.Context, a tsdb.Annotation) error {
	if a.Start.IsZero() {
		return fmt.Errorf("embedded tsdb %s: put annotation: no start time: %w", s.dir, tsdb.ErrInvalid)
	}
	if !a.End.IsZero() && a.End.Before(a.Start) {
		return fmt.Errorf("embedded tsdb %s: put annotation: end %s before start %s: %w",
			s.dir, a.End.UTC().Format(time.RFC3339), a.Start.UTC().Format(time.RFC3339), tsdb.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded tsdb %s: put annotation: %w", s.dir, err)
	}
	st := storedAnnotation{
		Start: a.Start.Unix(), TSUID: a.TSUID,
		Description: a.Description, Notes: a.Notes, Custom: a.Custom,
	}
	if !a.End.IsZero() {
		st.End = a.End.Unix()
	}
	val, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("embedded tsdb %s: put annotation: %w", s.dir, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.annUsable(); err != nil {
		return fmt.Errorf("embedded tsdb %s: put annotation: %w", s.dir, err)
	}
	err = s.ann.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(annotationsBucket).Put(annotationKey(a.TSUID, st.Start), val)
	})
	if err != nil {
		return fmt.Errorf("embedded tsdb %s: put annotation: %w", s.dir, err)
	}
	return nil
}

// Annotations returns the annotations of tsuid ("" for the global ones)
// that overlap [start, end], oldest first. An annotation without an end
// overlaps when its start lies in the range.
func (s *Store) Annotations(ctx context.Context, tsuid string, start, end time.Time) ([]tsdb.Annotation, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: annotations: %w", s.dir, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.annUsable(); err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: annotations: %w", s.dir, err)
	}
	lo, hi := start.Unix(), end.Unix()
	var out []tsdb.Annotation
	err := s.ann.View(func(tx *bolt.Tx) error {
		prefix := annotationPrefix(tsuid)
		c := tx.Bucket(annotationsBucket).Cursor()
		// An annotation that started before the range may still span
		// into it, so the scan starts at the series' first annotation.
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var st storedAnnotation
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("annotation %x: %w", k, err)
			}
			if st.Start > hi {
				break
			}
			if last := max(st.Start, st.End); last < lo {
				continue
			}
			out = append(out, st.annotation())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("embedded tsdb %s: annotations of %q: %w", s.dir, tsuid, err)
	}
	return out, nil
}

func (st storedAnnotation) annotation() tsdb.Annotation {
	a := tsdb.Annotation{
		Start: time.Unix(st.Start, 0).UTC(), TSUID: st.TSUID,
		Description: st.Description, Notes: st.Notes, Custom: st.Custom,
	}
	if st.End != 0 {
		a.End = time.Unix(st.End, 0).UTC()
	}
	return a
}

// DeleteAnnotation removes the annotation of tsuid starting in the second
// of start; an error wrapping tsdb.ErrNotFound when there is none.
func (s *Store) DeleteAnnotation(ctx context.Context, tsuid string, start time.Time) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded tsdb %s: delete annotation: %w", s.dir, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.annUsable(); err != nil {
		return fmt.Errorf("embedded tsdb %s: delete annotation: %w", s.dir, err)
	}
	key := annotationKey(tsuid, start.Unix())
	err := s.ann.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(annotationsBucket)
		if b.Get(key) == nil {
			return fmt.Errorf("annotation of %q at %s: %w", tsuid, start.UTC().Format(time.RFC3339), tsdb.ErrNotFound)
		}
		return b.Delete(key)
	})
	if err != nil {
		return fmt.Errorf("embedded tsdb %s: delete annotation: %w", s.dir, err)
	}
	return nil
}
