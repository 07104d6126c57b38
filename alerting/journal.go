package alerting

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrFenced is wrapped by the errors of a Journal that refuses a write
// because a newer leader has taken it over: this process is no longer the
// leader and must deliver nothing more. A Dispatcher that meets it stops
// delivering to every receiver; Send and Run return it from then on.
var ErrFenced = errors.New("fenced: a newer leader has taken over")

// Journal keeps one receiver's queue outside the Dispatcher, so that
// another Dispatcher, after a restart or on the next leader, takes it up
// where this one stopped. The Dispatcher makes one call at a time to it.
//
// An error wrapping ErrFenced from any method means the journal belongs to
// a newer leader now; the Dispatcher stops at once.
type Journal interface {
	// Append records n as queued behind everything appended before. On
	// another error the Dispatcher queues n in memory only, and logs it.
	Append(ctx context.Context, n *Notification) error
	// Attempt records that a delivery of the queued notification id is
	// about to begin, so that whoever takes the journal over knows the
	// receiver may have it already. Nothing is delivered unless it returns
	// nil; on another error the attempt waits and is tried again.
	Attempt(ctx context.Context, id string) error
	// Done records that the notification id was delivered, or dropped as
	// undeliverable: it is no longer queued, and its id is among the ones
	// remembered to drop duplicates. On another error the Dispatcher logs
	// it and carries on: the notification will be delivered again by
	// whoever opens the journal next, which is better than never.
	Done(ctx context.Context, id string) error
	// Close releases the journal. Nothing is called after it.
	Close() error
}

// Backlog is what a Journal held when it was opened.
type Backlog struct {
	// Pending are the notifications appended and not done, oldest first.
	Pending []Notification
	// Attempted are the ids in Pending whose delivery was begun and not
	// recorded as done: the receiver may have them already. They are
	// delivered again (at least once; the receiver drops a duplicate by id).
	Attempted []string
	// Done are the ids done lately, oldest first, at most remember of them:
	// a notification with one of them is not queued again.
	Done []string
}

// JournalFunc opens the journal of the receiver named receiver and returns
// what it holds. remember is how many done ids it is to keep.
type JournalFunc func(ctx context.Context, receiver string, remember int) (Journal, Backlog, error)

// The file journal of one receiver is a file of JSON lines, appended to:
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

// entry is a journaled notification and the seq of its send record.
type entry struct {
	seq uint64
	n   Notification
}

// fileJournal is one receiver's journal file, open for appending. It keeps
// what it needs to rewrite the file: the pending notifications and the ids
// done lately.
type fileJournal struct {
	path       string
	log        *slog.Logger
	f          *os.File
	size       int64 // of the file up to the last whole record
	records    int   // in the file
	compactMin int
	broken     error // set when the file could not be restored after a failed write

	remember int
	seq      uint64           // of the last send record
	pending  map[string]entry // by id
	done     []string         // oldest first, at most remember
}

var _ Journal = (*fileJournal)(nil)

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
// It returns the new file, open for appending, and its size.
func writeJournal(path string, done []string, pending []entry) (*os.File, int64, error) {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("rewrite notification journal: %w", err)
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
		return nil, 0, fmt.Errorf("rewrite notification journal %s: %w", path, err)
	}
	if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0); err != nil {
		return nil, 0, fmt.Errorf("open notification journal: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat notification journal: %w", err)
	}
	return f, fi.Size(), nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// openFileJournal replays the journal of receiver in dir and rewrites it
// with only what is live: the pending notifications and the last remember
// done ids.
func openFileJournal(dir, receiver string, remember int, logger *slog.Logger) (*fileJournal, Backlog, error) {
	path := filepath.Join(dir, journalName(receiver))
	r, err := readJournal(path)
	if err != nil {
		return nil, Backlog{}, err
	}
	if r.corrupt > 0 {
		logger.Error("notification journal has unreadable records, skipped", "receiver", receiver, "path", path, "records", r.corrupt)
	}
	if r.torn {
		logger.Warn("notification journal ends in a record cut short, ignored", "receiver", receiver, "path", path)
	}
	// Keep only what dedup remembers, so the rewritten file is small.
	if len(r.done) > remember {
		r.done = r.done[len(r.done)-remember:]
	}
	j := &fileJournal{
		path: path, log: logger.With("receiver", receiver), compactMin: defaultCompactMin,
		remember: remember, seq: r.lastSeq, pending: make(map[string]entry, len(r.pending)), done: r.done,
	}
	var b Backlog
	live := r.pending[:0]
	for _, e := range r.pending {
		// An id is queued once (Send drops a duplicate); a journal that
		// says otherwise keeps the first.
		if _, dup := j.pending[e.n.ID]; dup {
			continue
		}
		j.pending[e.n.ID] = e
		live = append(live, e)
		b.Pending = append(b.Pending, e.n)
	}
	if j.f, j.size, err = writeJournal(path, r.done, live); err != nil {
		return nil, Backlog{}, err
	}
	j.records = len(r.done) + len(live)
	b.Done = slices.Clone(r.done)
	return j, b, nil
}

// Append writes a send record for n. It never blocks on anything but the
// file, so ctx is not consulted.
func (j *fileJournal) Append(_ context.Context, n *Notification) error {
	j.seq++
	if err := j.append(record{Op: opSend, Seq: j.seq, N: n}); err != nil {
		return err
	}
	j.pending[n.ID] = entry{seq: j.seq, n: *n}
	return nil
}

// Attempt records nothing: the file journal's process is the only one that
// delivers from it, so nobody needs to know.
func (j *fileJournal) Attempt(context.Context, string) error { return nil }

// Done writes a done record for id, and rewrites the file when most of it
// is dead.
func (j *fileJournal) Done(_ context.Context, id string) error {
	// A notification whose send record could not be written has seq 0,
	// which no send record has: the done record only remembers its id.
	seq := j.pending[id].seq
	delete(j.pending, id)
	j.done = append(j.done, id)
	if len(j.done) > j.remember {
		j.done[0] = ""
		j.done = j.done[1:]
	}
	if err := j.append(record{Op: opDone, Seq: seq, ID: id}); err != nil {
		return err
	}
	if j.due(len(j.pending) + len(j.done)) {
		j.compact()
	}
	return nil
}

// compact rewrites the file with only what is live. A failure leaves the
// old file, intact and open, in use.
func (j *fileJournal) compact() {
	live := slices.SortedFunc(maps.Values(j.pending), func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	f, size, err := writeJournal(j.path, j.done, live)
	if err != nil {
		j.log.Error("notification journal not compacted", "err", err)
		j.compactMin *= 2 // do not retry on every record
		return
	}
	if err := j.f.Close(); err != nil {
		j.log.Warn("close old notification journal", "err", err)
	}
	j.f, j.size, j.records, j.broken = f, size, len(j.done)+len(live), nil
}

// append writes rec as one line with one write(2). After a failed write
// the file is cut back to its last whole record, so the next record does
// not run into a torn one.
func (j *fileJournal) append(rec record) error {
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
func (j *fileJournal) due(live int) bool {
	return j.records >= j.compactMin && j.records >= 2*live
}

// Close closes the file.
func (j *fileJournal) Close() error {
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
