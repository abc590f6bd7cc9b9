package cuda

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
)

// TestGPUConcurrentSubmit has many goroutines submit work at once, some
// locked to their own threads, the others free to move between OS threads
// (they yield and sleep between submissions). Every job must run on the
// device worker's thread and produce the right result.
func TestGPUConcurrentSubmit(t *testing.T) {
	d := gpu(t)
	var workerTID int
	do(t, func(c *Ctx) error { workerTID = c.ThreadID(); return nil })
	const goroutines, iters = 32, 8
	var (
		mu          sync.Mutex
		callerTIDs  = map[int]bool{}
		moved, jobs int
		wg          sync.WaitGroup
	)
	errs := make(chan error, goroutines*iters)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g%4 == 0 {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
			}
			rng := rand.New(rand.NewPCG(uint64(g), 77))
			for it := 0; it < iters; it++ {
				before := syscall.Gettid()
				err := concurrentJob(d, rng, []DType{F16, BF16}[it%2], workerTID)
				after := syscall.Gettid()
				mu.Lock()
				callerTIDs[before], callerTIDs[after] = true, true
				if before != after {
					moved++
				}
				jobs++
				mu.Unlock()
				if err != nil {
					errs <- fmt.Errorf("goroutine %d job %d: %w", g, it, err)
				}
				runtime.Gosched()
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("concurrency: %d jobs from %d goroutines on %d distinct caller OS threads (%d jobs returned on another thread than they were submitted from), all run on worker thread %d; GOMAXPROCS=%d",
		jobs, goroutines, len(callerTIDs), moved, workerTID, runtime.GOMAXPROCS(0))
	if runtime.GOMAXPROCS(0) > 1 && len(callerTIDs) < 2 {
		t.Errorf("callers ran on a single OS thread: the test did not exercise thread changes")
	}
}

// concurrentJob runs AddLayerNorm then BiasGELU on fresh random data and
// checks the result against the CPU reference.
func concurrentJob(d *Device, rng *rand.Rand, dt DType, workerTID int) error {
	rows, cols := 1+rng.IntN(300), 256*(1+rng.IntN(4))
	xb, xv := randHalf(rng, dt, rows*cols, -2, 2)
	rb, rv := randHalf(rng, dt, rows*cols, -2, 2)
	gb, gv := randHalf(rng, dt, cols, 0.5, 1.5)
	beb, bev := randHalf(rng, dt, cols, -0.5, 0.5)
	bb, bv := randHalf(rng, dt, cols, -1, 1)
	ref := make([]float64, rows*cols)
	for r := 0; r < rows; r++ {
		v := ref[r*cols : (r+1)*cols]
		for j := range v {
			v[j] = xv[r*cols+j] + rv[r*cols+j]
		}
		layerNorm64(v, gv, bev, 1e-5)
		for j := range v {
			// the GPU rounds the LayerNorm output to dt before the GELU
			v[j] = gelu64(fromBits(dt, toBits(dt, float32(v[j])))+bv[j], false)
		}
	}
	var got []uint16
	err := d.Do(func(c *Ctx) error {
		if tid := syscall.Gettid(); tid != workerTID {
			return fmt.Errorf("job ran on thread %d, the worker is %d", tid, workerTID)
		}
		var bufs []Buffer
		defer func() {
			for _, b := range bufs {
				c.Free(b)
			}
		}()
		up := func(data []uint16) (DevPtr, error) {
			b, err := c.Alloc(int64(len(data)) * 2)
			if err != nil {
				return 0, err
			}
			bufs = append(bufs, b)
			return b.Ptr, UploadSlice(c, b.Ptr, data)
		}
		var ptrs [5]DevPtr
		for i, data := range [][]uint16{xb, rb, gb, beb, bb} {
			p, err := up(data)
			if err != nil {
				return err
			}
			ptrs[i] = p
		}
		out, err := c.Alloc(int64(rows * cols * 2))
		if err != nil {
			return err
		}
		bufs = append(bufs, out)
		if err := c.Memset8(out.Ptr, poison, out.Size); err != nil {
			return err
		}
		if err := c.AddLayerNorm(dt, out.Ptr, ptrs[0], ptrs[1], 0, ptrs[2], ptrs[3], rows, cols, 1e-5); err != nil {
			return err
		}
		if err := c.BiasGELU(dt, out.Ptr, out.Ptr, ptrs[4], rows, cols, false); err != nil {
			return err
		}
		got = make([]uint16, rows*cols)
		return DownloadSlice(c, got, out.Ptr)
	})
	if err != nil {
		return err
	}
	s := compareHalf(dt, got, ref, 8*relTol(dt))
	if s.nonFinite > 0 || s.bad > 0 || s.relL2 >= maxRelFor(dt) {
		return fmt.Errorf("%s %dx%d: %s; first bad %s", dt, rows, cols, s, s.firstBad)
	}
	return nil
}

// TestGPUOutOfMemory asks for more than the card has, then exhausts it in
// 4 GiB blocks: both fail with OutOfMemory naming the sizes, and the device
// works afterwards.
func TestGPUOutOfMemory(t *testing.T) {
	d := gpu(t)
	do(t, func(c *Ctx) error {
		_, total, err := c.MemInfo()
		if err != nil {
			return err
		}
		req := total + 1<<30
		_, err = c.Alloc(req)
		if status.CodeOf(err) != status.OutOfMemory {
			t.Fatalf("allocation of %d bytes on a %d-byte card: %v", req, total, err)
		}
		for _, want := range []string{fmt.Sprintf("requested %d bytes", req), "free of", "CUDA_ERROR_OUT_OF_MEMORY"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("OOM error lacks %q: %v", want, err)
			}
		}
		t.Logf("forced OOM (more than the card): status %s: %v", status.CodeOf(err), err)
		var chunks []Buffer
		var oom error
		for i := 0; i < 64; i++ {
			b, err := c.Alloc(4 << 30)
			if err != nil {
				oom = err
				break
			}
			chunks = append(chunks, b)
		}
		if status.CodeOf(oom) != status.OutOfMemory {
			t.Fatalf("exhausting the card: %v", oom)
		}
		t.Logf("forced OOM (card exhausted after %d x 4 GiB): status %s: %v", len(chunks), status.CodeOf(oom), oom)
		for _, b := range chunks {
			c.Free(b)
		}
		if err := c.Trim(); err != nil {
			return err
		}
		t.Logf("after OOM: pool %+v", c.MemStats())
		return nil
	})
	if err := d.Err(); err != nil {
		t.Fatalf("device failed by an OOM: %v", err)
	}
	testAddLN(t, rand.New(rand.NewPCG(8, 8)), F16, 100, 768, "x+res")
	testBiasGELU(t, rand.New(rand.NewPCG(9, 9)), BF16, 100, 3072, false, false, true)
}

// TestGPUCorruptCubinRecompiled corrupts the cached cubin in three ways: a
// flipped payload byte (checksum mismatch), a well-formed entry holding a
// cubin the driver rejects, and a truncated file. Each time the module is
// recompiled, the entry replaced and the kernel correct.
func TestGPUCorruptCubinRecompiled(t *testing.T) {
	gpu(t)
	dir := t.TempDir()
	var (
		mu   sync.Mutex
		logs []string
	)
	run := func(step string) string {
		mu.Lock()
		logs = nil
		mu.Unlock()
		d, err := Open(Config{CacheDir: dir, Log: logSink("", &logs, &mu)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		rng := rand.New(rand.NewPCG(10, 10))
		xb, xv := randHalf(rng, F16, 64*256, -4, 4)
		var outcome string
		err = d.Do(func(c *Ctx) error {
			x := devHalf(t, c, xb)
			out := poisoned(t, c, int64(len(xb)*2))
			defer func() { c.Free(x); c.Free(out) }()
			if err := c.BiasGELU(F16, out.Ptr, x.Ptr, 0, 64, 256, true); err != nil {
				return err
			}
			outcome = c.ModuleOutcome("activation")
			got := downloadHalf(t, c, out.Ptr, len(xb))
			ref := make([]float64, len(xv))
			for i, v := range xv {
				ref[i] = gelu64(v, true)
			}
			compareHalf(F16, got, ref, 1e-5).check(t, "bias_gelu after "+step, maxRelFor(F16))
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		t.Logf("kernel cache, %s: module activation %s", step, outcome)
		return outcome
	}
	entry := func() string {
		m, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
		if len(m) != 1 {
			t.Fatalf("cache holds %q, want one entry", m)
		}
		return m[0]
	}
	logged := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logs {
			if strings.Contains(l, s) {
				t.Logf("  log: %s", l)
				return true
			}
		}
		return false
	}
	if o := run("empty cache"); o != string(fromCompile) {
		t.Errorf("first use: %s", o)
	}
	if o := run("warm cache"); o != string(fromDisk) {
		t.Errorf("second use: %s", o)
	}
	path := entry()
	var key cacheKey
	if kb, err := hex.DecodeString(strings.TrimSuffix(filepath.Base(path), ".cubin")); err != nil || len(kb) != len(key) {
		t.Fatalf("entry name %s: %v", path, err)
	} else {
		copy(key[:], kb)
	}
	valid := func() {
		b, _ := os.ReadFile(path)
		if _, err := decodeEntry(b, key); err != nil {
			t.Errorf("entry not rewritten valid: %v", err)
		}
	}

	b, _ := os.ReadFile(path)
	b[kcHdrSize+len(b[kcHdrSize:])/2] ^= 0x5a
	os.WriteFile(path, b, 0o644)
	if o := run("flipped payload byte"); o != string(fromRecovery) {
		t.Errorf("flipped byte: %s", o)
	}
	if !logged("checksum mismatch") {
		t.Error("no log line about the corrupt entry")
	}
	valid()

	garbage := []byte("\x7fELF this is not a cubin the driver can load")
	os.WriteFile(path, encodeEntry(key, garbage), 0o644)
	if o := run("well-formed entry, invalid cubin"); o != string(fromRecovery) {
		t.Errorf("invalid cubin: %s", o)
	}
	if !logged("rejected by the driver") {
		t.Error("no log line about the rejected cubin")
	}
	valid()

	os.WriteFile(path, b[:37], 0o644)
	if o := run("truncated entry"); o != string(fromRecovery) {
		t.Errorf("truncated: %s", o)
	}
	if !logged("truncated") {
		t.Error("no log line about the truncated entry")
	}
	valid()
}

// mappedLib returns the file of a loaded library whose name starts with
// prefix, from /proc/self/maps.
func mappedLib(prefix string) string {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 6 && strings.HasPrefix(filepath.Base(fields[5]), prefix) {
			return fields[5]
		}
	}
	return ""
}

// hideCublasLt prepares a RAPTOR_CUDA_LIB_DIR holding libcuda and libnvrtc
// but no libcublasLt, and returns the environment that also blocks
// cuBLASLt's standard names.
func hideCublasLt(t *testing.T, d *Device) (dir string, env []string) {
	dir = t.TempDir()
	for soname, prefix := range map[string]string{
		"libcuda.so.1": "libcuda.so",
		fmt.Sprintf("libnvrtc.so.%s", strings.SplitN(d.Info().NVRTCVersion, ".", 2)[0]): "libnvrtc.so",
	} {
		real := mappedLib(prefix)
		if real == "" {
			t.Fatalf("cannot find the loaded %s in /proc/self/maps", prefix)
		}
		if err := os.Symlink(real, filepath.Join(dir, soname)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, []string{EnvLibDir + "=" + dir, EnvDisableLibs + "=cublasLt"}
}

// TestGPUCublasLtHidden hides libcublasLt from discovery: Open fails with
// BackendUnavailable listing every place it looked, and the process (in a
// child process, and here with the shared device) goes on.
func TestGPUCublasLtHidden(t *testing.T) {
	d := gpu(t)
	dir, env := hideCublasLt(t, d)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	_, err := Open(Config{CacheDir: "off"})
	if status.CodeOf(err) != status.BackendUnavailable {
		t.Fatalf("Open without cuBLASLt: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		filepath.Join(dir, "libcublasLt.so.13") + ": not found",
		"libcublasLt.so.13: disabled by " + EnvDisableLibs,
		"/usr/local/cuda/lib64/libcublasLt.so.13: disabled by",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if strings.Contains(msg, "libcuda.so") || strings.Contains(msg, "libnvrtc") {
		t.Errorf("driver or NVRTC failed to load from %s too:\n%s", dir, msg)
	}
	t.Logf("forced failure (cuBLASLt hidden): status %s:\n%s", status.CodeOf(err), msg)
	os.Unsetenv(EnvLibDir)
	os.Unsetenv(EnvDisableLibs)
	testAddLN(t, rand.New(rand.NewPCG(11, 11)), F16, 10, 768, "x")

	out, code := runHelper(t, "nocublaslt", env)
	t.Logf("child process with cuBLASLt hidden (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "HELPER code=BACKEND_UNAVAILABLE") || !strings.Contains(out, "HELPER survived") {
		t.Errorf("child did not report BackendUnavailable and survive")
	}
}

// TestGPUDeviceFaultContained makes a kernel write to an unmapped device
// address in a child process: the job fails with DeviceFailed naming the
// CUDA error, later jobs are refused with the same status, Close returns,
// and the process exits normally.
func TestGPUDeviceFaultContained(t *testing.T) {
	gpu(t)
	out, code := runHelper(t, "fault", nil)
	t.Logf("child process with a faulting kernel (exit %d):\n%s", code, out)
	if code != 0 || !strings.Contains(out, "HELPER fault code=DEVICE_FAILED") ||
		!strings.Contains(out, "HELPER later code=DEVICE_FAILED") || !strings.Contains(out, "HELPER survived") {
		t.Errorf("fault not contained")
	}
}

func runHelper(t *testing.T, mode string, env []string) (string, int) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(append(os.Environ(), "RAPTOR_TEST_HELPER="+mode), env...)
	b, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "HELPER") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return strings.Join(lines, "\n"), code
}

// TestHelperProcess is the child of the failure tests; it does nothing in a
// normal run.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("RAPTOR_TEST_HELPER")
	if mode == "" {
		t.Skip("helper process for the failure tests")
	}
	switch mode {
	case "nocublaslt":
		_, err := Open(Config{CacheDir: "off"})
		fmt.Printf("HELPER code=%s\n", status.CodeOf(err))
		for _, l := range strings.Split(fmt.Sprint(err), "\n") {
			fmt.Printf("HELPER   %s\n", l)
		}
	case "fault":
		d, err := Open(Config{CacheDir: "off"})
		if err != nil {
			fmt.Printf("HELPER open failed: %v\n", err)
			os.Exit(2)
		}
		err = d.Do(func(c *Ctx) error {
			// 1 MiB of floats written to device address 0x1000, which is
			// never mapped.
			if err := c.FillUniform(F32, DevPtr(0x1000), 1<<18, 1, 0, 1); err != nil {
				return err
			}
			return c.Sync()
		})
		fmt.Printf("HELPER fault code=%s: %v\n", status.CodeOf(err), err)
		err = d.Do(func(c *Ctx) error { return nil })
		fmt.Printf("HELPER later code=%s: %v\n", status.CodeOf(err), err)
		fmt.Printf("HELPER device Err: %v\n", d.Err() != nil)
		d.Close()
	}
	fmt.Println("HELPER survived")
}
