package cuda

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestCacheKeyCoversInputs(t *testing.T) {
	base := makeCacheKey("m", "src", []string{"-a"}, "13.0", "sm_90a")
	for i, k := range []cacheKey{
		makeCacheKey("n", "src", []string{"-a"}, "13.0", "sm_90a"),
		makeCacheKey("m", "src2", []string{"-a"}, "13.0", "sm_90a"),
		makeCacheKey("m", "src", []string{"-b"}, "13.0", "sm_90a"),
		makeCacheKey("m", "src", []string{"-a", ""}, "13.0", "sm_90a"),
		makeCacheKey("m", "src", []string{"-a"}, "13.2", "sm_90a"),
		makeCacheKey("m", "src", []string{"-a"}, "13.0", "sm_80"),
	} {
		if k == base {
			t.Errorf("variant %d has the base key", i)
		}
	}
	if makeCacheKey("m", "src", []string{"-a"}, "13.0", "sm_90a") != base {
		t.Error("key not deterministic")
	}
}

func TestDiskCacheRoundTripAndCorruption(t *testing.T) {
	c := diskCache{dir: t.TempDir()}
	k := makeCacheKey("m", "src", nil, "13.0", "sm_90a")
	if _, err := c.get(k); !errors.Is(err, errCacheMiss) {
		t.Fatalf("empty cache: %v", err)
	}
	payload := bytes.Repeat([]byte("cubin!"), 1000)
	if err := c.put(k, payload); err != nil {
		t.Fatal(err)
	}
	got, err := c.get(k)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("round trip: %v", err)
	}
	good, _ := os.ReadFile(c.path(k))
	corrupt := map[string]func([]byte) []byte{
		"truncated":     func(b []byte) []byte { return b[:len(b)-1] },
		"header only":   func(b []byte) []byte { return b[:kcHdrSize-3] },
		"bad magic":     func(b []byte) []byte { b[0] ^= 1; return b },
		"bad format":    func(b []byte) []byte { b[8]++; return b },
		"other key":     func(b []byte) []byte { b[20] ^= 0x80; return b },
		"bad length":    func(b []byte) []byte { b[48]++; return b },
		"payload flip":  func(b []byte) []byte { b[kcHdrSize+100] ^= 4; return b },
		"checksum flip": func(b []byte) []byte { b[60] ^= 1; return b },
		"empty":         func(b []byte) []byte { return nil },
	}
	for name, f := range corrupt {
		b := f(bytes.Clone(good))
		if err := os.WriteFile(c.path(k), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := c.get(k); err == nil || errors.Is(err, errCacheMiss) {
			t.Errorf("%s: corruption not detected (err %v)", name, err)
		}
	}
	// A file stored under another key's name is caught by the key check.
	k2 := makeCacheKey("m2", "src", nil, "13.0", "sm_90a")
	os.WriteFile(c.path(k2), good, 0o644)
	if _, err := c.get(k2); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("moved entry: %v", err)
	}
}

func TestCachedCompileRecoversCorruptEntry(t *testing.T) {
	c := diskCache{dir: t.TempDir()}
	k := makeCacheKey("m", "src", nil, "13.0", "sm_90a")
	var compiles int
	compile := func() ([]byte, error) { compiles++; return []byte(fmt.Sprintf("cubin %d", compiles)), nil }
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }

	p, out, err := cachedCompile(c, k, "m", logf, compile)
	if err != nil || out != fromCompile || string(p) != "cubin 1" {
		t.Fatalf("first: %q %s %v", p, out, err)
	}
	p, out, err = cachedCompile(c, k, "m", logf, compile)
	if err != nil || out != fromDisk || string(p) != "cubin 1" || compiles != 1 {
		t.Fatalf("second: %q %s %v (compiles %d)", p, out, err, compiles)
	}
	b, _ := os.ReadFile(c.path(k))
	b[len(b)-1] ^= 0xff
	os.WriteFile(c.path(k), b, 0o644)
	p, out, err = cachedCompile(c, k, "m", logf, compile)
	if err != nil || out != fromRecovery || string(p) != "cubin 2" {
		t.Fatalf("after corruption: %q %s %v", p, out, err)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "corrupt") || !strings.Contains(logs[0], "checksum") {
		t.Fatalf("logs: %q", logs)
	}
	if got, err := c.get(k); err != nil || string(got) != "cubin 2" {
		t.Fatalf("entry not rewritten: %q %v", got, err)
	}
	// A failing compile is reported, and nothing is written.
	k3 := makeCacheKey("bad", "src", nil, "13.0", "sm_90a")
	_, _, err = cachedCompile(c, k3, "bad", logf, func() ([]byte, error) { return nil, errors.New("syntax error") })
	if err == nil {
		t.Fatal("compile error swallowed")
	}
	if _, err := c.get(k3); !errors.Is(err, errCacheMiss) {
		t.Fatalf("failed compile left an entry: %v", err)
	}
}

func TestCachedCompileConcurrent(t *testing.T) {
	dir := t.TempDir()
	k := makeCacheKey("m", "src", nil, "13.0", "sm_90a")
	var compiles atomic.Int32
	compile := func() ([]byte, error) {
		compiles.Add(1)
		return bytes.Repeat([]byte{7}, 1<<16), nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Separate diskCache values on one directory, as separate
			// devices (or processes) would have.
			p, _, err := cachedCompile(diskCache{dir: dir}, k, "m", func(string, ...any) {}, compile)
			if err == nil && len(p) != 1<<16 {
				err = fmt.Errorf("payload of %d bytes", len(p))
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := compiles.Load(); n != 1 {
		t.Fatalf("compiled %d times", n)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || filepath.Ext(ents[0].Name()) != ".cubin" {
		t.Fatalf("directory holds %v (temporary files left?)", ents)
	}
}

func TestConcurrentWritersNeverExposePartialEntry(t *testing.T) {
	c := diskCache{dir: t.TempDir()}
	k := makeCacheKey("m", "src", nil, "13.0", "sm_90a")
	payload := bytes.Repeat([]byte{1, 2, 3}, 1<<18)
	c.put(k, payload)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.put(k, payload); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < 200; i++ {
		if got, err := c.get(k); err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
}
