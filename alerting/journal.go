package alerting

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The journal of one receiver is a file of JSON lines, appended to:
//
//	{"op":"send","seq":7,"n":{...the Notification...}}   queued by Send
//	{"op":"done","seq":7,"id":"..."}                       delivered or dropped
//
// Replaying it gives the queue (the sends without a done, in seq order) and
// the ids recently done. Each record is one write(2), made before Send
// returns, so a record survives the process being killed; it does not
// survive a power loss unless the kernel had written it back (no fsync per
// record: a notification a second would cost a disk flush each). A record
// torn by a crash is the last line and is ignored.
const (
	opSend = "send"
	opDone = "done"
)

// defaultCompactMin is the number of records below which a journal is never
// rewritten, however much of it is dead.
const defaultCompactMin = 1024

type record struct {
	Op  string        `json:"op"`
	Seq uint64        `json:"seq"`
	ID  string        `json:"id,omitempty"` // done
	N   *Notification `json:"n,omitempty"`  // send
}

// entry is a queued notification and the seq of its send record.
type entry struct {
	seq uint64
	n   Notification
}

// journal is one receiver's journal file, open for appending. It is used
// under its queue's lock.
type journal struct {
	path       string
	f          *os.File
	size       int64 // of the file up to the last whole record
	records    int   // in the file
	compactMin int
	broken     error // set when the file could not be restored after a failed write
}

// journalName returns the file name of the journal of receiver: the name
// with every byte outside [A-Za-z0-9._-] written as %XX, so any receiver
// name gives one plain file in the directory.
func journalName(receiver string) string {
	var b strings.Builder
	b.WriteString("receiver-")
	for i := 0; i < len(receiver); i++ {
		c := receiver[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	b.WriteString(".journal")
	return b.String()
}

// replay is what a journal file holds.
type replay struct {
	pending []entry
	done    []string // ids, oldest first
	lastSeq uint64
	corrupt int // records skipped as unreadable, not counting a torn last one
	torn    bool
}

// readJournal replays the journal at path; a missing file is an empty one.
func readJournal(path string) (replay, error) {
	var r replay
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("open notification journal: %w", err)
	}
	defer f.Close()
	var order []uint64
	bySeq := make(map[uint64]Notification)
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			// A last line without its newline is a write cut short by a
			// crash: its Send did not return.
			r.torn = len(bytes.TrimSpace(line)) > 0
			break
		}
		if err != nil {
			return r, fmt.Errorf("read notification journal %s: %w", path, err)
		}
		var rec record
		if err := json.Unmarshal(line, &rec); err != nil {
			r.corrupt++
			continue
		}
		r.lastSeq = max(r.lastSeq, rec.Seq)
		switch {
		case rec.Op == opSend && rec.N != nil:
			if _, ok := bySeq[rec.Seq]; !ok {
				order = append(order, rec.Seq)
			}
			bySeq[rec.Seq] = *rec.N
		case rec.Op == opDone:
			delete(bySeq, rec.Seq)
			if rec.ID != "" {
				r.done = append(r.done, rec.ID)
			}
		default:
			r.corrupt++
		}
	}
	for _, seq := range order {
		if n, ok := bySeq[seq]; ok {
			r.pending = append(r.pending, entry{seq: seq, n: n})
		}
	}
	return r, nil
}

// writeJournal replaces the journal at path with one holding done (ids) and
// pending, atomically: a crash leaves either the old file or the new one.
// It returns the new file, open for appending.
func writeJournal(path string, done []string, pending []entry) (*journal, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rewrite notification journal: %w", err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w) // Encode ends each record with "\n"
	for _, id := range done {
		err = errors.Join(err, enc.Encode(record{Op: opDone, ID: id}))
	}
	for _, e := range pending {
		err = errors.Join(err, enc.Encode(record{Op: opSend, Seq: e.seq, N: &e.n}))
	}
	err = errors.Join(err, w.Flush())
	// The rename must not reach the disk before the data it points to.
	err = errors.Join(err, f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("rewrite notification journal %s: %w", path, err)
	}
	j := &journal{path: path, records: len(done) + len(pending), compactMin: defaultCompactMin}
	if j.f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		return nil, fmt.Errorf("open notification journal: %w", err)
	}
	fi, err := j.f.Stat()
	if err != nil {
		j.f.Close()
		return nil, fmt.Errorf("stat notification journal: %w", err)
	}
	j.size = fi.Size()
	return j, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// append writes rec as one line with one write(2). After a failed write
// the file is cut back to its last whole record, so the next record does
// not run into a torn one.
func (j *journal) append(rec record) error {
	if j.broken != nil {
		return j.broken
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode journal record: %w", err)
	}
	line = append(line, '\n')
	n, err := j.f.Write(line)
	if err != nil {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken = fmt.Errorf("notification journal %s unusable after a failed write: %w", j.path, terr)
		}
		return fmt.Errorf("append to notification journal: %w", err)
	}
	j.size += int64(n)
	j.records++
	return nil
}

// due reports whether the journal should be rewritten: it has grown past
// its minimum and at least half of it is dead records.
func (j *journal) due(live int) bool {
	return j.records >= j.compactMin && j.records >= 2*live
}

func (j *journal) close() error {
	if j == nil || j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
