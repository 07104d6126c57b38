package embedded

import (
	"encoding/binary"
	"hash/maphash"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
)

// seriesEntry is what the store keeps of a series it has written: the
// engine's reference, and its labels (the head's own, shared, when the
// store created the series).
type seriesEntry struct {
	ref  storage.SeriesRef
	lset labels.Labels
}

// seriesCache maps series keys (see appendSeriesKey) to their entries, so a
// repeated series costs a hash and a map lookup instead of building and
// hashing labels. It is keyed by a 64-bit hash of the key rather than the
// key itself: the keys were the largest thing the store kept of its own, 80
// bytes a series, where the hash is 8 (issue 12).
//
// A hash names one series only after the entry's labels are compared with
// the key: two series of the same hash never share a reference. The first
// series learnt under a hash keeps its place in byHash; any other series of
// that hash goes to collided, under its whole key. The hash is seeded per
// store, so writers of the OpenTSDB API cannot choose series that collide.
//
// It is not safe for concurrent use; Store.cacheMu guards it.
type seriesCache struct {
	seed maphash.Seed
	// mask is ANDed with every hash: all ones, but in tests that force
	// collisions.
	mask     uint64
	byHash   map[uint64]seriesEntry
	collided map[string]seriesEntry
}

func newSeriesCache() seriesCache {
	return seriesCache{seed: maphash.MakeSeed(), mask: ^uint64(0), byHash: map[uint64]seriesEntry{}}
}

func (c *seriesCache) hash(key []byte) uint64 { return maphash.Bytes(c.seed, key) & c.mask }

// get returns the entry of the series of key.
func (c *seriesCache) get(key []byte) (seriesEntry, bool) {
	e, ok := c.byHash[c.hash(key)]
	if !ok {
		return seriesEntry{}, false
	}
	if keyOf(e.lset, key) {
		return e, true
	}
	e, ok = c.collided[string(key)]
	return e, ok
}

// set records e as the entry of the series of key.
func (c *seriesCache) set(key []byte, e seriesEntry) {
	h := c.hash(key)
	if cur, ok := c.byHash[h]; ok && !keyOf(cur.lset, key) {
		if c.collided == nil {
			c.collided = map[string]seriesEntry{}
		}
		c.collided[string(key)] = e
		return
	}
	c.byHash[h] = e
}

func (c *seriesCache) len() int { return len(c.byHash) + len(c.collided) }

func (c *seriesCache) clear() {
	clear(c.byHash)
	c.collided = nil
}

// keyOf reports whether key (see appendSeriesKey: the metric, then the tags
// sorted by name, each string after its length) is the series of lset (the
// metric as __name__, sorted among the tags). It allocates nothing.
func keyOf(lset labels.Labels, key []byte) bool {
	metric, rest, ok := cutKeyString(key)
	if !ok || lset.Get(nameLabel) != string(metric) {
		return false
	}
	same := true
	lset.Range(func(l labels.Label) {
		if !same || l.Name == nameLabel {
			return
		}
		var k, v []byte
		k, rest, same = cutKeyString(rest)
		if same {
			v, rest, same = cutKeyString(rest)
		}
		same = same && string(k) == l.Name && string(v) == l.Value
	})
	return same && len(rest) == 0
}

// cutKeyString cuts the first length-prefixed string off key.
func cutKeyString(key []byte) (s, rest []byte, ok bool) {
	n, w := binary.Uvarint(key)
	if w <= 0 || uint64(len(key)-w) < n {
		return nil, nil, false
	}
	return key[w : w+int(n)], key[w+int(n):], true
}
