package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"syscall"
	"time"
)

// bbolt maps the file and trusts its page pointers: a truncated file makes
// it touch memory past the end of the file (SIGBUS), a scribbled branch
// page sends it anywhere or round in circles. None of that is recoverable
// in Go, so before bbolt sees an existing file, preflight reads it and walks
// every page reachable from the current meta page with bounds checks: page
// ids inside the file, each page referenced once (no cycles), known page
// types, elements inside their page, the freelist disjoint from the tree.
// The format is bbolt's on-disk format version 2, unchanged since boltdb.

const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	pageHeaderSize   = 16
	elementSize      = 16 // leaf and branch elements alike
	bucketHeaderSize = 16
	metaSize         = 64
	noFreelist       = ^uint64(0)

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	leafIsBucket = 0x01

	maxDepth = 64
)

var ne = binary.NativeEndian // bbolt writes in the machine's byte order

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // high water mark: pages [0, hwm) are in use or free
	txid     uint64
}

// preflight takes a shared probe lock (so a running agent's writes are not
// mistaken for corruption, and a held store is reported as ErrLocked), then
// validates the file's structure.
func preflight(path string, opts Options) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open allocation store %s: %w", path, err)
	}
	defer f.Close()
	if err := lockShared(f, opts.LockTimeout); err != nil {
		return fmt.Errorf("open allocation store %s: no lock after %s (another terwayd running?): %w", path, opts.LockTimeout, ErrLocked)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("open allocation store %s: read: %w", path, err)
	}
	if err := checkBoltFile(data); err != nil {
		return fmt.Errorf("open allocation store %s: %w: %w", path, ErrCorrupt, err)
	}
	return nil
}

// lockShared polls for a shared flock; closing f releases it.
func lockShared(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil || !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkBoltFile validates data as a bbolt file. An empty file is fine:
// bbolt initialises it.
func checkBoltFile(data []byte) (err error) {
	defer func() {
		if r := recover(); r != nil { // a bounds check this code missed
			err = fmt.Errorf("unreadable page structure (%v)", r)
		}
	}()
	if len(data) == 0 {
		return nil
	}
	m, err := currentMeta(data)
	if err != nil {
		return err
	}
	ps := uint64(m.pageSize)
	if m.hwm < 2 || m.hwm > uint64(len(data))/ps {
		return fmt.Errorf("truncated: the file holds %d bytes (%d pages of %d), its metadata says %d pages", len(data), uint64(len(data))/ps, ps, m.hwm)
	}
	w := &walker{data: data, ps: ps, hwm: m.hwm, seen: map[uint64]bool{0: true, 1: true}}
	if err := w.page(m.root, 0); err != nil {
		return fmt.Errorf("root bucket: %w", err)
	}
	if m.freelist != noFreelist {
		if err := w.freelist(m.freelist); err != nil {
			return fmt.Errorf("freelist page %d: %w", m.freelist, err)
		}
	}
	return nil
}

// currentMeta picks the meta page bbolt would use: the valid one with the
// higher transaction id.
func currentMeta(data []byte) (boltMeta, error) {
	m0, err0 := parseMeta(data, 0)
	ps := os.Getpagesize() // where bbolt looks for meta 1 if meta 0 is bad
	if err0 == nil {
		ps = int(m0.pageSize)
	}
	m1, err1 := parseMeta(data, ps)
	switch {
	case err0 != nil && err1 != nil:
		return boltMeta{}, fmt.Errorf("not a bbolt file: meta page 0: %v; meta page 1: %v", err0, err1)
	case err0 != nil:
		return m1, nil
	case err1 != nil:
		return m0, nil
	case m1.txid > m0.txid:
		if m1.pageSize != m0.pageSize {
			return boltMeta{}, fmt.Errorf("meta pages disagree on the page size (%d, %d)", m0.pageSize, m1.pageSize)
		}
		return m1, nil
	default:
		return m0, nil
	}
}

func parseMeta(data []byte, off int) (boltMeta, error) {
	if off < 0 || len(data) < off+pageHeaderSize+metaSize {
		return boltMeta{}, fmt.Errorf("file too short (%d bytes)", len(data))
	}
	b := data[off+pageHeaderSize : off+pageHeaderSize+metaSize]
	if ne.Uint32(b[0:]) != boltMagic {
		return boltMeta{}, errors.New("no bbolt magic number")
	}
	if v := ne.Uint32(b[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("bbolt format version %d, want %d", v, boltVersion)
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:56])
	if h.Sum64() != ne.Uint64(b[56:]) {
		return boltMeta{}, errors.New("checksum mismatch")
	}
	m := boltMeta{
		pageSize: ne.Uint32(b[8:]),
		root:     ne.Uint64(b[16:]),
		freelist: ne.Uint64(b[32:]),
		hwm:      ne.Uint64(b[40:]),
		txid:     ne.Uint64(b[48:]),
	}
	if m.pageSize < 512 || m.pageSize > 1<<20 || m.pageSize&(m.pageSize-1) != 0 {
		return boltMeta{}, fmt.Errorf("page size %d is not a power of two in [512, 1MiB]", m.pageSize)
	}
	return m, nil
}

type walker struct {
	data []byte
	ps   uint64
	hwm  uint64
	seen map[uint64]bool
}

// span returns the bytes of page id and its overflow pages, marking them
// seen.
func (w *walker) span(id uint64, want uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page id %d outside [2, %d)", id, w.hwm)
	}
	off := id * w.ps
	hdr := w.data[off : off+pageHeaderSize]
	if got := ne.Uint64(hdr[0:]); got != id {
		return nil, fmt.Errorf("page %d calls itself page %d", id, got)
	}
	if flags := ne.Uint16(hdr[8:]); flags != want && !(want == flagBranch|flagLeaf && (flags == flagBranch || flags == flagLeaf)) {
		return nil, fmt.Errorf("page %d has type flags %#x, want %#x", id, flags, want)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if id+overflow >= w.hwm {
		return nil, fmt.Errorf("page %d overflows past page %d", id, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d is referenced twice", i)
		}
		w.seen[i] = true
	}
	return w.data[off : off+(overflow+1)*w.ps], nil
}

// page walks a tree page (branch or leaf) and the buckets below it.
func (w *walker) page(id uint64, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("page %d: tree deeper than %d", id, maxDepth)
	}
	p, err := w.span(id, flagBranch|flagLeaf)
	if err != nil {
		return err
	}
	return w.node(p, id, depth)
}

// node walks the elements of page p (a real page or an inline bucket).
func (w *walker) node(p []byte, id uint64, depth int) error {
	flags := ne.Uint16(p[8:])
	count := int(ne.Uint16(p[10:]))
	if pageHeaderSize+count*elementSize > len(p) {
		return fmt.Errorf("page %d: %d elements do not fit in %d bytes", id, count, len(p))
	}
	for i := range count {
		at := pageHeaderSize + i*elementSize
		e := p[at : at+elementSize]
		switch flags {
		case flagBranch:
			pos, ksize, child := int(ne.Uint32(e[0:])), int(ne.Uint32(e[4:])), ne.Uint64(e[8:])
			if at+pos+ksize > len(p) {
				return fmt.Errorf("page %d: branch key %d lies outside the page", id, i)
			}
			if err := w.page(child, depth+1); err != nil {
				return err
			}
		case flagLeaf:
			eflags, pos, ksize, vsize := ne.Uint32(e[0:]), int(ne.Uint32(e[4:])), int(ne.Uint32(e[8:])), int(ne.Uint32(e[12:]))
			start := at + pos + ksize
			if start < at || start+vsize > len(p) || start+vsize < start {
				return fmt.Errorf("page %d: leaf element %d lies outside the page", id, i)
			}
			if eflags&leafIsBucket == 0 {
				continue
			}
			v := p[start : start+vsize]
			if len(v) < bucketHeaderSize {
				return fmt.Errorf("page %d: bucket header %d is %d bytes", id, i, len(v))
			}
			if root := ne.Uint64(v[0:]); root != 0 {
				if err := w.page(root, depth+1); err != nil {
					return err
				}
				continue
			}
			inline := v[bucketHeaderSize:]
			if len(inline) < pageHeaderSize || ne.Uint16(inline[8:]) != flagLeaf {
				return fmt.Errorf("page %d: inline bucket %d is not a leaf", id, i)
			}
			if depth+1 > maxDepth {
				return fmt.Errorf("page %d: tree deeper than %d", id, maxDepth)
			}
			if err := w.node(inline, id, depth+1); err != nil {
				return err
			}
		default:
			return fmt.Errorf("page %d has type flags %#x, want a branch or leaf", id, flags)
		}
	}
	return nil
}

// freelist checks the freelist page: in bounds, and naming only pages the
// tree does not use (else the next write would overwrite live data).
func (w *walker) freelist(id uint64) error {
	p, err := w.span(id, flagFreelist)
	if err != nil {
		return err
	}
	count, start := uint64(ne.Uint16(p[10:])), uint64(pageHeaderSize)
	if count == 0xFFFF {
		if len(p) < pageHeaderSize+8 {
			return errors.New("freelist count does not fit")
		}
		count, start = ne.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if count > (uint64(len(p))-start)/8 {
		return fmt.Errorf("%d free page ids do not fit in %d bytes", count, len(p))
	}
	for i := range count {
		free := ne.Uint64(p[start+8*i:])
		if free < 2 || free >= w.hwm {
			return fmt.Errorf("free page id %d outside [2, %d)", free, w.hwm)
		}
		if w.seen[free] {
			return fmt.Errorf("page %d is both free and in use", free)
		}
	}
	return nil
}
