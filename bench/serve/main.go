// Command serve is the scheduler's load benchmark (issue 8). One run, one
// engine, one model, one trace of requests with a realistic length mix,
// served three ways under an open-loop Poisson arrival process at fractions
// of capacity:
//
//	dynamic  raptor's scheduler: engine.Async with the length-aware
//	         scheduler (requests merged into packed batches up to the token
//	         budget or the queue delay, two lanes, priorities/deadlines unused)
//	single   submit-one-at-a-time: engine.Async with the FIFO scheduler and
//	         one lane, every request a batch of its own
//	dynamic-slack (optional) one lane, engine.NewLeastSlack with the goal
//	         2x the p99 of one request alone (DefaultSlack)
//	dynamic-1lane (optional) dynamic with one lane
//	dynamic-3lane (optional) dynamic with three lanes
//	dynamic-2lane (optional) dynamic with two lanes
//	dynamic-slack2 (optional) dynamic-slack with -lanes lanes
//	padded   static fixed-size padded batching: batches of -static-batch
//	         requests (or those that arrived within -static-timeout of the
//	         first), every sequence padded to the batch's longest, one batch
//	         at a time
//
// Every mode has the same bounded queue (-queue requests); a request that
// finds it full is refused (BUSY) and counted, never retried. Latency runs
// from the request's scheduled arrival to its completion. The best offline
// throughput is the trace sorted by length and run back to back in full
// batches (the best of -offline-budgets, one to three at a time, each
// repeated for at least a second). Capacity, of which the loads are
// fractions: -capacity round (the default) measures it before each round
// (that round's requests in arrival order, packed into -budget batches, one
// at a time, 2 s: for a machine whose background load changes); -capacity
// offline uses the best offline throughput for every run. The latency of one
// request alone is -alone requests (the trace's first ones), each run by
// itself on the idle engine after a first pass over them, measured before
// the loads and again after them, in the same process.
//
//	go run ./bench/serve [-model build/models/all-MiniLM-L6-v2.raptor] [-duration 20s]
//	    [-loads 25,50,90,110] [-modes dynamic,single,padded] [-json out.json]
//
// Output: Markdown tables on stdout (progress on stderr).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/raptor-infer/raptor/bench/internal/lenmix"
	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

type config struct {
	model         string
	duration      time.Duration
	loads         []float64
	modes         []string
	queue         int
	budget        int
	delay         time.Duration
	staticBatch   int
	staticTimeout time.Duration
	trace         int
	seed          uint64
	threads       int
	lanes         int
	backend       string
	slo           time.Duration // dynamic-slack: the latency goal, 2x the p99 of one request alone
	rounds        int
	arrival       string // "precise" or "sleep": how the arrival loop waits
	submitters    int    // goroutines submitting the arrivals (arrival i by submitter i mod submitters)
	tracePath     string // dynamic modes: per-batch traces (JSON lines) here, a summary on stderr
	traceOut      *os.File
	capacity      string  // "round" or "offline"
	offlineRPS    float64 // the best offline throughput (capacity "offline")
}

// result is one mode at one load.
type result struct {
	Mode        string    `json:"mode"`
	Load        float64   `json:"load"`         // fraction of capacity offered
	OfferedRPS  float64   `json:"offered_rps"`  // arrivals per second
	Arrivals    int       `json:"arrivals"`     // requests that arrived
	Busy        int       `json:"busy"`         // refused: queue full
	Completed   int       `json:"completed"`    // completed successfully
	RPS         float64   `json:"rps"`          // completions per second during the arrival window
	TokensPS    float64   `json:"tokens_ps"`    // real (unpadded) tokens per second, same window
	P50ms       float64   `json:"p50_ms"`       // latency, arrival to completion
	P99ms       float64   `json:"p99_ms"`       //
	Maxms       float64   `json:"max_ms"`       //
	MaxQueue    int       `json:"max_queue"`    // deepest queue seen (sampled every 5 ms)
	BatchReqs   float64   `json:"batch_reqs"`   // mean requests per batch
	PaddingFrac float64   `json:"padding_frac"` // padded tokens / computed tokens
	BusyShare   float64   `json:"busy_share"`   // device busy share over the window (dynamic, single)
	OtherCores  float64   `json:"other_cores"`  // CPU cores other processes used meanwhile (/proc/stat minus this process)
	CapRPS      float64   `json:"cap_rps"`      // capacity measured just before (offline batches of the run's requests)
	LateP50us   float64   `json:"late_p50_us"`  // submit lateness: actual submit - scheduled arrival
	LateP99us   float64   `json:"late_p99_us"`  //
	RoundP99ms  []float64 `json:"round_p99_ms"` // p99 of each round
	Stalls      []Stalls  `json:"stalls"`       // each round's process stalls (stalls.go)
}

type report struct {
	Date        string   `json:"date"`
	Machine     string   `json:"machine"`
	Backend     string   `json:"backend"`
	Command     string   `json:"command"`
	Model       string   `json:"model"`
	TraceMean   float64  `json:"trace_mean_tokens"`
	TraceP50    int      `json:"trace_p50_tokens"`
	TraceP99    int      `json:"trace_p99_tokens"`
	OfflineRPS  float64  `json:"offline_rps"`
	OfflineTPS  float64  `json:"offline_tokens_ps"`
	OfflineCfg  string   `json:"offline_config"`
	AloneP50ms  float64  `json:"alone_p50_ms"`
	AloneP99ms  float64  `json:"alone_p99_ms"`
	AloneMeanms float64  `json:"alone_mean_ms"`
	AloneN      int      `json:"alone_n"`             // requests alone, each pass
	Warmup      string   `json:"warmup,omitempty"`    // engine.Model.Warmup before the measurements: what it ran
	Alone1P99ms float64  `json:"alone_before_p99_ms"` // the pass before the loads
	Alone2P50ms float64  `json:"alone_after_p50_ms"`  // the pass after them
	Alone2P99ms float64  `json:"alone_after_p99_ms"`  //
	Capacity    string   `json:"capacity"`            // round or offline
	Offline     []string `json:"offline_configs"`     // every offline configuration's rate
	Results     []result `json:"results"`
	Quiet       []result `json:"quiet_results"` // the rounds in which other processes used < 0.15 cores during every mode
	QuietRounds []int    `json:"quiet_rounds"`  // how many, per load
}

func main() {
	var c config
	loads := flag.String("loads", "25,50,90,110", "offered loads, percent of capacity")
	modes := flag.String("modes", "dynamic,single,padded", "serving modes to run")
	flag.StringVar(&c.model, "model", "build/models/all-MiniLM-L6-v2.raptor", "raptor model file, or random:minilm / random:bert-base (random f16 weights in that shape, built in memory)")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "arrival window of each run")
	flag.IntVar(&c.queue, "queue", 32, "queue capacity (requests) of every mode")
	flag.IntVar(&c.budget, "budget", 1024, "dynamic: token budget of a batch (MaxBatchTokens)")
	flag.DurationVar(&c.delay, "delay", 2*time.Millisecond, "dynamic: queue delay (MaxQueueDelay)")
	flag.IntVar(&c.staticBatch, "static-batch", 16, "padded: requests per batch")
	flag.DurationVar(&c.staticTimeout, "static-timeout", 50*time.Millisecond, "padded: longest wait for a batch to fill")
	flag.IntVar(&c.trace, "trace", 4096, "distinct requests in the trace")
	flag.Uint64Var(&c.seed, "seed", 1, "trace and arrival seed")
	flag.IntVar(&c.threads, "threads", 0, "CPU threads (0 = all cores)")
	flag.IntVar(&c.lanes, "lanes", 2, "dynamic: compute lanes")
	flag.StringVar(&c.backend, "backend", "cpu", "engine backend: cpu or cuda (the model file's dtype, e.g. f16, is used as stored)")
	flag.IntVar(&c.rounds, "rounds", 3, "each load runs the modes in this many interleaved rounds of duration/rounds")
	flag.IntVar(&c.submitters, "submitters", 1, "goroutines that submit the arrivals, as a server's many client threads would (arrival i by goroutine i mod N; each waits for its own arrivals' times)")
	flag.StringVar(&c.arrival, "arrival", "precise", "arrival loop: precise (coarse sleep, then nanosleep and a short spin to the arrival) or sleep (time.Sleep, "+
		"which on Linux oversleeps to ~1.1 ms when the process is idle)")
	flag.StringVar(&c.tracePath, "batch-trace", "", "dynamic modes: write every batch's timings here (JSON lines) and a summary per run on stderr")
	flag.StringVar(&c.capacity, "capacity", "round", "what the loads are fractions of: round (measured before each round: -budget batches of the "+
		"round's requests in arrival order, one at a time) or offline (the best offline throughput)")
	aloneN := flag.Int("alone", 300, "requests measured alone (before and after the loads)")
	warmup := flag.Bool("warmup", true, "warm the model up first (engine.Model.Warmup for the bench's requests: mean-pooled, batches up to -budget tokens; on the GPU every batch class's CUDA graph is captured before traffic)")
	offBudgets := flag.String("offline-budgets", "", "token budgets tried for the best offline throughput (default: -budget and 4x -budget)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the load runs here")
	jsonOut := flag.String("json", "", "also write the results as JSON here")
	flag.Parse()
	for _, f := range strings.Split(*loads, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			fail(err)
		}
		c.loads = append(c.loads, v/100)
	}
	c.modes = strings.Split(*modes, ",")
	if c.capacity != "round" && c.capacity != "offline" {
		fail(fmt.Errorf("-capacity %q: round or offline", c.capacity))
	}
	budgets := []int{c.budget, 4 * c.budget}
	if *offBudgets != "" {
		budgets = nil
		for _, f := range strings.Split(*offBudgets, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || v <= 0 {
				fail(fmt.Errorf("-offline-budgets: %q", f))
			}
			budgets = append(budgets, v)
		}
	}
	if c.tracePath != "" {
		f, err := os.Create(c.tracePath)
		if err != nil {
			fail(err)
		}
		defer f.Close()
		c.traceOut = f
	}

	opts := engine.DefaultOptions()
	switch c.backend {
	case "cpu":
		opts.Backend = engine.BackendCPU
	case "cuda":
		opts.Backend = engine.BackendCUDA
	default:
		fail(fmt.Errorf("unknown backend %q", c.backend))
	}
	opts.Threads = c.threads
	opts.Log = func(engine.LogLevel, string) {}
	e, err := engine.New(opts)
	if err != nil {
		fail(err)
	}
	defer e.Close()
	f, err := openModel(c.model)
	if err != nil {
		fail(err)
	}
	m, err := e.Load(f)
	f.Close()
	if err != nil {
		fail(err)
	}
	cfg := m.Config()
	maxLen := cfg.MaxPositions - cfg.PositionOffset
	trace := makeTrace(c.trace, c.seed, cfg.VocabSize, maxLen)

	rep := report{
		Date:    time.Now().UTC().Format("2006-01-02"),
		Machine: cpuModel(),
		Backend: e.BackendName(),
		Command: "go run ./bench/serve " + strings.Join(os.Args[1:], " "),
		Model:   c.model,
	}
	lens := make([]int, len(trace))
	for i, r := range trace {
		lens[i] = len(r)
		rep.TraceMean += float64(len(r)) / float64(len(trace))
	}
	slices.Sort(lens)
	rep.TraceP50, rep.TraceP99 = lens[len(lens)/2], lens[len(lens)*99/100]

	// Warm up, then the latency of one request alone and the best offline throughput.
	if *warmup {
		t0 := time.Now()
		st, err := m.Warmup(context.Background(), engine.WarmupOptions{MaxTokens: c.budget, Pooled: true, Pooling: engine.PoolMean})
		if err != nil {
			fail(fmt.Errorf("warm-up: %w", err))
		}
		rep.Warmup = fmt.Sprintf("%d classes, %d batches in %v", st.Classes, st.Batches, time.Since(t0).Round(time.Millisecond))
		logf("warm-up: %s", rep.Warmup)
	}
	for i := range 5 {
		encodeAlone(m, trace[i])
	}
	nAlone := min(max(*aloneN, 1), len(trace))
	rep.AloneN = nAlone
	logf("one request alone (%d requests)...", nAlone)
	for i := range nAlone {
		encodeAlone(m, trace[i]) // a first pass: every length once (the GPU's per-shape setup)
	}
	alone := measureAlone(m, trace[:nAlone])
	rep.AloneP50ms, rep.AloneP99ms = quantile(alone, 0.5), quantile(alone, 0.99)
	rep.Alone1P99ms = rep.AloneP99ms
	for _, v := range alone {
		rep.AloneMeanms += v / float64(len(alone))
	}
	logf("alone: p50 %.2f ms, p99 %.2f ms", rep.AloneP50ms, rep.AloneP99ms)
	c.slo = time.Duration(2 * rep.AloneP99ms * float64(time.Millisecond))
	maxBudget := slices.Max(budgets)
	rep.OfflineRPS, rep.OfflineTPS, rep.OfflineCfg, rep.Offline = offline(m, trace[:min(max(600, maxBudget/2), len(trace))], budgets)
	logf("best offline: %.1f requests/s, %.0f tokens/s (%s)", rep.OfflineRPS, rep.OfflineTPS, rep.OfflineCfg)
	c.offlineRPS = rep.OfflineRPS
	rep.Capacity = c.capacity
	if *cpuProfile != "" {
		pf, err := os.Create(*cpuProfile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			fail(err)
		}
		defer pf.Close()
	}

	// Each load runs the modes in interleaved rounds (dynamic, single,
	// padded, dynamic, ...), so that all modes share the machine's
	// background load alike; a mode's rounds are then merged.
	seg := c
	seg.duration = c.duration / time.Duration(c.rounds)
	for _, load := range c.loads {
		parts := map[string][]partial{}
		for round := range c.rounds {
			for _, mode := range c.modes {
				p := run(m, trace, seg, mode, load, uint64(round))
				parts[mode] = append(parts[mode], p)
				logf("%-8s %3.0f%% round %d: %.1f/%.1f rps, p50 %.0f ms, p99 %.1f ms, busy %d/%d, max queue %d, %.1f req/batch, padding %.2f, other cores %.2f, submit late p99 %.0f us; %v",
					mode, 100*load, round, p.RPS, p.OfferedRPS, quantile(p.lat, 0.5), quantile(p.lat, 0.99), p.Busy, p.Arrivals,
					p.MaxQueue, p.BatchReqs, p.PaddingFrac, p.OtherCores, p.LateP99us, p.Stalls[0])
			}
		}
		for _, mode := range c.modes {
			rep.Results = append(rep.Results, merge(parts[mode], c.rounds))
		}
		quiet := map[string][]partial{}
		nq := 0
		for round := range c.rounds {
			ok := true
			for _, mode := range c.modes {
				ok = ok && parts[mode][round].OtherCores < 0.15
			}
			if ok {
				nq++
				for _, mode := range c.modes {
					quiet[mode] = append(quiet[mode], parts[mode][round])
				}
			}
		}
		rep.QuietRounds = append(rep.QuietRounds, nq)
		if nq > 0 {
			for _, mode := range c.modes {
				rep.Quiet = append(rep.Quiet, merge(quiet[mode], nq))
			}
		}
	}
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	// One request alone again, after the loads (same process): how stable
	// the yardstick is. The target's yardstick is both passes together.
	alone2 := measureAlone(m, trace[:nAlone])
	rep.Alone2P50ms, rep.Alone2P99ms = quantile(alone2, 0.5), quantile(alone2, 0.99)
	both := append(slices.Clone(alone), alone2...)
	rep.AloneP50ms, rep.AloneP99ms = quantile(both, 0.5), quantile(both, 0.99)
	rep.AloneMeanms = 0
	for _, v := range both {
		rep.AloneMeanms += v / float64(len(both))
	}
	logf("alone after the loads: p50 %.2f ms, p99 %.2f ms; both passes: p50 %.2f ms, p99 %.2f ms", rep.Alone2P50ms, rep.Alone2P99ms, rep.AloneP50ms, rep.AloneP99ms)
	printReport(&rep, c)
	if *jsonOut != "" {
		raw, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			fail(err)
		}
		if err := os.WriteFile(*jsonOut, raw, 0o644); err != nil {
			fail(err)
		}
	}
}

// makeTrace draws n single-sequence requests: 55% of 8-64 tokens, 30% of
// 65-192, 12% of 193-384 and 3% of 385-maxLen (a search/RAG embedding mix:
// mostly short queries and passages, a tail of long documents).
func makeTrace(n int, seed uint64, vocab, maxLen int) [][]int32 {
	rng := rand.New(rand.NewPCG(seed, 42))
	trace := make([][]int32, n)
	for i := range trace {
		l := lenmix.Draw(rng, maxLen)
		ids := make([]int32, l)
		for k := range ids {
			ids[k] = int32(1000 + rng.IntN(min(vocab, 29000)-1000))
		}
		trace[i] = ids
	}
	return trace
}

func single(ids []int32) *engine.Batch {
	return &engine.Batch{Tokens: ids, CuSeqlens: []int32{0, int32(len(ids))}}
}

// measureAlone runs each request by itself, one after another, and
// returns the latencies (ms).
func measureAlone(m *engine.Model, reqs [][]int32) []float64 {
	out := make([]float64, 0, len(reqs))
	for _, ids := range reqs {
		t0 := time.Now()
		encodeAlone(m, ids)
		out = append(out, ms(time.Since(t0)))
	}
	return out
}

func encodeAlone(m *engine.Model, ids []int32) {
	out := &engine.Outputs{Pooled: make([]float32, m.Config().Hidden), Pooling: engine.PoolMean}
	if err := m.Encode(context.Background(), single(ids), out); err != nil {
		fail(err)
	}
}

// offline is the best throughput of the requests run offline: sorted by
// length, packed into batches of each token budget, back to back (one to
// three batches at a time), each configuration repeated for at least a
// second. all lists every configuration's rate.
func offline(m *engine.Model, reqs [][]int32, budgets []int) (rps, tps float64, cfg string, all []string) {
	sorted := slices.Clone(reqs)
	slices.SortFunc(sorted, func(a, b []int32) int { return len(a) - len(b) })
	tokens := 0
	for _, r := range sorted {
		tokens += len(r)
	}
	H := m.Config().Hidden
	for _, budget := range budgets {
		var batches []*engine.Batch
		b := &engine.Batch{CuSeqlens: []int32{0}}
		for _, r := range sorted {
			if len(b.Tokens) > 0 && len(b.Tokens)+len(r) > budget {
				batches = append(batches, b)
				b = &engine.Batch{CuSeqlens: []int32{0}}
			}
			b.Tokens = append(b.Tokens, r...)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
		}
		batches = append(batches, b)
		for _, workers := range []int{1, 2, 3} {
			logf("offline: budget %d, %d at a time...", budget, workers)
			var next atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			passes := 0
			for passes == 0 || time.Since(t0) < time.Second {
				passes++
				next.Store(0)
				for range workers {
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= len(batches) {
								return
							}
							bt := batches[i]
							out := &engine.Outputs{Pooled: make([]float32, bt.NumSeqs()*H), Pooling: engine.PoolMean}
							if err := m.Encode(context.Background(), bt, out); err != nil {
								fail(err)
							}
						}
					})
				}
				wg.Wait()
			}
			d := time.Since(t0).Seconds()
			r := float64(passes*len(sorted)) / d
			all = append(all, fmt.Sprintf("%d tokens x%d: %.1f req/s", budget, workers, r))
			logf("offline: budget %d, %d at a time: %.1f requests/s (%d passes)", budget, workers, r, passes)
			if r > rps {
				rps, tps = r, float64(passes*tokens)/d
				cfg = fmt.Sprintf("length-sorted batches of <= %d tokens, %d at a time", budget, workers)
			}
		}
	}
	return rps, tps, cfg, all
}

// server is one serving mode under test.
type server interface {
	// submit offers request i; done is called once on completion (never for
	// a refused request). false: refused, the queue is full.
	submit(i int, ids []int32, done func(error)) bool
	queueDepth() int
	close() (batchReqs, padding, busyShare float64)
}

// partial is one round of a mode at a load: its result and latencies.
type partial struct {
	result
	lat []float64
}

// merge combines the rounds of a mode: counts add up, rates and shares are
// averaged, latency quantiles are over all rounds' requests.
func merge(ps []partial, rounds int) result {
	r := ps[0].result
	var lat []float64
	r.Arrivals, r.Busy, r.Completed, r.RPS, r.TokensPS, r.BatchReqs, r.PaddingFrac, r.BusyShare, r.OtherCores, r.MaxQueue = 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
	r.CapRPS, r.OfferedRPS, r.LateP50us, r.LateP99us = 0, 0, 0, 0
	r.Stalls = nil
	for _, p := range ps {
		r.Stalls = append(r.Stalls, p.Stalls...)
		lat = append(lat, p.lat...)
		r.Arrivals += p.Arrivals
		r.Busy += p.Busy
		r.Completed += p.Completed
		r.MaxQueue = max(r.MaxQueue, p.MaxQueue)
		n := float64(rounds)
		r.RPS += p.RPS / n
		r.TokensPS += p.TokensPS / n
		r.BatchReqs += p.BatchReqs / n
		r.PaddingFrac += p.PaddingFrac / n
		r.BusyShare += p.BusyShare / n
		r.OtherCores += p.OtherCores / n
		r.CapRPS += p.CapRPS / n
		r.OfferedRPS += p.OfferedRPS / n
		r.LateP50us = max(r.LateP50us, p.LateP50us)
		r.LateP99us = max(r.LateP99us, p.LateP99us)
		r.RoundP99ms = append(r.RoundP99ms, quantile(p.lat, 0.99))
	}
	r.P50ms, r.P99ms = quantile(lat, 0.5), quantile(lat, 0.99)
	if len(lat) > 0 {
		r.Maxms = slices.Max(lat)
	}
	return r
}

// calibrate is the capacity just before a run: the run's own requests (from
// trace[start:]) packed in arrival order into batches of budget tokens, run
// back to back for about two seconds. (This machine's cores are shared with
// other workloads whose load changes by the minute: a capacity measured once
// would not say what "90%" is ten minutes later.)
func calibrate(m *engine.Model, trace [][]int32, start, budget int) float64 {
	H := m.Config().Hidden
	t0 := time.Now()
	n := 0
	for i := start; time.Since(t0) < 2*time.Second; {
		b := &engine.Batch{CuSeqlens: []int32{0}}
		for len(b.Tokens) < budget {
			ids := trace[i%len(trace)]
			if len(b.Tokens) > 0 && len(b.Tokens)+len(ids) > budget {
				break
			}
			b.Tokens = append(b.Tokens, ids...)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
			i++
		}
		out := &engine.Outputs{Pooled: make([]float32, b.NumSeqs()*H), Pooling: engine.PoolMean}
		if err := m.Encode(context.Background(), b, out); err != nil {
			fail(err)
		}
		n += b.NumSeqs()
	}
	return float64(n) / time.Since(t0).Seconds()
}

func run(m *engine.Model, trace [][]int32, c config, mode string, load float64, round uint64) partial {
	start := int(round) * 1024 // the same requests, in the same order, for every mode
	capRPS := c.offlineRPS
	if c.capacity == "round" {
		capRPS = calibrate(m, trace, start, c.budget)
	}
	rate := load * capRPS
	var traces []engine.BatchTrace
	var traceMu sync.Mutex
	aopts := func(o engine.AsyncOptions) engine.AsyncOptions {
		if c.traceOut != nil {
			o.Trace = func(t engine.BatchTrace) {
				traceMu.Lock()
				traces = append(traces, t)
				traceMu.Unlock()
			}
		}
		return o
	}
	var s server
	switch mode {
	case "dynamic":
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: c.lanes}))
	case "dynamic-1lane":
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: 1}))
	case "dynamic-slack":
		// one lane, least slack first, batches grown only within every
		// member's goal: 2x the p99 of one request alone (engine.NewLeastSlack)
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: 1,
			Scheduler: engine.NewLeastSlack(), DefaultSlack: c.slo}))
	case "dynamic-slack2":
		// two lanes, least slack first (engine.NewLeastSlack), goal 2x the p99 alone
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: c.lanes,
			Scheduler: engine.NewLeastSlack(), DefaultSlack: c.slo}))
	case "dynamic-3lane":
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: 3}))
	case "dynamic-2lane":
		s = newAsyncServer(m, aopts(engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, MaxQueueDelay: c.delay, Lanes: 2}))
	case "single":
		s = newAsyncServer(m, engine.AsyncOptions{QueueCapacity: c.queue, MaxBatchTokens: c.budget, Lanes: 1, Scheduler: engine.NewFIFO()})
	case "padded":
		s = newPaddedServer(m, c.queue, c.staticBatch, c.staticTimeout)
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
	rng := rand.New(rand.NewPCG(c.seed, uint64(load*1000)+round<<32))
	var arrivals []time.Duration
	for t := time.Duration(0); ; {
		t += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if t >= c.duration {
			break
		}
		arrivals = append(arrivals, t)
	}
	res := result{Mode: mode, Load: load, OfferedRPS: rate, Arrivals: len(arrivals), CapRPS: capRPS}
	var mu sync.Mutex
	var lat []float64
	var windowDone, windowTokens int
	var wg sync.WaitGroup
	cpu0, self0 := cpuTicks()
	st0 := sampleStalls()
	t0 := time.Now()
	end := t0.Add(c.duration)
	stop := make(chan struct{})
	maxQ := 0
	go func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				if q := s.queueDepth(); q > maxQ {
					maxQ = q
				}
			}
		}
	}()
	// submit offers arrival i; its completion records its latency and,
	// inside the window, the window's counts. false: refused (BUSY).
	submit := func(i int, arrive time.Time) bool {
		ids := trace[(start+i)%len(trace)]
		wg.Add(1)
		ok := s.submit(i, ids, func(err error) {
			now := time.Now()
			mu.Lock()
			if err == nil {
				lat = append(lat, ms(now.Sub(arrive)))
				if now.Before(end) {
					windowDone++
					windowTokens += len(ids)
				}
			}
			mu.Unlock()
			if err != nil {
				fail(fmt.Errorf("%s: request failed: %w", mode, err))
			}
			wg.Done()
		})
		if !ok {
			wg.Done()
		}
		return ok
	}
	// Submitter k submits arrivals k, k+n, k+2n, ... each at its time and
	// records its submit lateness.
	nsub := max(1, c.submitters)
	lates := make([][]float64, nsub)
	var busy atomic.Int64
	var subs sync.WaitGroup
	for k := range nsub {
		subs.Add(1)
		go func() {
			defer subs.Done()
			for i := k; i < len(arrivals); i += nsub {
				arrive := t0.Add(arrivals[i])
				waitUntil(arrive, c.arrival == "precise")
				lates[k] = append(lates[k], float64(time.Since(arrive))/float64(time.Microsecond))
				if !submit(i, arrive) {
					busy.Add(1)
				}
			}
		}()
	}
	subs.Wait()
	res.Busy = int(busy.Load())
	var late []float64
	for _, l := range lates {
		late = append(late, l...)
	}
	wg.Wait()
	close(stop)
	cpu1, self1 := cpuTicks()
	res.Stalls = []Stalls{stallsBetween(st0, sampleStalls())}
	res.OtherCores = float64((cpu1-cpu0)-(self1-self0)) / clockTicks / time.Since(t0).Seconds()
	res.BatchReqs, res.PaddingFrac, res.BusyShare = s.close()
	res.MaxQueue = maxQ
	res.Completed = len(lat)
	res.RPS = float64(windowDone) / c.duration.Seconds()
	res.TokensPS = float64(windowTokens) / c.duration.Seconds()
	res.LateP50us, res.LateP99us = quantile(late, 0.5), quantile(late, 0.99)
	if c.traceOut != nil && len(traces) > 0 {
		traceMu.Lock()
		summarizeTraces(c.traceOut, mode, load, round, traces, lat, late)
		traceMu.Unlock()
	}
	return partial{res, lat}
}

// randomShapes are the -model random:NAME models: random weights
// (loader.NewRandomWriter) in the shapes of common encoders, f16, for
// timing runs without a checkpoint file.
var randomShapes = map[string]loader.Config{
	"minilm":    {Family: loader.FamilyBERT, Hidden: 384, Layers: 6, Heads: 12, Intermediate: 1536},
	"bert-base": {Family: loader.FamilyBERT, Hidden: 768, Layers: 12, Heads: 12, Intermediate: 3072},
}

// openModel opens a model file, or builds random:NAME in memory.
func openModel(path string) (*loader.File, error) {
	name, ok := strings.CutPrefix(path, "random:")
	if !ok {
		return loader.Open(path)
	}
	cfg, ok := randomShapes[name]
	if !ok {
		return nil, fmt.Errorf("unknown random model %q (minilm, bert-base)", name)
	}
	cfg.VocabSize, cfg.MaxPositions, cfg.TypeVocabSize, cfg.LayerNormEps = 30522, 512, 2, 1e-12
	cfg.Activation, cfg.Attention, cfg.Pooler, cfg.DType = loader.ActGELU, loader.AttentionDense, true, loader.F16
	w, err := loader.NewRandomWriter(cfg, 1, loader.WriterOptions{})
	if err != nil {
		return nil, err
	}
	b, err := w.Bytes()
	if err != nil {
		return nil, err
	}
	return loader.Read(b)
}

// waitUntil returns at t. precise: time.Sleep to about 1.5 ms before t
// (a shorter time.Sleep lasts ~1.1 ms once the process is idle: the Go
// runtime waits in epoll_wait, in whole milliseconds), then nanosleep to
// 200 us before t, then yield until t; otherwise time.Sleep alone.
func waitUntil(t time.Time, precise bool) {
	d := time.Until(t)
	if !precise {
		time.Sleep(d)
		return
	}
	if d > 2*time.Millisecond {
		time.Sleep(d - 1500*time.Microsecond)
	}
	for time.Until(t) > 200*time.Microsecond {
		ts := syscall.NsecToTimespec(int64(100 * time.Microsecond))
		_ = syscall.Nanosleep(&ts, nil)
	}
	for time.Now().Before(t) {
		runtime.Gosched()
	}
}

// traceLine is one batch in the -trace file: durations in microseconds.
type traceLine struct {
	Mode      string  `json:"mode"`
	Load      float64 `json:"load"`
	Round     uint64  `json:"round"`
	AtMs      float64 `json:"at_ms"` // Formed, since the run's first batch was formed
	Lane      int     `json:"lane"`
	Busy      int     `json:"busy_lanes"`
	Requests  int     `json:"requests"`
	Tokens    int     `json:"tokens"`
	CloseUs   float64 `json:"close_us"`   // oldest member's submit -> formed
	PackUs    float64 `json:"pack_us"`    // formed -> packed
	LaneUs    float64 `json:"lane_us"`    // packed -> the encoder started
	ComputeUs float64 `json:"compute_us"` // encoder start -> end
	DeliverUs float64 `json:"deliver_us"` // encoder end -> last member completed
	EnqQUs    float64 `json:"enq_queued_us"`
	EnqUs     float64 `json:"enqueue_us"`
	PlanMiss  int64   `json:"plan_misses"`
	PlanUs    float64 `json:"plan_us"`
	WaitUs    float64 `json:"wait_us"`
	Polls     int     `json:"polls"`
	CopyUs    float64 `json:"copy_us"`
	RelUs     float64 `json:"release_us"`
	DevUs     float64 `json:"device_us"`
}

// summarizeTraces writes a run's batches to w (JSON lines) and their
// distribution to stderr.
func summarizeTraces(w *os.File, mode string, load float64, round uint64, traces []engine.BatchTrace, lat, late []float64) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	slices.SortFunc(traces, func(a, b engine.BatchTrace) int { return a.Formed.Compare(b.Formed) })
	t0 := traces[0].Formed
	cols := map[string][]float64{}
	enc := json.NewEncoder(w)
	for _, t := range traces {
		l := traceLine{Mode: mode, Load: load, Round: round, AtMs: us(t.Formed.Sub(t0)) / 1000, Lane: t.Lane, Busy: t.BusyLanes,
			Requests: t.Requests, Tokens: t.Tokens, CloseUs: us(t.Formed.Sub(t.FirstSubmit)), PackUs: us(t.Packed.Sub(t.Formed)),
			LaneUs: us(t.Start.Sub(t.Packed)), ComputeUs: us(t.End.Sub(t.Start)), DeliverUs: us(t.Delivered.Sub(t.End)),
			EnqQUs: us(t.GPU.EnqueueQueued), EnqUs: us(t.GPU.Enqueue), PlanMiss: t.GPU.PlanMisses, PlanUs: us(t.GPU.PlanTime),
			WaitUs: us(t.GPU.Wait), Polls: t.GPU.Polls, CopyUs: us(t.GPU.Copy), RelUs: us(t.GPU.Release), DevUs: float64(t.GPU.DeviceMs) * 1000}
		_ = enc.Encode(l)
		for k, v := range map[string]float64{"req": float64(l.Requests), "tokens": float64(l.Tokens), "close": l.CloseUs, "pack": l.PackUs,
			"lane": l.LaneUs, "compute": l.ComputeUs, "deliver": l.DeliverUs, "enqQ": l.EnqQUs, "enq": l.EnqUs, "planMiss": float64(l.PlanMiss),
			"plan": l.PlanUs, "wait": l.WaitUs, "polls": float64(l.Polls), "copy": l.CopyUs, "rel": l.RelUs, "dev": l.DevUs} {
			cols[k] = append(cols[k], v)
		}
	}
	span := us(traces[len(traces)-1].End.Sub(t0))
	dev := 0.0
	for _, v := range cols["dev"] {
		dev += v
	}
	logf("trace %s %.0f%% round %d: %d batches; latency p50 %.2f p99 %.2f ms; submit late p50 %.0f p99 %.0f us; device busy %.1f%% (sum of kernel spans / wall)",
		mode, 100*load, round, len(traces), quantile(lat, 0.5), quantile(lat, 0.99), quantile(late, 0.5), quantile(late, 0.99), 100*dev/math.Max(span, 1))
	for _, k := range []string{"req", "tokens", "close", "pack", "lane", "compute", "enqQ", "enq", "planMiss", "plan", "dev", "wait", "polls", "copy", "rel", "deliver"} {
		v := cols[k]
		mean := 0.0
		for _, x := range v {
			mean += x / float64(len(v))
		}
		logf("  %-8s mean %9.1f  p50 %9.1f  p90 %9.1f  p99 %9.1f  max %9.1f", k, mean, quantile(v, 0.5), quantile(v, 0.9), quantile(v, 0.99), slices.Max(v))
	}
}

// clockTicks is USER_HZ, the unit of /proc/stat and /proc/self/stat.
const clockTicks = 100

// cpuTicks returns the busy CPU ticks of the machine (/proc/stat: all but
// idle and iowait) and of this process (/proc/self/stat: utime + stime).
func cpuTicks() (all, self int64) {
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(raw), "\n", 2)[0])
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			if i != 3 && i != 4 && i < 8 { // idle, iowait; guest time is counted in user
				all += n
			}
		}
	}
	if raw, err := os.ReadFile("/proc/self/stat"); err == nil {
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		u, _ := strconv.ParseInt(f[11], 10, 64)
		k, _ := strconv.ParseInt(f[12], 10, 64)
		self = u + k
	}
	return all, self
}

// asyncServer serves through an engine.Async (dynamic and single).
type asyncServer struct {
	a  *engine.Async
	tg *engine.Target
	h  int
}

func newAsyncServer(m *engine.Model, o engine.AsyncOptions) *asyncServer {
	a := engine.NewAsync(o)
	return &asyncServer{a: a, tg: a.Target(m), h: m.Config().Hidden}
}

func (s *asyncServer) submit(_ int, ids []int32, done func(error)) bool {
	out := &engine.Outputs{Pooled: make([]float32, s.h), Pooling: engine.PoolMean}
	_, err := s.tg.Submit(single(ids), out, engine.SubmitOptions{Done: func(r *engine.Request) { done(r.Err()) }})
	if status.CodeOf(err) == status.Busy {
		return false
	}
	if err != nil {
		fail(err)
	}
	return true
}

func (s *asyncServer) queueDepth() int { return int(s.a.Stats().QueueDepth) }

func (s *asyncServer) close() (float64, float64, float64) {
	st := s.a.Stats()
	s.a.Close()
	return st.MeanBatchRequests, st.PaddingRatio, st.DeviceBusyShare
}

// paddedServer is static fixed-size batching with padding: a bounded queue,
// one batcher that takes up to `size` requests (waiting at most `timeout`
// after the first), pads every sequence to the longest and encodes them as
// one batch.
type paddedServer struct {
	m       *engine.Model
	q       chan padReq
	size    int
	timeout time.Duration
	done    chan struct{}
	batches atomic.Int64
	reqs    atomic.Int64
	real    atomic.Int64
	padded  atomic.Int64
}

type padReq struct {
	ids  []int32
	done func(error)
}

func newPaddedServer(m *engine.Model, queue, size int, timeout time.Duration) *paddedServer {
	s := &paddedServer{m: m, q: make(chan padReq, queue), size: size, timeout: timeout, done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *paddedServer) submit(_ int, ids []int32, done func(error)) bool {
	select {
	case s.q <- padReq{ids, done}:
		return true
	default:
		return false
	}
}

func (s *paddedServer) queueDepth() int { return len(s.q) }

func (s *paddedServer) loop() {
	defer close(s.done)
	H := s.m.Config().Hidden
	for {
		first, ok := <-s.q
		if !ok {
			return
		}
		batch := []padReq{first}
		timer := time.NewTimer(s.timeout)
	fill:
		for len(batch) < s.size {
			select {
			case r, ok := <-s.q:
				if !ok {
					break fill
				}
				batch = append(batch, r)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		L := 0
		for _, r := range batch {
			L = max(L, len(r.ids))
		}
		b := &engine.Batch{CuSeqlens: []int32{0}}
		for _, r := range batch {
			b.Tokens = append(b.Tokens, r.ids...)
			b.Tokens = append(b.Tokens, make([]int32, L-len(r.ids))...) // padding (token 0)
			b.CuSeqlens = append(b.CuSeqlens, int32(len(b.Tokens)))
			s.real.Add(int64(len(r.ids)))
		}
		s.padded.Add(int64(len(b.Tokens)))
		out := &engine.Outputs{Pooled: make([]float32, len(batch)*H), Pooling: engine.PoolMean}
		err := s.m.Encode(context.Background(), b, out)
		s.batches.Add(1)
		s.reqs.Add(int64(len(batch)))
		for _, r := range batch {
			r.done(err)
		}
	}
}

func (s *paddedServer) close() (float64, float64, float64) {
	close(s.q)
	<-s.done
	br := float64(s.reqs.Load()) / math.Max(1, float64(s.batches.Load()))
	pad := 0.0
	if p := s.padded.Load(); p > 0 {
		pad = float64(p-s.real.Load()) / float64(p)
	}
	return br, pad, 0 // (no device busy share: it runs outside an Async)
}

func printReport(r *report, c config) {
	fmt.Printf("Date %s; machine: %s; backend: %s.\n", r.Date, r.Machine, r.Backend)
	fmt.Printf("Command: `%s`\n\n", r.Command)
	fmt.Printf("Model %s. Trace: %d single-sequence requests, mean %.0f tokens, p50 %d, p99 %d "+
		"(55%% 8-64, 30%% 65-192, 12%% 193-384, 3%% 385-512). Arrivals: Poisson, %v per run; queue %d requests "+
		"(a full queue refuses: BUSY). dynamic: MaxBatchTokens %d, MaxQueueDelay %v, %d lanes. "+
		"padded: %d requests per batch or %v, padded to the batch's longest.\n\n",
		r.Model, c.trace, r.TraceMean, r.TraceP50, r.TraceP99, c.duration, c.queue, c.budget, c.delay, c.lanes, c.staticBatch, c.staticTimeout)
	fmt.Printf("Best offline throughput at the start: %.1f requests/s, %.0f tokens/s (%s; all: %s). ",
		r.OfflineRPS, r.OfflineTPS, r.OfflineCfg, strings.Join(r.Offline, ", "))
	if c.capacity == "offline" {
		fmt.Printf("Capacity (what the loads are fractions of) = this best offline throughput, for every run. ")
	} else {
		fmt.Printf("Each run's load is a share of the capacity measured just before it (its own requests packed into %d-token "+
			"batches, back to back, one at a time, 2 s), because other workloads may share this machine's cores (column: "+
			"the cores they used meanwhile). ", c.budget)
	}
	if r.Warmup != "" {
		fmt.Printf("Warm-up first (engine.Model.Warmup, mean-pooled requests, batches up to %d tokens): %s. ", c.budget, r.Warmup)
	} else {
		fmt.Printf("No warm-up (-warmup=false). ")
	}
	fmt.Printf("One request alone (%d requests, each pass after a first pass over them; before and after the loads, in this "+
		"process): p50 %.2f ms, p99 %.2f ms, mean %.2f ms (before: p99 %.2f ms; after: p50 %.2f, p99 %.2f ms).\n\n",
		r.AloneN, r.AloneP50ms, r.AloneP99ms, r.AloneMeanms, r.Alone1P99ms, r.Alone2P50ms, r.Alone2P99ms)
	table := func(results []result) {
		fmt.Println("| load | mode | capacity req/s | offered req/s | served req/s | served/capacity | served/best offline | tokens/s | p50 ms | p99 ms | max ms | BUSY | max queue | req/batch | padding | other procs' cores | submit late p99 us |")
		fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, x := range results {
			fmt.Printf("| %.0f%% | %s | %.1f | %.1f | %.1f | %.0f%% | %.1f%% | %.0f | %.2f | %.2f | %.2f | %d/%d (%.0f%%) | %d | %.1f | %.0f%% | %.2f | %.0f |\n",
				100*x.Load, x.Mode, x.CapRPS, x.OfferedRPS, x.RPS, 100*x.RPS/x.CapRPS, 100*x.RPS/r.OfflineRPS, x.TokensPS, x.P50ms, x.P99ms, x.Maxms, x.Busy, x.Arrivals,
				100*float64(x.Busy)/math.Max(1, float64(x.Arrivals)), x.MaxQueue, x.BatchReqs, 100*x.PaddingFrac, x.OtherCores, x.LateP99us)
		}
		fmt.Println()
	}
	fmt.Printf("All %d rounds per load:\n\n", c.rounds)
	table(r.Results)
	fmt.Printf("Quiet rounds only (other processes used < 0.15 cores during all three modes' runs of the round; per load: %v of %d):\n\n",
		r.QuietRounds, c.rounds)
	table(r.Quiet)
	// The issue's targets, for the dynamic scheduler.
	targets := func(what string, results []result) {
		fmt.Printf("Targets (dynamic), %s:\n", what)
		for _, x := range results {
			if !strings.HasPrefix(x.Mode, "dynamic") {
				continue
			}
			switch {
			case x.Load >= 1:
				fmt.Printf("- %s %.0f%% load: served %.1f req/s = %.0f%% of the capacity (%s), %.1f%% of the best offline throughput "+
					"(target >= 90%%); %d of %d arrivals got BUSY; queue at most %d of %d; p99 %.2f ms.\n",
					x.Mode, 100*x.Load, x.RPS, 100*x.RPS/x.CapRPS, c.capacity, 100*x.RPS/r.OfflineRPS, x.Busy, x.Arrivals, x.MaxQueue, c.queue, x.P99ms)
			case math.Abs(x.Load-0.5) < 1e-9:
				var per []string
				for _, v := range x.RoundP99ms {
					per = append(per, fmt.Sprintf("%.2f ms (%.2fx)", v, v/r.AloneP99ms))
				}
				fmt.Printf("- %s 50%% load: p99 %.2f ms = %.2fx the p99 of one request alone (%.2f ms, both passes; before the loads "+
					"%.2f ms, after %.2f ms; target <= 2x). Per round: %s.\n",
					x.Mode, x.P99ms, x.P99ms/r.AloneP99ms, r.AloneP99ms, r.Alone1P99ms, r.Alone2P99ms, strings.Join(per, ", "))
			}
		}
		fmt.Println()
	}
	targets("all rounds", r.Results)
	targets("quiet rounds", r.Quiet)
}

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func cpuModel() string {
	raw, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "model name") {
			if i := strings.Index(l, ":"); i >= 0 {
				return strings.TrimSpace(l[i+1:]) + fmt.Sprintf(", %d cores", runtime.NumCPU())
			}
		}
	}
	return runtime.GOARCH
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "serve:", err)
	os.Exit(1)
}
