package filesystem

import (
	"cmp"
	"context"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/berth-registry/berth/storage/driver"
)

// List implements driver.Driver.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	full, err := d.full("list", p)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(full)
	if err != nil {
		return nil, wrap("list", p, err)
	}
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) || (p == "/" && e.Name() == journalDir) {
			continue
		}
		out = append(out, path.Join(p, e.Name()))
	}
	return out, nil
}

// ListPage implements driver.Driver. A directory is read whole (that is
// one system call per few hundred entries, and what the kernel offers);
// the page is cut from it without a stat per entry, and sorted once, by
// key, without building the keys (os.ReadDir would sort it by name first).
func (d *Driver) ListPage(ctx context.Context, p, after string, limit int) ([]driver.Entry, error) {
	full, err := d.full("list", p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(full)
	if err != nil {
		return nil, wrap("list", p, err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return nil, wrap("list", p, err)
	}
	out := make([]driver.Entry, 0, len(entries))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) || (p == "/" && e.Name() == journalDir) {
			continue
		}
		if ent := (driver.Entry{Name: e.Name(), IsDir: e.IsDir()}); keyAfter(ent, after) {
			out = append(out, ent)
		}
	}
	if limit > 0 && len(out) > limit {
		// The first page of a large directory: find its entries without
		// sorting the rest.
		selectKeys(out, limit)
		out = out[:limit]
	}
	slices.SortFunc(out, compareKeys)
	return out, nil
}

// selectKeys reorders es so that its k entries of smallest key come
// first, in no particular order (quickselect: expected time linear in
// len(es)); 0 < k < len(es).
func selectKeys(es []driver.Entry, k int) {
	lo, hi := 0, len(es) // the k-th smallest lies in es[lo:hi]
	for hi-lo > 1 {
		// Median of three as the pivot, moved to es[lo].
		mid := lo + (hi-lo)/2
		if compareKeys(es[mid], es[lo]) < 0 {
			es[mid], es[lo] = es[lo], es[mid]
		}
		if compareKeys(es[hi-1], es[lo]) < 0 {
			es[hi-1], es[lo] = es[lo], es[hi-1]
		}
		if compareKeys(es[hi-1], es[mid]) < 0 {
			es[hi-1], es[mid] = es[mid], es[hi-1]
		}
		es[lo], es[mid] = es[mid], es[lo]
		// Partition es[lo+1:hi] around the pivot: smaller ones first.
		p := lo
		for i := lo + 1; i < hi; i++ {
			if compareKeys(es[i], es[lo]) < 0 {
				p++
				es[p], es[i] = es[i], es[p]
			}
		}
		es[lo], es[p] = es[p], es[lo] // the pivot is in its sorted place
		switch {
		case p == k || p == k-1:
			return
		case p > k:
			hi = p
		default:
			lo = p + 1
		}
	}
}

// compareKeys compares the keys of a and b (see driver.Entry.Key).
func compareKeys(a, b driver.Entry) int {
	n := min(len(a.Name), len(b.Name))
	if c := strings.Compare(a.Name[:n], b.Name[:n]); c != 0 {
		return c
	}
	// One name is a prefix of the other: the next bytes of the keys decide
	// (names hold no '/', so they differ unless the keys are equal).
	return cmp.Compare(keyByte(a, n), keyByte(b, n))
}

// keyByte is byte i of e's key, or -1 past its end; i ≤ len(e.Name).
func keyByte(e driver.Entry, i int) int {
	switch {
	case i < len(e.Name):
		return int(e.Name[i])
	case e.IsDir:
		return '/'
	}
	return -1
}

// keyAfter reports whether e's key sorts after after.
func keyAfter(e driver.Entry, after string) bool {
	n := min(len(e.Name), len(after))
	if c := strings.Compare(e.Name[:n], after[:n]); c != 0 {
		return c > 0
	}
	switch {
	case len(e.Name) > n: // after is a proper prefix of the name
		return true
	case !e.IsDir: // the key is after or a prefix of it
		return false
	case len(after) == n: // the key is after and "/"
		return true
	}
	return after[n] < '/'
}
