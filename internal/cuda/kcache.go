package cuda

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// The on-disk kernel cache (ARCHITECTURE.md, decision 2). One file per
// compiled module, named by its key:
//
//	<dir>/<hex sha256 key>.cubin
//
// The key is sha256 over the module name, the sha256 of its expanded
// source, the NVRTC options, the NVRTC version and the target architecture,
// so any change to one of them misses. A file is
//
//	magic "RAPTORKC" | format u32 LE | reserved u32 | key [32] | len u64 LE | sha256(payload) [32] | payload
//
// and is written atomically (a temporary file in the same directory, synced,
// then renamed over the final name), so concurrent writers — goroutines or
// processes — never expose a partial entry: readers see the old entry, the
// new one, or none. An entry whose magic, format, key, length or checksum
// does not match is reported corrupt; the caller recompiles and overwrites
// it.
const (
	kcMagic   = "RAPTORKC"
	kcFormat  = 1
	kcHdrSize = 8 + 4 + 4 + 32 + 8 + 32
	kcMaxSize = 256 << 20 // a cubin larger than this is not ours
)

// cacheKey identifies one compiled module.
type cacheKey [32]byte

func (k cacheKey) String() string { return hex.EncodeToString(k[:]) }

// makeCacheKey derives the key of module name compiled from src with opts by
// NVRTC version nvrtcVer for arch.
func makeCacheKey(name, src string, opts []string, nvrtcVer, arch string) cacheKey {
	srcSum := sha256.Sum256([]byte(src))
	h := sha256.New()
	fmt.Fprintf(h, "raptor-kernel-cache/%d\x00%s\x00%x\x00%s\x00%s\x00%s", kcFormat, name, srcSum,
		strings.Join(opts, "\x01"), nvrtcVer, arch)
	var k cacheKey
	copy(k[:], h.Sum(nil))
	return k
}

// diskCache is the cubin cache in one directory. A zero dir disables it.
type diskCache struct {
	dir string
}

// errCacheMiss reports an absent entry.
var errCacheMiss = errors.New("not cached")

func (c diskCache) path(k cacheKey) string { return filepath.Join(c.dir, k.String()+".cubin") }

// get returns the payload stored under k, errCacheMiss when there is none,
// or an error saying why the entry is corrupt.
func (c diskCache) get(k cacheKey) ([]byte, error) {
	if c.dir == "" {
		return nil, errCacheMiss
	}
	b, err := os.ReadFile(c.path(k))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errCacheMiss
	}
	if err != nil {
		return nil, err
	}
	return decodeEntry(b, k)
}

func decodeEntry(b []byte, k cacheKey) ([]byte, error) {
	if len(b) < kcHdrSize {
		return nil, fmt.Errorf("truncated entry (%d bytes)", len(b))
	}
	if string(b[:8]) != kcMagic {
		return nil, errors.New("bad magic")
	}
	if f := binary.LittleEndian.Uint32(b[8:]); f != kcFormat {
		return nil, fmt.Errorf("format %d, want %d", f, kcFormat)
	}
	if !bytes.Equal(b[16:48], k[:]) {
		return nil, errors.New("key mismatch")
	}
	n := binary.LittleEndian.Uint64(b[48:])
	if n > kcMaxSize || uint64(len(b)-kcHdrSize) != n {
		return nil, fmt.Errorf("length %d, file holds %d", n, len(b)-kcHdrSize)
	}
	payload := b[kcHdrSize:]
	sum := sha256.Sum256(payload)
	if !bytes.Equal(sum[:], b[56:88]) {
		return nil, errors.New("checksum mismatch")
	}
	return payload, nil
}

func encodeEntry(k cacheKey, payload []byte) []byte {
	b := make([]byte, kcHdrSize+len(payload))
	copy(b, kcMagic)
	binary.LittleEndian.PutUint32(b[8:], kcFormat)
	copy(b[16:48], k[:])
	binary.LittleEndian.PutUint64(b[48:], uint64(len(payload)))
	sum := sha256.Sum256(payload)
	copy(b[56:88], sum[:])
	copy(b[kcHdrSize:], payload)
	return b
}

// put stores payload under k atomically.
func (c diskCache) put(k cacheKey, payload []byte) error {
	if c.dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(c.dir, ".tmp-"+k.String()[:16]+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, werr := f.Write(encodeEntry(k, payload))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, c.path(k)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// remove deletes the entry under k, if any.
func (c diskCache) remove(k cacheKey) {
	if c.dir != "" {
		os.Remove(c.path(k))
	}
}

// keyLocks serialises work on one key within the process, so two goroutines
// needing the same module compile it once.
type keyLocks struct {
	mu sync.Mutex
	m  map[cacheKey]*sync.Mutex
}

func (l *keyLocks) lock(k cacheKey) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[cacheKey]*sync.Mutex{}
	}
	m := l.m[k]
	if m == nil {
		m = &sync.Mutex{}
		l.m[k] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// cacheOutcome says where a cubin came from.
type cacheOutcome string

const (
	fromDisk     cacheOutcome = "disk cache"
	fromCompile  cacheOutcome = "compiled"
	fromRecovery cacheOutcome = "recompiled (corrupt cache entry)"
)

var processKeyLocks keyLocks

// cachedCompile returns the cubin for k from the disk cache, or compiles it
// and stores it. A corrupt entry is logged through logf, recompiled and
// overwritten. A failure to write the cache is logged and otherwise ignored.
func cachedCompile(c diskCache, k cacheKey, what string, logf func(string, ...any), compile func() ([]byte, error)) ([]byte, cacheOutcome, error) {
	unlock := processKeyLocks.lock(k)
	defer unlock()
	outcome := fromCompile
	payload, err := c.get(k)
	switch {
	case err == nil:
		return payload, fromDisk, nil
	case errors.Is(err, errCacheMiss):
	default:
		logf("cuda: kernel cache entry %s for %s is corrupt (%v); recompiling", c.path(k), what, err)
		outcome = fromRecovery
	}
	payload, err = compile()
	if err != nil {
		return nil, outcome, err
	}
	if err := c.put(k, payload); err != nil {
		logf("cuda: cannot write kernel cache entry for %s: %v", what, err)
	}
	return payload, outcome, nil
}
