package engine

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// schedJob is one request of the real-model tests with its single-request
// result.
type schedJob struct {
	m    *Model
	b    *Batch
	want Outputs // from Encode, alone
	got  Outputs
}

// newSchedJob makes a random request for m (sequences up to 200 tokens, or
// the model's limit) and computes its result alone.
func newSchedJob(t testing.TB, rng *rand.Rand, m *Model) *schedJob {
	cfg := m.Config()
	maxLen := min(200, cfg.MaxPositions-cfg.PositionOffset)
	nseq := 1 + rng.IntN(3)
	lens := make([]int, nseq)
	for i := range lens {
		switch p := rng.IntN(100); {
		case p < 70:
			lens[i] = 1 + rng.IntN(16)
		case p < 95:
			lens[i] = 17 + rng.IntN(maxLen/3)
		default:
			lens[i] = maxLen/3 + rng.IntN(maxLen-maxLen/3+1)
		}
	}
	c := randomBatch(rng, cfg, lens)
	b := &Batch{Tokens: c.tokens, CuSeqlens: c.cu}
	if rng.IntN(2) == 0 {
		b.TokenTypes = c.types
	}
	if rng.IntN(2) == 0 {
		for s := range c.seeds {
			c.seeds[s] = rng.Uint64()
		}
		b.Seeds = c.seeds
	}
	T, H := len(b.Tokens), cfg.Hidden
	j := &schedJob{m: m, b: b}
	mk := func() Outputs {
		var o Outputs
		switch rng.IntN(3) {
		case 0:
			o.Hidden = make([]float32, T*H)
		case 1:
			o.Pooled = make([]float32, nseq*H)
		default:
			o.Hidden, o.Pooled = make([]float32, T*H), make([]float32, nseq*H)
		}
		o.Pooling = Pooling(rng.IntN(3)) // CLS, MEAN, POOLER
		if !cfg.Pooler {
			o.Pooling = Pooling(rng.IntN(2))
		}
		o.Normalize = rng.IntN(2) == 0
		if cfg.Head != nil && rng.IntN(2) == 0 {
			rows, cols, err := m.LogitsShape(b)
			if err != nil {
				t.Fatal(err)
			}
			o.Logits = make([]float32, rows*cols)
		}
		return o
	}
	j.want = mk()
	j.got = j.want
	j.got.Hidden, j.got.Pooled, j.got.Logits = clone(j.want.Hidden), clone(j.want.Pooled), clone(j.want.Logits)
	if err := m.Encode(context.Background(), b, &j.want); err != nil {
		t.Fatal(err)
	}
	return j
}

func clone(s []float32) []float32 {
	if s == nil {
		return nil
	}
	return make([]float32, len(s))
}

func (j *schedJob) check(t testing.TB) {
	t.Helper()
	if !bitEqual(j.got.Hidden, j.want.Hidden) || !bitEqual(j.got.Pooled, j.want.Pooled) || !bitEqual(j.got.Logits, j.want.Logits) {
		t.Errorf("request of %d tokens in %d sequences (pooling %d): result differs from Encode alone", len(j.b.Tokens), j.b.NumSeqs(), j.got.Pooling)
	}
}

// schedModels loads a dense BERT, a block-sparse BigBird (sequences past 56
// tokens are sparse) and a BigBird QA head model on e.
func schedModels(t testing.TB, e *Engine) []*Model {
	var ms []*Model
	for _, cfg := range []loader.Config{tinyConfig(loader.FamilyBERT, 32, 4, false), tinyConfig(loader.FamilyBigBird, 32, 4, true)} {
		cfg.MaxPositions = 260
		if cfg.Attention == loader.AttentionBlockSparse {
			cfg.BlockSize, cfg.RandomBlocks = 8, 1
		}
		m, err := e.Load(testmodel.Random(cfg, 5, 0.1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		ms = append(ms, m)
	}
	head, _ := loadHeadFixture(t, e, filepath.Join("testdata", "heads", "bert_tok"))
	return append(ms, head)
}

// Merged batches give every request the bits it gets alone: dense and
// block-sparse attention, every pooling, normalisation, token types, seeds,
// logits, one and several sequences per request.
func TestSchedulerBitIdenticalWithModels(t *testing.T) {
	e := newTestEngine(t, "auto", 2)
	models := schedModels(t, e)
	a := NewAsync(AsyncOptions{MaxBatchTokens: 600, MaxQueueDelay: 20 * time.Millisecond})
	defer a.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	var jobs []*schedJob
	targets := map[*Model]*Target{}
	for _, m := range models {
		targets[m] = a.Target(m)
	}
	for i := range 120 {
		jobs = append(jobs, newSchedJob(t, rng, models[i%len(models)]))
	}
	// Submitted back to back, after every reference is computed: under -race
	// on a loaded machine, computing each between submits spread them past
	// the queue delay and the test did not merge.
	submitAndCheck(t, targets, jobs)
	s := a.Stats()
	if s.MeanBatchRequests < 2 {
		t.Fatalf("mean %.2f requests per batch: the test did not merge", s.MeanBatchRequests)
	}
	t.Logf("%d batches for %d requests (mean fill %.2f)", s.SchedBatches, s.SchedRequests, s.MeanBatchFill)
}

// Exactly once under stress: 16 goroutines submit requests with a realistic
// length mix to three models, with random priorities, deadlines (some
// impossible), cancels (before and after completion), blocking and
// non-blocking submits to a small queue, and callbacks, waits or polls.
// Every request completes exactly once with a status it may have, every
// success equals the request alone, and the counters, the queue and the
// goroutines are back where they started. RAPTOR_STRESS_REQUESTS sets the
// number of requests (default 2000; the full form is 100000).
func TestSchedulerStressExactlyOnce(t *testing.T) {
	n := 2000
	if v := os.Getenv("RAPTOR_STRESS_REQUESTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	} else if testing.Short() {
		n = 300
	}
	const threads = 16
	e := newTestEngine(t, "auto", 2)
	models := schedModels(t, e)
	rng := rand.New(rand.NewPCG(11, 12))
	jobs := make([]*schedJob, n)
	var wg sync.WaitGroup
	seeds := make([]uint64, threads)
	for i := range seeds {
		seeds[i] = rng.Uint64()
	}
	for w := range threads { // references, in parallel
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seeds[w], 1))
			for i := w; i < n; i += threads {
				jobs[i] = newSchedJob(t, r, models[i%len(models)])
			}
		}()
	}
	wg.Wait()

	base := runtime.NumGoroutine()
	var st Stats
	a := NewAsync(AsyncOptions{QueueCapacity: 8, MaxBatchTokens: 512, MaxQueueDelay: time.Millisecond, Stats: &st})
	targets := map[*Model]*Target{}
	for _, m := range models {
		targets[m] = a.Target(m)
	}
	calls := make([]atomic.Int32, n)
	callbacks := make([]bool, n)
	var accepted, busy, ok, cancelled, expired atomic.Int64
	start := time.Now()
	for w := range threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seeds[w], 2))
			for i := w; i < n; i += threads {
				j := jobs[i]
				opts := SubmitOptions{Priority: int32(r.IntN(3))}
				cancel := r.IntN(10) == 0
				switch p := r.IntN(10); {
				case p == 0:
					opts.Deadline = time.Now().Add(time.Duration(r.IntN(2000)) * time.Microsecond) // often too tight
				case p < 3:
					opts.Deadline = time.Now().Add(time.Minute)
				}
				mode := r.IntN(3)
				if mode == 0 {
					callbacks[i] = true
					opts.Done = func(*Request) { calls[i].Add(1) }
				}
				if r.IntN(2) == 0 {
					opts.BlockTimeout = -1
				}
				var req *Request
				for {
					var err error
					req, err = targets[j.m].Submit(j.b, &j.got, opts)
					if err == nil {
						break
					}
					switch codeOf(err) {
					case status.Busy:
						busy.Add(1)
						time.Sleep(100 * time.Microsecond)
						continue
					case status.DeadlineExceeded:
						opts.Deadline = time.Time{}
						continue
					}
					t.Errorf("submit: %v", err)
					return
				}
				accepted.Add(1)
				if cancel {
					req.Cancel()
				}
				var res error
				switch mode {
				case 0, 1:
					res = req.Wait(-1)
				default:
					for {
						done, err := req.Poll()
						if done {
							res = err
							break
						}
						runtime.Gosched()
					}
				}
				if mode == 0 {
					<-req.Done()
				}
				switch codeOf(res) {
				case status.OK:
					ok.Add(1)
					j.check(t)
				case status.Cancelled:
					cancelled.Add(1)
					if !cancel {
						t.Errorf("request %d cancelled without a cancel", i)
					}
				case status.DeadlineExceeded:
					expired.Add(1)
					if opts.Deadline.IsZero() {
						t.Errorf("request %d expired without a deadline", i)
					}
				default:
					t.Errorf("request %d: %v", i, res)
				}
				req.Cancel() // after completion: no effect
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	a.Close()
	for i := range calls {
		if c, want := calls[i].Load(), int32(map[bool]int{true: 1}[callbacks[i]]); c != want {
			t.Fatalf("request %d: callback ran %d times, want %d", i, c, want)
		}
	}
	s := a.Stats()
	if int64(s.Submitted) != accepted.Load() || int64(s.Completed) != ok.Load() || int64(s.Cancelled) != cancelled.Load() ||
		int64(s.CompletedByStatus[status.DeadlineExceeded]) != expired.Load() || s.Failed != uint64(expired.Load()) || s.QueueDepth != 0 {
		t.Fatalf("stats %+v; accepted %d ok %d cancelled %d expired %d", s, accepted.Load(), ok.Load(), cancelled.Load(), expired.Load())
	}
	if int64(ok.Load()+cancelled.Load()+expired.Load()) != int64(n) {
		t.Fatalf("%d + %d + %d completions for %d requests", ok.Load(), cancelled.Load(), expired.Load(), n)
	}
	waitGoroutines(t, base)
	t.Logf("%d requests in %v (%.0f/s): %d ok, %d cancelled, %d expired, %d BUSY retries; %d batches, %.1f requests/batch",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), ok.Load(), cancelled.Load(), expired.Load(), busy.Load(),
		s.SchedBatches, s.MeanBatchRequests)
}

// Merged batches of requests that want pooled vectors only, alike, are
// encoded with pooled outputs (pooledOnly); with poolings that differ, with
// the hidden states. Either way every request gets the bits it gets alone.
func TestSchedulerPooledOnlyMerge(t *testing.T) {
	e := newTestEngine(t, "auto", 2)
	models := schedModels(t, e)[:2] // dense BERT, block-sparse BigBird
	for _, mixed := range []bool{false, true} {
		a := NewAsync(AsyncOptions{MaxBatchTokens: 4096, MaxQueueDelay: 300 * time.Millisecond, QueueCapacity: 256})
		rng := rand.New(rand.NewPCG(7, 8))
		var jobs []*schedJob
		for i := range 48 {
			m := models[i%len(models)]
			j := newSchedJob(t, rng, m)
			o := Outputs{Pooled: make([]float32, j.b.NumSeqs()*m.Config().Hidden), Pooling: PoolMean, Normalize: true}
			if mixed && i%4 >= 2 {
				o.Pooling = PoolCLS
			}
			j.want, j.got = o, o
			j.got.Pooled = clone(o.Pooled)
			if err := m.Encode(context.Background(), j.b, &j.want); err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, j)
		}
		targets := map[*Model]*Target{}
		for _, m := range models {
			targets[m] = a.Target(m)
		}
		submitAndCheck(t, targets, jobs)
		s := a.Stats()
		a.Close()
		if s.MeanBatchRequests < 2 {
			t.Fatalf("mixed=%v: mean %.2f requests per batch: the test did not merge", mixed, s.MeanBatchRequests)
		}
		t.Logf("mixed poolings %v: %d batches for %d requests", mixed, s.SchedBatches, s.SchedRequests)
	}
}

// submitAndCheck submits every job to its model's target back to back, then
// waits for each and checks it against its result alone.
func submitAndCheck(t *testing.T, targets map[*Model]*Target, jobs []*schedJob) {
	t.Helper()
	reqs := make([]*Request, 0, len(jobs))
	for _, j := range jobs {
		r, err := targets[j.m].Submit(j.b, &j.got, SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	for i, r := range reqs {
		if err := r.Wait(time.Minute); err != nil {
			t.Fatal(err)
		}
		jobs[i].check(t)
	}
}
