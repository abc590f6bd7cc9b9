package raptor

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tiny test models of tests/tools/mkmodel (build/testmodels, or
// $RAPTOR_TESTMODELS): tiny-bert (vocab 79, up to 128 tokens, pooler) and
// tiny-bigbird (vocab 100, up to 256 tokens, block-sparse past 56, no pooler).
func testModels(t testing.TB, eng *Engine) (bert, bigbird *Model) {
	t.Helper()
	dir := os.Getenv("RAPTOR_TESTMODELS")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "build", "testmodels")
	}
	var ms [2]*Model
	for i, name := range []string{"tiny-bert.raptor", "tiny-bigbird.raptor"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("test models not made (%v): go run ./tests/tools/mkmodel", err)
		}
		m, err := eng.LoadModel(p)
		if err != nil {
			t.Fatal(err)
		}
		ms[i] = m
	}
	return ms[0], ms[1]
}

// onGPU: RAPTOR_TEST_BACKEND=cuda runs the tiny engines on the GPU (the test
// models then come from `mkmodel -gpu`), where results equal the references
// within rounding instead of bit for bit.
var onGPU = os.Getenv("RAPTOR_TEST_BACKEND") == "cuda"

// sameResult compares an output with its reference: bit for bit on the CPU,
// within relative L2 error 2e-2 on the GPU.
func sameResult(got, want []float32) bool {
	if !onGPU {
		return equalBits(got, want)
	}
	if len(got) != len(want) {
		return false
	}
	var num, den float64
	for i := range got {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return num <= 4e-4*max(den, 1e-30)
}

func tinyEngine(t testing.TB, capacity int64, delay time.Duration) *Engine {
	t.Helper()
	lib := library(t)
	opts := lib.DefaultEngineOptions()
	opts.Backend = BackendCPU
	if onGPU {
		opts.Backend = BackendCUDA
	}
	if capacity > 0 {
		opts.QueueCapacity = capacity
	}
	opts.MaxQueueDelay = delay
	eng, err := lib.NewEngine(&opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	return eng
}

// The scheduler's calls: options, their bad values, POOLER pooling, stats,
// metrics, shutdown.
func TestSchedulerAPI(t *testing.T) {
	eng := tinyEngine(t, 0, time.Millisecond)
	bert, bigbird := testModels(t, eng)
	ctx := context.Background()
	seqs := [][]int32{{2, 10, 11, 12, 3}, {2, 20, 3}}

	for _, p := range []Pooling{PoolingMean, PoolingCLS, PoolingPooler} {
		want, err := bert.EncodeFull(ctx, seqs, EncodeOptions{Pooling: p, Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		r, err := bert.SubmitWithOptions(ctx, seqs, EncodeOptions{Pooling: p, Hidden: true},
			SubmitOptions{Priority: 3, Deadline: time.Minute, BlockTimeout: -1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Wait(ctx)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		for i := range seqs {
			if !sameResult(got.Pooled[i], want.Pooled[i]) || !sameResult(got.Hidden[i], want.Hidden[i]) {
				t.Fatalf("pooling %d: asynchronous result differs from Encode", p)
			}
		}
	}
	bad := []struct {
		name string
		m    *Model
		seqs [][]int32
		opts EncodeOptions
		so   SubmitOptions
		want error
	}{
		{"negative deadline", bert, seqs, EncodeOptions{}, SubmitOptions{Deadline: -time.Second}, ErrInvalidArgument},
		{"deadline beyond 100 days", bert, seqs, EncodeOptions{}, SubmitOptions{Deadline: 101 * 24 * time.Hour}, ErrOutOfRange},
		{"sequence too long", bert, [][]int32{make([]int32, 129)}, EncodeOptions{}, SubmitOptions{}, ErrOutOfRange},
		{"pooler without one", bigbird, seqs, EncodeOptions{Pooling: PoolingPooler}, SubmitOptions{}, ErrInvalidArgument},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.SubmitWithOptions(ctx, tc.seqs, tc.opts, tc.so)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	st, err := eng.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Packing adds no padding; on the GPU small batches run padded to a
	// CUDA graph token-count class (RAPTOR_CUDA_GRAPHS).
	if st.SchedulerRequests != 3 || (st.PaddingRatio != 0 && !onGPU) || st.PaddingRatio < 0 || st.PaddingRatio >= 1 || st.QueueCapacity != 1024 || st.CompletedByStatus[StatusOK] != st.RequestsCompleted ||
		st.RejectedByStatus[StatusOutOfRange] < 1 || st.Uptime <= 0 || st.LatencyP50 <= 0 {
		t.Fatalf("stats %+v", st)
	}
	text, err := eng.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	wants := []string{`raptor_requests_completed_total{status="OK"} ` + strconv.FormatUint(st.RequestsCompleted, 10),
		"raptor_live_models 2\n", "# TYPE raptor_queue_latency_seconds summary"}
	if !onGPU {
		wants = append(wants, "raptor_padding_ratio 0\n")
	}
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %q:\n%s", want, text)
		}
	}

	// Drain: pending requests complete normally, then new work is refused.
	var reqs []*Request
	for range 20 {
		r, err := bigbird.SubmitWithOptions(ctx, [][]int32{make([]int32, 100)}, EncodeOptions{}, SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	if err := eng.Shutdown(ShutdownDrain, -1); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		select {
		case <-r.Done():
		default:
			t.Fatal("a request was pending after the drain")
		}
		if _, err := r.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	if _, err := bert.Submit(ctx, seqs, EncodeOptions{}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("submit after shutdown: %v", err)
	}
	if _, err := bert.Encode(ctx, seqs, EncodeOptions{}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("encode after shutdown: %v", err)
	}
	if err := eng.Shutdown(ShutdownCancel, 0); err != nil {
		t.Fatal(err)
	}
	if err := eng.Shutdown(ShutdownMode(7), 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad mode: %v", err)
	}
}

// Exactly once under stress from a Go host: 16 goroutines submit requests
// with a realistic length mix to two tiny models through the library, with
// random priorities, deadlines (some impossible), cancels, blocking and
// retried submits. Every request completes once with a status it may have,
// every success equals the request alone, and the library's counters,
// handles and goroutines end where they started. RAPTOR_STRESS_REQUESTS sets
// the count (default 10000; the full form is 100000);
// RAPTOR_TEST_BACKEND=cuda runs it on the GPU.
func TestSchedulerStressExactlyOnce(t *testing.T) {
	n := 10000
	if v := os.Getenv("RAPTOR_STRESS_REQUESTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	} else if testing.Short() {
		n = 1000
	}
	const threads = 16
	// Every OS thread that has called into the library holds a goroutine of
	// its runtime (in syscall state) until the thread exits. So that the
	// goroutine count measures the library alone, this goroutine and each
	// worker stay on one thread; the workers' threads end with them. (Threads
	// of earlier tests may end meanwhile too: the count may drop, never grow.)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	eng := tinyEngine(t, 8, time.Millisecond)
	bert, bigbird := testModels(t, eng)
	models := []*Model{bert, bigbird}
	vocab := []int32{79, 100}
	maxLen := []int{128, 256}
	ctx := context.Background()

	type job struct {
		m        int
		seqs     [][]int32
		opts     EncodeOptions
		want     *Result
		so       SubmitOptions
		cancel   bool
		retry    bool // BUSY: retry instead of blocking
		deadline bool
	}
	jobs := make([]*job, n)
	var wg sync.WaitGroup
	for w := range threads {
		wg.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			rng := rand.New(rand.NewPCG(uint64(w), 77))
			for i := w; i < n; i += threads {
				j := &job{m: i % 2}
				for range 1 + rng.IntN(3) {
					var l int
					switch p := rng.IntN(100); {
					case p < 75:
						l = 1 + rng.IntN(16)
					case p < 97:
						l = 17 + rng.IntN(48)
					default:
						l = 65 + rng.IntN(maxLen[j.m]-64)
					}
					s := make([]int32, l)
					for k := range s {
						s[k] = rng.Int32N(vocab[j.m])
					}
					j.seqs = append(j.seqs, s)
				}
				j.opts = EncodeOptions{Pooling: Pooling(rng.IntN(2)), Normalize: rng.IntN(2) == 0, Hidden: rng.IntN(3) == 0}
				if j.m == 0 && rng.IntN(4) == 0 {
					j.opts.Pooling = PoolingPooler
				}
				var err error
				if j.want, err = models[j.m].EncodeFull(ctx, j.seqs, j.opts); err != nil {
					t.Error(err)
					return
				}
				j.so.Priority = rng.Int32N(3)
				switch rng.IntN(10) {
				case 0:
					j.so.Deadline = time.Duration(1+rng.IntN(3000)) * time.Microsecond
					j.deadline = true
				case 1, 2:
					j.so.Deadline = time.Minute
					j.deadline = true
				}
				j.retry = rng.IntN(2) == 0
				if !j.retry {
					j.so.BlockTimeout = -1
				}
				j.cancel = rng.IntN(10) == 0
				jobs[i] = j
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	start, err := eng.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var ok, cancelled, expired, expiredAtSubmit, busy atomic.Int64
	t0 := time.Now()
	for w := range threads {
		wg.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
			for i := w; i < n; i += threads {
				j := jobs[i]
				var r *Request
				var err error
				for {
					r, err = models[j.m].SubmitWithOptions(ctx, j.seqs, j.opts, j.so)
					if errors.Is(err, ErrBusy) && j.retry {
						busy.Add(1)
						time.Sleep(200 * time.Microsecond)
						continue
					}
					break
				}
				if errors.Is(err, ErrDeadlineExceeded) && j.deadline {
					expired.Add(1)
					expiredAtSubmit.Add(1)
					continue
				}
				if err != nil {
					t.Errorf("request %d: submit: %v", i, err)
					return
				}
				if j.cancel {
					if err := r.Cancel(); err != nil {
						t.Error(err)
					}
				}
				res, err := r.Wait(ctx)
				r.Close()
				switch {
				case err == nil:
					ok.Add(1)
					for s := range j.seqs {
						if !sameResult(res.Pooled[s], j.want.Pooled[s]) || (j.opts.Hidden && !sameResult(res.Hidden[s], j.want.Hidden[s])) {
							t.Errorf("request %d: output differs from the request alone", i)
						}
					}
				case errors.Is(err, ErrCancelled) && j.cancel:
					cancelled.Add(1)
				case errors.Is(err, ErrDeadlineExceeded) && j.deadline:
					expired.Add(1)
				default:
					t.Errorf("request %d: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if got := ok.Load() + cancelled.Load() + expired.Load(); got != int64(n) {
		t.Fatalf("%d completions for %d requests", got, n)
	}
	end, err := eng.Stats()
	for i := 0; i < 300 && err == nil && (end.ProcessGoroutines > start.ProcessGoroutines || end.LiveRequests != 0); i++ {
		time.Sleep(10 * time.Millisecond) // goroutines that delivered cancelled requests' callbacks may still be exiting
		end, err = eng.Stats()
	}
	if err != nil {
		t.Fatal(err)
	}
	accepted := uint64(int64(n) - expiredAtSubmit.Load())
	d := func(a, b uint64) uint64 { return a - b }
	if d(end.RequestsSubmitted, start.RequestsSubmitted) != accepted ||
		d(end.CompletedByStatus[StatusOK], start.CompletedByStatus[StatusOK]) != uint64(ok.Load()) ||
		d(end.CompletedByStatus[StatusCancelled], start.CompletedByStatus[StatusCancelled]) != uint64(cancelled.Load()) ||
		d(end.CompletedByStatus[StatusDeadlineExceeded], start.CompletedByStatus[StatusDeadlineExceeded]) != uint64(expired.Load()-expiredAtSubmit.Load()) ||
		d(end.RequestsFailed, start.RequestsFailed) != uint64(expired.Load()-expiredAtSubmit.Load()) {
		t.Fatalf("library counters: %+v -> %+v; ok %d cancelled %d expired %d (%d at submit)", start, end, ok.Load(), cancelled.Load(), expired.Load(), expiredAtSubmit.Load())
	}
	if end.LiveRequests != 0 || end.QueueDepth != 0 || end.ProcessHandles != start.ProcessHandles || end.ProcessGoroutines > start.ProcessGoroutines {
		t.Fatalf("left behind: live requests %d, queue %d, handles %d -> %d, goroutines %d -> %d",
			end.LiveRequests, end.QueueDepth, start.ProcessHandles, end.ProcessHandles, start.ProcessGoroutines, end.ProcessGoroutines)
	}
	t.Logf("%d requests in %v (%.0f/s): %d ok, %d cancelled, %d deadline exceeded (%d at submit), %d BUSY retries; %.2f requests per batch",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), ok.Load(), cancelled.Load(), expired.Load(), expiredAtSubmit.Load(),
		busy.Load(), end.MeanBatchRequests)
}
