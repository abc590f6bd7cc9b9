package engine

// GPU fault isolation at the engine level (issue 9), on the GPU machine
// through tests/gpu/run.sh; each test skips elsewhere, saying why.
//
//   - TestGPUFaultOutOfMemory: a batch larger than the card fails with
//     OutOfMemory in the middle of a stream of normal batches; the stream and
//     later batches on the same engine succeed with the same outputs.
//   - TestGPUFaultStickyError: a kernel fault launched through one engine's
//     device puts that engine into DeviceFailed on every later call. Engines
//     of one process on one GPU share its primary context, so the fault runs
//     in a child process; the parent's engine serves throughout.
//   - TestGPUFaultCorruptKernelCache: every cached cubin corrupted between
//     two engines on one cache dir: the second engine recompiles them, logs
//     it, and computes the same outputs; a third finds the cache valid.
//   - TestGPUFaultCublasLtHidden: backend=cuda fails at create with
//     BackendUnavailable naming libcublasLt; backend=auto falls back to the
//     CPU with one log line.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

const faultHelperEnv = "RAPTOR_GPU_FAULT_HELPER"

// faultModel is a small dense BERT the CUDA backend runs.
func faultModel() (loader.Config, *testmodel.Weights) {
	cfg := gpuConfig(loader.FamilyBERT, loader.AttentionDense, 128, 2, 256, 2)
	return cfg, testmodel.Random(cfg, 77, 0.05)
}

func devOf(e *Engine) *cuda.Device { return e.be.(cudaBackend).b.Device() }

// logCapture collects an engine's log lines.
type logCapture struct {
	mu    sync.Mutex
	lines []string
}

func (l *logCapture) log(_ LogLevel, msg string) {
	l.mu.Lock()
	l.lines = append(l.lines, msg)
	l.mu.Unlock()
}

func (l *logCapture) matching(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			out = append(out, x)
		}
	}
	return out
}

func (l *logCapture) reset() {
	l.mu.Lock()
	l.lines = nil
	l.mu.Unlock()
}

func TestGPUFaultOutOfMemory(t *testing.T) {
	e := gpuEngine(t, ComputeFP16)
	// A wide model makes the per-token working set large, so the batch that
	// exceeds the card needs fewer host-side tokens.
	cfg := gpuConfig(loader.FamilyBERT, loader.AttentionDense, 1024, 16, 4096, 1)
	m, err := e.Load(testmodel.Random(cfg, 3, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var free, total int64
	if err := devOf(e).Do(func(c *cuda.Ctx) error {
		var err error
		free, total, err = c.MemInfo()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 4))
	small := raggedBatch(rng, cfg, []int{300, 17, 1000, 64})
	_, ref := encodeOut(t, m, small, PoolMean, true)

	// The device arena of a batch holds at least (6 hidden + intermediate)
	// fp16 values per token: size the batch at 1.25x the card.
	perToken := int64(6*cfg.Hidden+cfg.Intermediate) * 2
	T := int(total/perToken*5/4) + 1
	seqLen := cfg.MaxPositions - cfg.PositionOffset
	lens := make([]int, 0, T/seqLen+1)
	for n := T; n > 0; n -= seqLen {
		lens = append(lens, min(n, seqLen))
	}
	big := &Batch{Tokens: make([]int32, T), CuSeqlens: make([]int32, 1, len(lens)+1)}
	for i := range big.Tokens {
		big.Tokens[i] = int32(i % cfg.VocabSize)
	}
	for _, n := range lens {
		big.CuSeqlens = append(big.CuSeqlens, big.CuSeqlens[len(big.CuSeqlens)-1]+int32(n))
	}
	t.Logf("card: %.1f GiB total, %.1f GiB free; oversized batch: %d tokens in %d sequences (>= %.1f GiB of activations)",
		float64(total)/(1<<30), float64(free)/(1<<30), T, len(lens), float64(int64(T)*perToken)/(1<<30))

	// A stream of normal batches on 4 goroutines around the oversized one.
	var (
		stop            atomic.Bool
		okCount, errCnt atomic.Int64
		wg              sync.WaitGroup
		firstErr        atomic.Pointer[error]
	)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			H := cfg.Hidden
			for !stop.Load() {
				out := &Outputs{Pooled: make([]float32, small.NumSeqs()*H), Pooling: PoolMean, Normalize: true}
				err := m.Encode(context.Background(), small, out)
				if err == nil {
					if rel, _ := gpuRelErr(out.Pooled, ref); rel > 1e-6 {
						err = fmt.Errorf("stream output differs from the first run: rel %.3g", rel)
					}
				}
				if err != nil {
					errCnt.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				okCount.Add(1)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	before := okCount.Load()
	out := &Outputs{Pooled: make([]float32, big.NumSeqs()*cfg.Hidden), Pooling: PoolMean}
	err = m.Encode(context.Background(), big, out)
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("oversized batch: status %s: %v", status.CodeOf(err), err)
	if status.CodeOf(err) != status.OutOfMemory {
		t.Fatalf("oversized batch: got %v, want OutOfMemory", err)
	}
	if p := firstErr.Load(); p != nil {
		t.Fatalf("a normal batch of the stream failed: %v", *p)
	}
	t.Logf("stream: %d normal batches succeeded (%d before the oversized one was submitted), 0 failed", okCount.Load(), before)
	if devOf(e).Err() != nil {
		t.Fatalf("the device failed after an OOM: %v", devOf(e).Err())
	}
	for i := 0; i < 3; i++ {
		_, p := encodeOut(t, m, small, PoolMean, true)
		if rel, _ := gpuRelErr(p, ref); rel > 1e-6 {
			t.Fatalf("after the OOM, batch %d differs from before: rel %.3g", i, rel)
		}
	}
	cpuM, err := cpuRefEngine(t).Load(testmodel.Random(cfg, 3, 0.05))
	if err != nil {
		t.Fatal(err)
	}
	defer cpuM.Close()
	_, cp := encodeOut(t, cpuM, small, PoolMean, true)
	rel, _ := gpuRelErr(ref, cp)
	t.Logf("after the OOM: 3 more batches identical to the pre-OOM output; GPU fp16 vs CPU pooled rel %.2e", rel)
	if rel > 1e-2 {
		t.Errorf("GPU vs CPU rel %.3g > 1e-2", rel)
	}
}

// TestGPUFaultStickyError runs the faulting engine in a child process
// (TestGPUFaultHelper) while this process's engine keeps encoding.
func TestGPUFaultStickyError(t *testing.T) {
	if os.Getenv(faultHelperEnv) != "" {
		t.Skip("inside the helper")
	}
	e := gpuEngine(t, ComputeFP16)
	cfg, w := faultModel()
	m, err := e.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := raggedBatch(rand.New(rand.NewPCG(5, 5)), cfg, []int{33, 200, 7})
	refH, refP := encodeOut(t, m, b, PoolCLS, false)

	cmd := exec.Command(os.Args[0], "-test.run=^TestGPUFaultHelper$", "-test.v")
	cmd.Env = append(os.Environ(), faultHelperEnv+"=fault")
	var outBuf strings.Builder
	cmd.Stdout, cmd.Stderr = &outBuf, &outBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	served := 0
	var childErr error
loop:
	for {
		select {
		case childErr = <-waitErr:
			break loop
		default:
		}
		h, p := encodeOut(t, m, b, PoolCLS, false)
		rh, _ := gpuRelErr(h, refH)
		rp, _ := gpuRelErr(p, refP)
		if rh > 1e-6 || rp > 1e-6 {
			t.Fatalf("parent engine output changed while the child faulted: %.3g %.3g", rh, rp)
		}
		served++
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(childErr, &ee) {
		code = ee.ExitCode()
	} else if childErr != nil {
		t.Fatal(childErr)
	}
	var lines []string
	for _, l := range strings.Split(outBuf.String(), "\n") {
		if strings.Contains(l, "HELPER") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	child := strings.Join(lines, "\n")
	t.Logf("child process (exit %d):\n%s", code, child)
	for i := 0; i < 5; i++ {
		h, p := encodeOut(t, m, b, PoolCLS, false)
		if rh, _ := gpuRelErr(h, refH); rh > 1e-6 {
			t.Fatalf("parent engine after the child's fault: rel %.3g", rh)
		}
		_ = p
	}
	t.Logf("parent engine: %d batches served while the child ran and faulted, 5 more after it exited, all identical to the first", served)
	for _, want := range []string{
		"HELPER A fault code=DEVICE_FAILED",
		"HELPER A encode#1 code=DEVICE_FAILED", "HELPER A encode#2 code=DEVICE_FAILED", "HELPER A encode#3 code=DEVICE_FAILED",
		"HELPER A load code=DEVICE_FAILED",
		"HELPER B encode#1 (same process, same GPU) code=DEVICE_FAILED",
		"HELPER E before code=OK", "HELPER E encode#1 (same process, CPU backend) code=OK",
		"HELPER E encode#2 (same process, CPU backend) code=OK",
		"HELPER F create (backend auto) code=OK", "HELPER F encode code=OK",
		"HELPER survived",
	} {
		if !strings.Contains(child, want) {
			t.Errorf("child output lacks %q", want)
		}
	}
	if code != 0 {
		t.Errorf("child exit %d", code)
	}
	if devOf(e).Err() != nil {
		t.Errorf("parent device failed: %v", devOf(e).Err())
	}
}

// TestGPUFaultHelper is the child of TestGPUFaultStickyError: engines A and
// B on the same GPU; a kernel of A's device writes to an unmapped address;
// it reports what A, B and a new engine C then get.
func TestGPUFaultHelper(t *testing.T) {
	if os.Getenv(faultHelperEnv) == "" {
		t.Skip("helper process of TestGPUFaultStickyError; it runs only as that test's child")
	}
	newEng := func() (*Engine, error) {
		opts := DefaultOptions()
		opts.Backend, opts.Compute, opts.Seed = BackendCUDA, ComputeFP16, gpuTestSeed
		opts.KernelCacheDir = os.Getenv("RAPTOR_KERNEL_CACHE")
		opts.Log = func(l LogLevel, msg string) {
			if l >= LogError {
				fmt.Printf("HELPER log: %s\n", strings.ReplaceAll(msg, "\n", " | "))
			}
		}
		return New(opts)
	}
	cfg, w := faultModel()
	b := raggedBatch(rand.New(rand.NewPCG(5, 5)), cfg, []int{33, 200, 7})
	enc := func(m *Model) error {
		return m.Encode(context.Background(), b, &Outputs{Pooled: make([]float32, b.NumSeqs()*cfg.Hidden), Pooling: PoolCLS})
	}
	report := func(what string, err error) {
		msg := "ok"
		if err != nil {
			msg = strings.ReplaceAll(err.Error(), "\n", " | ")
		}
		fmt.Printf("HELPER %s code=%s: %s\n", what, status.CodeOf(err), msg)
	}
	ea, err := newEng()
	if err != nil {
		fmt.Printf("HELPER engine A: %v\n", err)
		os.Exit(2)
	}
	eb, err := newEng()
	if err != nil {
		fmt.Printf("HELPER engine B: %v\n", err)
		os.Exit(2)
	}
	ma, errA := ea.Load(w)
	mb, errB := eb.Load(w)
	if errA != nil || errB != nil {
		fmt.Printf("HELPER load: %v %v\n", errA, errB)
		os.Exit(2)
	}
	report("A before", enc(ma))
	report("B before", enc(mb))
	// E: a CPU engine of the same process. CUDA makes an illegal address
	// sticky for the whole process (every context, even a new cuCtxCreate one,
	// returns 700 after it: tried on the H100), so GPU engines of the process
	// cannot outlive it; a CPU engine must.
	eoE := DefaultOptions()
	eoE.Backend, eoE.Threads = BackendCPU, 2
	ee, err := New(eoE)
	if err != nil {
		fmt.Printf("HELPER engine E: %v\n", err)
		os.Exit(2)
	}
	me, err := ee.Load(w)
	if err != nil {
		fmt.Printf("HELPER load E: %v\n", err)
		os.Exit(2)
	}
	encE := func() ([]float32, error) {
		p := make([]float32, b.NumSeqs()*cfg.Hidden)
		return p, me.Encode(context.Background(), b, &Outputs{Pooled: p, Pooling: PoolCLS})
	}
	refE, err := encE()
	report("E before", err)
	err = devOf(ea).Do(func(c *cuda.Ctx) error {
		// 1 MiB of floats written to device address 0x1000, never mapped.
		if err := c.FillUniform(cuda.F32, cuda.DevPtr(0x1000), 1<<18, 1, 0, 1); err != nil {
			return err
		}
		return c.Sync()
	})
	report("A fault", err)
	for i := 1; i <= 3; i++ {
		report(fmt.Sprintf("A encode#%d", i), enc(ma))
	}
	_, err = ea.Load(w)
	report("A load", err)
	// B shares the process's primary context of the same GPU.
	for i := 1; i <= 2; i++ {
		report(fmt.Sprintf("B encode#%d (same process, same GPU)", i), enc(mb))
	}
	ec, err := newEng()
	report("C create (same process, same GPU)", err)
	if err == nil {
		if mc, err := ec.Load(w); err != nil {
			report("C load", err)
		} else {
			report("C encode", enc(mc))
		}
		ec.Close()
	}
	for i := 1; i <= 2; i++ {
		got, err := encE()
		if err == nil && !slices.Equal(got, refE) {
			err = status.Errorf(status.Internal, "CPU engine output changed after the GPU fault")
		}
		report(fmt.Sprintf("E encode#%d (same process, CPU backend)", i), err)
	}
	// backend=auto after the fault: the GPU is unusable in this process, so a CPU engine.
	eoF := DefaultOptions()
	eoF.Seed = gpuTestSeed
	eoF.Log = func(LogLevel, string) {}
	ef, err := New(eoF)
	report("F create (backend auto)", err)
	if err == nil {
		fmt.Printf("HELPER F backend: %s\n", ef.BackendName())
		if mf, err := ef.Load(w); err != nil {
			report("F load", err)
		} else {
			report("F encode", enc(mf))
		}
		ef.Close()
	}
	ea.Close()
	eb.Close()
	ee.Close()
	fmt.Println("HELPER survived")
}

func TestGPUFaultCorruptKernelCache(t *testing.T) {
	gpuEngine(t, ComputeFP16) // skips without a GPU
	dir := t.TempDir()
	cfg, w := faultModel()
	b := raggedBatch(rand.New(rand.NewPCG(6, 6)), cfg, []int{33, 200, 7})
	var logs logCapture
	run := func(step string) []float32 {
		logs.reset()
		opts := DefaultOptions()
		opts.Backend, opts.Compute, opts.Seed, opts.KernelCacheDir, opts.Log = BackendCUDA, ComputeFP16, gpuTestSeed, dir, logs.log
		e, err := New(opts)
		if err != nil {
			t.Fatalf("%s: engine create: %v", step, err)
		}
		defer e.Close()
		m, err := e.Load(w)
		if err != nil {
			t.Fatalf("%s: load: %v", step, err)
		}
		defer m.Close()
		h, _ := encodeOut(t, m, b, PoolMean, false)
		return h
	}
	ref := run("empty cache")
	entries, _ := filepath.Glob(filepath.Join(dir, "*.cubin"))
	if len(entries) == 0 {
		t.Fatalf("no cubin cached in %s", dir)
	}
	run("warm cache")
	if c := logs.matching("corrupt"); len(c) != 0 {
		t.Fatalf("warm cache reported corruption: %q", c)
	}
	// Corrupt every entry: flip a payload byte in even ones, truncate odd ones.
	for i, p := range entries {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			data[len(data)/2] ^= 0x5a
		} else {
			data = data[:37]
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := run("every entry corrupted")
	recompiled := logs.matching("recompiling")
	for _, l := range recompiled {
		t.Logf("  log: %s", l)
	}
	if len(recompiled) != len(entries) {
		t.Errorf("%d of %d corrupted entries logged as recompiled", len(recompiled), len(entries))
	}
	if rel, _ := gpuRelErr(got, ref); rel > 1e-6 {
		t.Errorf("outputs after recompiling differ: rel %.3g", rel)
	}
	run("cache rewritten")
	if c := logs.matching("corrupt"); len(c) != 0 {
		t.Errorf("the recompiled entries were not rewritten valid: %q", c)
	}
	t.Logf("kernel cache: %d entries corrupted (flipped byte / truncated) -> the next engine recompiled %d, same outputs; a third engine found the cache valid", len(entries), len(recompiled))
}

// loadedLib returns the file of a loaded library whose base name starts
// with prefix (from /proc/self/maps).
func loadedLib(prefix string) string {
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

func TestGPUFaultCublasLtHidden(t *testing.T) {
	e := gpuEngine(t, ComputeFP16)
	// A directory holding only the driver and NVRTC this process loaded.
	dir := t.TempDir()
	nvrtcMajor := strings.SplitN(devOf(e).Info().NVRTCVersion, ".", 2)[0]
	for soname, prefix := range map[string]string{"libcuda.so.1": "libcuda.so", "libnvrtc.so." + nvrtcMajor: "libnvrtc.so"} {
		real := loadedLib(prefix)
		if real == "" {
			t.Fatalf("cannot find the loaded %s in /proc/self/maps", prefix)
		}
		if err := os.Symlink(real, filepath.Join(dir, soname)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(cuda.EnvLibDir, dir)
	t.Setenv(cuda.EnvDisableLibs, "cublasLt")
	cfg, w := faultModel()

	var logs logCapture
	opts := DefaultOptions()
	opts.Backend, opts.Log = BackendCUDA, logs.log
	_, err := New(opts)
	t.Logf("backend=cuda, cuBLASLt hidden: status %s: %v", status.CodeOf(err), err)
	if status.CodeOf(err) != status.BackendUnavailable || !strings.Contains(err.Error(), "libcublasLt") {
		t.Fatalf("backend=cuda without cuBLASLt: %v, want BackendUnavailable naming libcublasLt", err)
	}

	logs.reset()
	opts.Backend = BackendAuto
	ae, err := New(opts)
	if err != nil {
		t.Fatalf("backend=auto without cuBLASLt: %v", err)
	}
	defer ae.Close()
	fallback := logs.matching("no GPU backend available")
	if !strings.HasPrefix(ae.BackendName(), "cpu") || len(fallback) != 1 || strings.Contains(fallback[0], "\n") {
		t.Fatalf("backend=auto: backend %q, fallback log lines %q; want cpu and exactly one line", ae.BackendName(), fallback)
	}
	if !strings.Contains(fallback[0], "libcublasLt") {
		t.Errorf("the fallback line does not name libcublasLt: %s", fallback[0])
	}
	t.Logf("backend=auto: %s; the one log line (%d chars): %.300s...", ae.BackendName(), len(fallback[0]), fallback[0])
	m, err := ae.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	encodeOut(t, m, raggedBatch(rand.New(rand.NewPCG(1, 2)), cfg, []int{10, 20}), PoolMean, true)
	// and the process's GPU engine still serves
	os.Unsetenv(cuda.EnvLibDir)
	os.Unsetenv(cuda.EnvDisableLibs)
	gm, err := e.Load(w)
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	encodeOut(t, gm, raggedBatch(rand.New(rand.NewPCG(1, 2)), cfg, []int{10, 20}), PoolMean, true)
}
