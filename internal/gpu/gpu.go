// Package gpu is raptor's CUDA backend: an encoder's weights on one GPU in
// fp16 or bf16, and the forward pass of a packed variable-length batch as a
// fixed sequence of kernels on one stream (issue 7).
//
// Per batch: one upload of the inputs (token ids, token types, position
// ids, cu_seqlens, request seeds) on the upload stream; then on the compute
// stream the embedding gather + LayerNorm, and per layer the fused QKV GEMM
// with its bias epilogue writing [T, 3, heads, D] (the attention kernel's
// layout), the fused attention kernel (kernels/sparse_attention.cu: plan and
// schedule built on the GPU; dense sequences in the same launch), the
// output projection with bias, residual + LayerNorm, FFN1 (bias + GELU: the
// exact erf GELU runs as a BiasGELU kernel after a plain GEMM, because
// cuBLASLt's GELU epilogue is the tanh approximation, which serves the
// gelu_new/tanh models), FFN2 with bias, residual + LayerNorm; then pooling
// and the fp32 outputs on the device; then one download on the copy stream.
// Every buffer is taken from the caching allocator before the first kernel:
// nothing between the first and the last kernel of a batch synchronises,
// reads the device or allocates. GEMMs accumulate in fp32; LayerNorm
// statistics are fp32.
//
// A batch runs in two steps on the device worker (cuda.Device.Do): enqueue
// (everything above, returning at once) and await (poll the batch's
// download event with short device jobs, copy the results out of the pinned
// buffer outside the worker, release its buffers). Between them the worker
// enqueues other callers' batches, so with concurrent callers the next
// batch's upload and kernels are queued while the previous batch computes
// and its download runs on the copy stream.
//
// A batch of at most graphTokens tokens (RAPTOR_CUDA_GRAPHS; by default 8192
// for models up to 512 wide, else 4096)
// runs padded to a token-count class as a captured CUDA graph instead of
// ~60 launches (graph.go).
package gpu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// Options configure Open.
type Options struct {
	Device   int
	CacheDir string     // kernel cache ("" default, "off" in memory)
	DType    cuda.DType // cuda.F16 or cuda.BF16
	Seed     uint64     // engine seed of the attention plan
	Log      func(level cuda.LogLevel, msg string)
}

// Backend is one GPU.
type Backend struct {
	dev  *cuda.Device
	dt   cuda.DType
	seed uint64
	// GELU of the erf models: "erf" (the exact BiasGELU kernel after a
	// plain GEMM, the default), or with RAPTOR_GELU_KERNEL=tanh-epilogue
	// cuBLASLt's fused GELU_BIAS epilogue, which is the tanh approximation:
	// an A/B measurement of what the separate GELU pass costs (issue 7),
	// not for use, since it changes an erf model's numerics.
	gelu string
	// graphTokens: batches of at most this many tokens run padded to a
	// token-count class as a captured CUDA graph (graph.go;
	// RAPTOR_CUDA_GRAPHS=N sets it, 0 turns graphs off); -1: each model's
	// default (defaultGraphTokens: 8192 up to 512 wide, else 4096).
	graphTokens int

	rel       chan func(*cuda.Ctx) // releases for the releaser
	relDone   chan struct{}
	relMu     sync.RWMutex // guards relClosed and sends on rel
	relClosed bool
}

// Open opens the device. Errors are *status.Error: BackendUnavailable when
// no usable GPU or CUDA library is found, InvalidArgument for a bad dtype.
func Open(o Options) (*Backend, error) {
	if o.DType != cuda.F16 && o.DType != cuda.BF16 {
		return nil, status.Errorf(status.Unsupported, "gpu: compute dtype %s (the CUDA backend computes in f16 or bf16)", o.DType)
	}
	dev, err := cuda.Open(cuda.Config{Device: o.Device, CacheDir: o.CacheDir, Log: o.Log})
	if err != nil {
		return nil, err
	}
	gelu := "erf"
	if g := os.Getenv("RAPTOR_GELU_KERNEL"); g == "tanh-epilogue" {
		gelu = g
	}
	graphTokens := -1 // each model's default (defaultGraphTokens)
	if v, err := strconv.Atoi(os.Getenv("RAPTOR_CUDA_GRAPHS")); err == nil && v >= 0 {
		graphTokens = v
	}
	b := &Backend{dev: dev, dt: o.DType, seed: o.Seed, gelu: gelu, graphTokens: graphTokens,
		rel: make(chan func(*cuda.Ctx), 256), relDone: make(chan struct{})}
	go b.releaser()
	return b, nil
}

// Device is the underlying device (for tests and benchmarks).
func (b *Backend) Device() *cuda.Device { return b.dev }

// DType is the compute dtype.
func (b *Backend) DType() cuda.DType { return b.dt }

// Name describes the backend.
func (b *Backend) Name() string {
	return fmt.Sprintf("cuda %s, %s", b.dev.Info(), b.dt)
}

// Close releases the device.
func (b *Backend) Close() {
	b.relMu.Lock()
	if !b.relClosed {
		b.relClosed = true
		close(b.rel)
	}
	b.relMu.Unlock()
	<-b.relDone
	b.dev.Close()
}

// releaser runs the batches' releases handed over by await, in order, on
// the device worker: a Forward returns once its outputs are copied, not
// after a release job that waits behind whatever the worker runs (another
// batch's enqueue, up to 2 ms).
func (b *Backend) releaser() {
	defer close(b.relDone)
	for fn := range b.rel {
		_ = b.dev.Do(func(c *cuda.Ctx) error { fn(c); return nil })
	}
}

// release runs fn on the device worker: through the releaser when it can
// take it, else here.
func (b *Backend) release(fn func(*cuda.Ctx)) {
	b.relMu.RLock()
	if !b.relClosed {
		select {
		case b.rel <- fn:
			b.relMu.RUnlock()
			return
		default:
		}
	}
	b.relMu.RUnlock()
	_ = b.dev.Do(func(c *cuda.Ctx) error { fn(c); return nil })
}

type layerW struct {
	qkvW, qkvB, aoW, aoB, ln1W, ln1B, iW, iB, oW, oB, ln2W, ln2B cuda.DevPtr
}

// Model is a model's weights on the device.
type Model struct {
	b      *Backend
	cfg    loader.Config
	arena  cuda.Buffer
	word   cuda.DevPtr
	pos    cuda.DevPtr
	typ    cuda.DevPtr
	embW   cuda.DevPtr
	embB   cuda.DevPtr
	layers []layerW
	poolW  cuda.DevPtr
	poolB  cuda.DevPtr
	tl     atomic.Pointer[timeline] // StartTimeline .. StopTimeline
	g      graphState               // CUDA graphs by token-count class (graph.go)
}

// Supported says whether the CUDA backend can run cfg; the error is
// status.Unsupported naming the limit.
func Supported(cfg loader.Config) error {
	bad := func(format string, args ...any) error {
		return status.Errorf(status.Unsupported, "gpu: "+format, args...)
	}
	if cfg.Hidden%8 != 0 || cfg.Hidden > cuda.MaxLayerNormCols {
		return bad("hidden size %d (need a multiple of 8, at most %d)", cfg.Hidden, cuda.MaxLayerNormCols)
	}
	if cfg.Intermediate%8 != 0 {
		return bad("intermediate size %d (need a multiple of 8)", cfg.Intermediate)
	}
	d, ok := cfg.HeadDim(), false
	for _, x := range cuda.AttnHeadDims {
		ok = ok || x == d
	}
	if !ok {
		return bad("head dimension %d (the attention kernel has %v)", d, cuda.AttnHeadDims)
	}
	if cfg.Attention == loader.AttentionBlockSparse {
		if cfg.BlockSize != cuda.AttnBlock {
			return bad("block size %d (the sparse kernel's block is %d)", cfg.BlockSize, cuda.AttnBlock)
		}
		if cfg.RandomBlocks > cuda.AttnMaxRandom {
			return bad("%d random blocks (at most %d)", cfg.RandomBlocks, cuda.AttnMaxRandom)
		}
	}
	return nil
}

// Load copies p's weights to the device in the compute dtype: the Q, K and
// V weights stay fused as one [3*hidden, hidden] matrix (model.Params'
// layout). It compiles every kernel the forward uses, so the first batch
// compiles nothing.
func (b *Backend) Load(p *model.Params) (*Model, error) {
	cfg := p.Config
	if err := Supported(cfg); err != nil {
		return nil, err
	}
	m := &Model{b: b, cfg: cfg, layers: make([]layerW, len(p.Layers))}
	m.initGraphs()
	type tensor struct {
		dst  *cuda.DevPtr
		data []float32
	}
	var ts []tensor
	add := func(dst *cuda.DevPtr, data []float32) { ts = append(ts, tensor{dst, data}) }
	add(&m.word, p.WordEmb)
	add(&m.pos, p.PosEmb)
	add(&m.typ, p.TypeEmb)
	add(&m.embW, p.EmbLNW)
	add(&m.embB, p.EmbLNB)
	for i := range p.Layers {
		l, w := &p.Layers[i], &m.layers[i]
		add(&w.qkvW, l.QKVW)
		add(&w.qkvB, l.QKVB)
		add(&w.aoW, l.AttnOutW)
		add(&w.aoB, l.AttnOutB)
		add(&w.ln1W, l.AttnLNW)
		add(&w.ln1B, l.AttnLNB)
		add(&w.iW, l.InterW)
		add(&w.iB, l.InterB)
		add(&w.oW, l.OutW)
		add(&w.oB, l.OutB)
		add(&w.ln2W, l.OutLNW)
		add(&w.ln2B, l.OutLNB)
	}
	if p.PoolerW != nil {
		add(&m.poolW, p.PoolerW)
		add(&m.poolB, p.PoolerB)
	}
	es := b.dt.Size()
	var total, largest int64
	for _, t := range ts {
		total += align(int64(len(t.data)) * es)
		largest = max(largest, int64(len(t.data)))
	}
	err := b.dev.Do(func(c *cuda.Ctx) error {
		arena, err := c.Alloc(total)
		if err != nil {
			return err
		}
		tmp, err := c.Alloc(4 * largest)
		if err != nil {
			c.Free(arena)
			return err
		}
		defer c.Free(tmp)
		off := int64(0)
		for _, t := range ts {
			*t.dst = arena.Ptr.Add(off)
			off += align(int64(len(t.data)) * es)
			if err := cuda.UploadSlice(c, tmp.Ptr, t.data); err != nil {
				c.Free(arena)
				return err
			}
			if err := c.Convert(b.dt, *t.dst, cuda.F32, tmp.Ptr, int64(len(t.data))); err != nil {
				c.Free(arena)
				return err
			}
		}
		if err := c.Sync(); err != nil {
			c.Free(arena)
			return err
		}
		m.arena = arena
		return warmKernels(c, b.dt, cfg)
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// warmKernels loads every module the forward uses (compiling it at most
// once; later from the disk cache).
func warmKernels(c *cuda.Ctx, dt cuda.DType, cfg loader.Config) error {
	for _, k := range [][2]string{
		{"sparse_attention", "sparse_attention_schedule"},
		{"sparse_attention", fmt.Sprintf("sparse_attention_d%d_%s", cfg.HeadDim(), dt)},
		{"encoder", "finish_rows_" + dt.String()},
		{"layernorm", "add_ln_" + dt.String() + "_v1"},
		{"activation", "bias_gelu_erf_" + dt.String()},
		{"pack", "mean_pool_" + dt.String()},
		{"convert", dt.String() + "_to_f32"},
	} {
		if _, err := c.Function(k[0], k[1]); err != nil {
			return err
		}
	}
	return nil
}

func align(n int64) int64 { return (n + 255) &^ 255 }

// Release frees the model's device memory.
func (m *Model) Release() {
	if m.arena.Ptr == 0 {
		return
	}
	a := m.arena
	m.arena = cuda.Buffer{}
	_ = m.b.dev.Do(func(c *cuda.Ctx) error {
		m.releaseGraphs(c)
		return c.Free(a)
	})
}

// Pooling selects a pooled output (the engine's values).
type Pooling int32

const (
	PoolCLS    Pooling = 0
	PoolMean   Pooling = 1
	PoolPooler Pooling = 2
)

// Outputs are the destinations of one batch: host slices, or fp32 device
// pointers (of this device; the caller guarantees their size: T*hidden and
// nseq*hidden floats). Unset destinations are not computed.
type Outputs struct {
	Hidden    []float32
	Pooled    []float32
	HiddenDev uintptr
	PooledDev uintptr
	Pooling   Pooling
	Normalize bool
	// PadTokens is set by Forward: the padding tokens computed with the
	// batch (its CUDA graph class, graph.go), 0 when it ran as it came.
	PadTokens int
}

// pending is an enqueued batch.
type pending struct {
	arena   cuda.Buffer
	host    cuda.HostBuffer
	evIn    cuda.Event
	evDone  cuda.Event
	evOut   cuda.Event
	hidOff  int64 // offset of the hidden output in host, -1: none
	poolOff int64
	T, S    int
}

// ForwardTrace is one Forward's host and device timing, for diagnosing a
// serving pipeline (WithTrace). Host durations are wall clock.
type ForwardTrace struct {
	EnqueueQueued time.Duration // waiting for the device worker before the enqueue ran
	Enqueue       time.Duration // the enqueue job: input packing, upload, kernel launches
	PlanMisses    int64         // GEMM plans made during the enqueue (new shapes)
	PlanTime      time.Duration // of Enqueue, spent making them
	Wait          time.Duration // from the enqueue's return to seeing the download done
	Polls         int           // event queries while waiting
	Copy          time.Duration // copying the outputs out of pinned memory
	Release       time.Duration // the release job, waiting for the worker included
	DeviceMs      float32       // first to last kernel of the batch on the compute stream (CUDA events)
}

type traceKey struct{}

// WithTrace returns ctx carrying t: a Forward run with it fills t (and
// records two timing events around the batch's kernels).
func WithTrace(ctx context.Context, t *ForwardTrace) context.Context {
	return context.WithValue(ctx, traceKey{}, t)
}

// Forward runs a validated batch and writes out. ctx is checked before the
// batch is enqueued and after it finishes; a batch once enqueued runs to
// completion. The device worker is never held while the batch computes:
// Forward polls the batch's last event (cuEventQuery, one short device job
// each) and copies the host outputs out of the pinned buffer outside the
// worker, so another caller's next batch is enqueued behind this one while
// it runs and the device does not idle between batches.
func (m *Model) Forward(ctx context.Context, b *model.Batch, out *Outputs) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	tr, _ := ctx.Value(traceKey{}).(*ForwardTrace)
	var p *pending
	var te0, te1 cuda.Event // the trace's timing events
	t0 := time.Now()
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		var err error
		var e0, e1 cuda.Event
		tj := time.Now()
		ps := c.PlanStats()
		if tl := m.tl.Load(); tl != nil || tr != nil {
			if e0, err = c.NewEvent(true); err != nil {
				return err
			}
			if e1, err = c.NewEvent(true); err != nil {
				c.DestroyEvent(e0)
				return err
			}
		}
		enq0 := time.Now()
		p, err = m.enqueueTimed(c, b, out, e0, e1)
		if e0 != 0 {
			if err != nil {
				c.DestroyEvent(e0)
				c.DestroyEvent(e1)
			} else if tl := m.tl.Load(); tl != nil {
				tl.add(e0, e1, len(b.Tokens), enq0, time.Now())
			} else if tr != nil {
				te0, te1 = e0, e1
			} else {
				c.DestroyEvent(e0)
				c.DestroyEvent(e1)
			}
		}
		if tr != nil {
			ps1 := c.PlanStats()
			tr.EnqueueQueued, tr.Enqueue = tj.Sub(t0), time.Since(tj)
			tr.PlanMisses, tr.PlanTime = ps1.Misses-ps.Misses, ps1.MissTime-ps.MissTime
		}
		return err
	})
	if err != nil {
		return err
	}
	return m.await(p, out, tr, te0, te1)
}

// attnSchedulePerLayer (RAPTOR_ATTN_SCHEDULE=layer) runs the attention
// schedule kernel in every layer, as before the schedule was reused across
// layers, for comparisons. By default a forward schedules once, in its first
// layer, and every later layer's attention reuses the workspace
// (cuda.AttentionArgs.ScheduleReady).
var attnSchedulePerLayer = os.Getenv("RAPTOR_ATTN_SCHEDULE") == "layer"

// pollSleep is the Go scheduler's sleep (RAPTOR_GPU_POLL=sleep), kept for
// comparison: on Linux a time.Sleep shorter than 1 ms lasts about 1.1 ms
// once every goroutine of the process sleeps (the runtime waits in
// epoll_wait, whose timeout is in whole milliseconds), so a batch that was
// not done at the first poll came back at least 1 ms late.
var pollSleep = os.Getenv("RAPTOR_GPU_POLL") == "sleep"

// pause sleeps about d (d < 1 ms) in the kernel (nanosleep: the timer
// slack, 50 us by default, is the error), not in the Go scheduler's timers.
func pause(d time.Duration) {
	if pollSleep {
		time.Sleep(d)
		return
	}
	ts := syscall.NsecToTimespec(int64(d))
	for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
	}
}

// await waits for p without holding the device worker, copies its host
// outputs and releases it. tr, when set, gets the timings (te0 and te1 are
// its timing events, destroyed here).
func (m *Model) await(p *pending, out *Outputs, tr *ForwardTrace, te0, te1 cuda.Event) error {
	t0 := time.Now()
	wait := 20 * time.Microsecond
	polls := 0
	// The device's event waiter sees the download complete without a job
	// on the worker (cuda.Device.WaitEvent); if it cannot tell, poll here.
	for done := m.b.dev.WaitEvent(p.evOut) == nil; !done; {
		polls++
		err := m.b.dev.Do(func(c *cuda.Ctx) error {
			var err error
			done, err = c.EventDone(p.evOut)
			if err != nil {
				m.release(c, p)
				if te0 != 0 {
					c.DestroyEvent(te0)
					c.DestroyEvent(te1)
				}
			}
			return err
		})
		if err != nil {
			return err
		}
		if done {
			break
		}
		pause(wait)
		if wait < 100*time.Microsecond {
			wait += wait / 2
		}
	}
	t1 := time.Now()
	// The download is complete: the pinned buffer is ours until release.
	hb := p.host.Bytes()
	H := m.cfg.Hidden
	f32 := func(o int64, n int) []float32 { return unsafe.Slice((*float32)(unsafe.Pointer(&hb[o])), n) }
	if out.Hidden != nil {
		parallelCopy(out.Hidden, f32(p.hidOff, p.T*H))
	}
	if out.Pooled != nil {
		parallelCopy(out.Pooled, f32(p.poolOff, p.S*H))
	}
	t2 := time.Now()
	if tr == nil {
		m.b.release(func(c *cuda.Ctx) { m.release(c, p) })
		return nil
	}
	// Traced: release here, and read the kernels' time.
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		m.release(c, p)
		if te0 != 0 {
			ms, err := c.Elapsed(te0, te1)
			if err == nil {
				tr.DeviceMs = ms
			}
			c.DestroyEvent(te0)
			c.DestroyEvent(te1)
		}
		return nil
	})
	tr.Wait, tr.Polls, tr.Copy, tr.Release = t1.Sub(t0), polls, t2.Sub(t1), time.Since(t2)
	return err
}

// parallelCopy copies src into dst (the same length) with up to 8
// goroutines for large outputs: one core copies out of pinned memory at
// roughly 10 GB/s, so a 100 MB fp32 hidden-state output took ~10 ms on one
// (issue 7, host-side output delivery).
func parallelCopy(dst, src []float32) {
	const chunk = 1 << 20 // floats (4 MiB) per goroutine at least
	n := len(src)
	parts := min(8, runtime.GOMAXPROCS(0), n/chunk)
	if parts < 2 {
		copy(dst, src)
		return
	}
	var wg sync.WaitGroup
	step := (n + parts - 1) / parts
	for lo := 0; lo < n; lo += step {
		hi := min(lo+step, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			copy(dst[lo:hi], src[lo:hi])
		}()
	}
	wg.Wait()
}

// Timeline records, while on, a pair of timing events around every batch's
// device work (first to last kernel on the compute stream) relative to a
// base event recorded when it starts: the device timeline of a stream of
// requests (issue 7).
type timeline struct {
	mu     sync.Mutex
	t0     time.Time // host clock at the base event's record
	base   cuda.Event
	ev     [][2]cuda.Event
	enq    [][2]float64
	tokens []int
}

func (t *timeline) add(e0, e1 cuda.Event, tokens int, enq0, enq1 time.Time) {
	t.mu.Lock()
	t.ev = append(t.ev, [2]cuda.Event{e0, e1})
	t.enq = append(t.enq, [2]float64{ms(enq0.Sub(t.t0)), ms(enq1.Sub(t.t0))})
	t.tokens = append(t.tokens, tokens)
	t.mu.Unlock()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// TimelineSpan is one batch on the device timeline, in ms since StartTimeline.
// EnqStart and EnqEnd are the host's wall clock (ms since StartTimeline) at
// the start and end of the batch's enqueue: the base event ran on an idle
// device, so the two clocks agree to within its record latency, and an
// EnqEnd after the previous span's End means the host was late (the gap is
// the host's), not the device's stream ordering.
type TimelineSpan struct {
	Start, End       float64
	EnqStart, EnqEnd float64
	Tokens           int
}

// StartTimeline starts recording the device timeline of Forward's batches.
func (m *Model) StartTimeline() error {
	return m.b.dev.Do(func(c *cuda.Ctx) error {
		e, err := c.NewEvent(true)
		if err != nil {
			return err
		}
		if err = c.RecordEvent(e, c.Compute()); err != nil {
			c.DestroyEvent(e)
			return err
		}
		if err = c.EventSync(e); err != nil {
			c.DestroyEvent(e)
			return err
		}
		m.tl.Store(&timeline{base: e, t0: time.Now()})
		return nil
	})
}

// StopTimeline waits for the recorded batches and returns their spans in
// enqueue order.
func (m *Model) StopTimeline() ([]TimelineSpan, error) {
	t := m.tl.Swap(nil)
	if t == nil {
		return nil, nil
	}
	var spans []TimelineSpan
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		defer c.DestroyEvent(t.base)
		t.mu.Lock()
		defer t.mu.Unlock()
		var first error
		for i, e := range t.ev {
			if err := c.EventSync(e[1]); err != nil && first == nil {
				first = err
			}
			a, err0 := c.Elapsed(t.base, e[0])
			z, err1 := c.Elapsed(t.base, e[1])
			if first == nil && err0 == nil && err1 == nil {
				spans = append(spans, TimelineSpan{float64(a), float64(z), t.enq[i][0], t.enq[i][1], t.tokens[i]})
			} else if first == nil {
				first = errors.Join(err0, err1)
			}
			c.DestroyEvent(e[0])
			c.DestroyEvent(e[1])
		}
		return first
	})
	return spans, err
}

// Timed runs Forward's enqueue with timing events around the compute
// stream's work (for benchmarks): it returns the milliseconds from the
// first to the last kernel of the batch.
func (m *Model) Timed(b *model.Batch, out *Outputs) (float32, error) {
	var ms float32
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		e0, e1, release, err := timingEvents(c)
		if err != nil {
			return err
		}
		defer release()
		p, err := m.enqueueTimed(c, b, out, e0, e1)
		if err != nil {
			return err
		}
		if err := m.finish(c, p, out); err != nil {
			return err
		}
		ms, err = c.Elapsed(e0, e1)
		return err
	})
	return ms, err
}

func (m *Model) enqueue(c *cuda.Ctx, b *model.Batch, out *Outputs) (*pending, error) {
	return m.enqueueTimed(c, b, out, 0, 0)
}

// input layout (bytes, each part 256-aligned) shared by the pinned host
// buffer and the device arena's head.
type inLayout struct {
	tok, typ, pos, cu, seeds, size int64
}

func layoutIn(T, S int, types, seeds bool) inLayout {
	var l inLayout
	off := int64(0)
	next := func(n int64) int64 { o := off; off += align(n); return o }
	l.tok = next(4 * int64(T))
	l.typ = -1
	if types {
		l.typ = next(4 * int64(T))
	}
	l.pos = next(4 * int64(T))
	l.cu = next(4 * int64(S+1))
	l.seeds = -1
	if seeds {
		l.seeds = next(8 * int64(S))
	}
	l.size = off
	return l
}

func (m *Model) enqueueTimed(c *cuda.Ctx, b *model.Batch, out *Outputs, e0, e1 cuda.Event) (*pending, error) {
	return m.enqueueK(c, b, out, e0, e1, nil, nil)
}

// enqueueK is enqueueTimed with an optional stage profile and the batch's
// kernel pointers returned in *kp. A batch of at most graphTokens tokens
// takes the graph path (graph.go) unless profiled.
func (m *Model) enqueueK(c *cuda.Ctx, b *model.Batch, out *Outputs, e0, e1 cuda.Event, pr *stageProf, kp **kern) (_ *pending, err error) {
	out.PadTokens = 0
	if pr == nil && kp == nil {
		if p, ok, err := m.enqueueGraph(c, b, out, e0, e1); ok {
			return p, err
		}
	}
	H := m.cfg.Hidden
	T, S := len(b.Tokens), b.NumSeqs()
	wantPooled := out.Pooled != nil || out.PooledDev != 0
	lay := m.layoutArena(T, S, b.TokenTypes != nil, b.Seeds != nil, out.Hidden != nil, out.Pooled != nil,
		wantPooled && out.Pooling == PoolPooler)
	in := lay.in
	// host (pinned): inputs, then the downloaded outputs
	hoff := in.size
	p := &pending{hidOff: -1, poolOff: -1, T: T, S: S}
	if out.Hidden != nil {
		p.hidOff = hoff
		hoff += align(4 * int64(T) * int64(H))
	}
	if out.Pooled != nil {
		p.poolOff = hoff
		hoff += align(4 * int64(S) * int64(H))
	}
	if p.arena, err = c.Alloc(lay.size); err != nil {
		return nil, err
	}
	if p.host, err = c.HostAlloc(hoff); err != nil {
		m.release(c, p)
		return nil, err
	}
	defer func() {
		if err != nil {
			m.abandon(c, p)
		}
	}()
	if err = m.newEvents(c, p); err != nil {
		return nil, err
	}
	base := p.arena.Ptr
	m.packInputs(p.host.Bytes(), in, b, nil)
	if err = m.upload(c, p, base, in.size, e0); err != nil {
		return nil, err
	}
	k := lay.kern(base, T, S, out)
	if err = m.kernels(c, k, pr); err != nil {
		return nil, err
	}
	if kp != nil {
		*kp = k
	}
	var hid32, pool32 cuda.DevPtr
	if out.Hidden != nil {
		hid32 = k.hid32
	}
	if out.Pooled != nil {
		pool32 = k.pool32
	}
	return p, m.download(c, p, e1, hid32, pool32)
}

// abandon releases a batch whose enqueue failed part way, once whatever
// was enqueued has drained.
func (m *Model) abandon(c *cuda.Ctx, p *pending) {
	_ = c.SyncStream(c.UploadStream())
	_ = c.SyncStream(c.CopyStream())
	_ = c.Sync()
	m.release(c, p)
}

func (m *Model) newEvents(c *cuda.Ctx, p *pending) error {
	for _, e := range []*cuda.Event{&p.evIn, &p.evDone, &p.evOut} {
		var err error
		if *e, err = c.NewEvent(false); err != nil {
			return err
		}
	}
	return nil
}

// packInputs writes b's inputs into hb in layout in, followed by the
// padding sequences of pad (their lengths): token id 0, type 0, positions
// from the model's offset, seed 0.
func (m *Model) packInputs(hb []byte, in inLayout, b *model.Batch, pad []int) {
	T, S := len(b.Tokens), b.NumSeqs()
	Tp, Sp := T, S
	for _, n := range pad {
		Tp += n
		Sp++
	}
	i32 := func(o int64, n int) []int32 { return unsafe.Slice((*int32)(unsafe.Pointer(&hb[o])), n) }
	tok := i32(in.tok, Tp)
	copy(tok, b.Tokens)
	clear(tok[T:])
	if in.typ >= 0 {
		typ := i32(in.typ, Tp)
		copy(typ, b.TokenTypes)
		clear(typ[T:])
	}
	off := int32(m.cfg.PositionOffset)
	pos := i32(in.pos, Tp)
	for s := 0; s < S; s++ {
		start, end := b.Seq(s)
		for t := start; t < end; t++ {
			pos[t] = int32(t-start) + off
		}
	}
	cu := i32(in.cu, Sp+1)
	copy(cu, b.CuSeqlens)
	t := T
	for i, n := range pad {
		for j := 0; j < n; j++ {
			pos[t+j] = int32(j) + off
		}
		t += n
		cu[S+1+i] = int32(t)
	}
	if in.seeds >= 0 {
		seeds := unsafe.Slice((*uint64)(unsafe.Pointer(&hb[in.seeds])), Sp)
		copy(seeds, b.Seeds)
		clear(seeds[S:])
	}
}

// upload copies the first n bytes of p's pinned buffer (the inputs) to dst
// on the upload stream and makes the compute stream wait for it; e0, when
// set, is recorded on the compute stream after the wait.
func (m *Model) upload(c *cuda.Ctx, p *pending, dst cuda.DevPtr, n int64, e0 cuda.Event) error {
	// The upload goes on its own stream: on the copy stream it would queue
	// behind the previous batch's wait-for-compute and download, so this
	// batch could not start until those had run (issue 7's timeline gap).
	cs, up := c.Compute(), c.UploadStream()
	if err := c.CopyHtoDAsync(dst, p.host, 0, n, up); err != nil {
		return err
	}
	if err := c.RecordEvent(p.evIn, up); err != nil {
		return err
	}
	if err := c.WaitEvent(cs, p.evIn); err != nil {
		return err
	}
	if e0 != 0 {
		return c.RecordEvent(e0, cs)
	}
	return nil
}

// download ends p's work on the compute stream (e1, when set, then
// p.evDone) and copies the host outputs, hid32 (T x hidden fp32) and pool32
// (S x hidden) when set, into p's pinned buffer on the copy stream.
func (m *Model) download(c *cuda.Ctx, p *pending, e1 cuda.Event, hid32, pool32 cuda.DevPtr) error {
	cp, cs := c.CopyStream(), c.Compute()
	hd := int64(m.cfg.Hidden)
	if e1 != 0 {
		if err := c.RecordEvent(e1, cs); err != nil {
			return err
		}
	}
	if err := c.RecordEvent(p.evDone, cs); err != nil {
		return err
	}
	if err := c.WaitEvent(cp, p.evDone); err != nil {
		return err
	}
	if hid32 != 0 {
		if err := c.CopyDtoHAsync(p.host, p.hidOff, hid32, 4*int64(p.T)*hd, cp); err != nil {
			return err
		}
	}
	if pool32 != 0 {
		if err := c.CopyDtoHAsync(p.host, p.poolOff, pool32, 4*int64(p.S)*hd, cp); err != nil {
			return err
		}
	}
	return c.RecordEvent(p.evOut, cp)
}

// arenaLayout is a batch's device arena: the inputs (inLayout) first, then
// the activations and the outputs, as byte offsets (-1: absent).
type arenaLayout struct {
	in                                                        inLayout
	x, qkv, att, tmp, inter, ws, part, hid32, pool32, cls, py int64
	size                                                      int64
}

// attnRecordSets is the number of attention item-record sets a forward
// builds with its schedule (cuda.AttnRecordSets).
func (m *Model) attnRecordSets() int {
	if attnSchedulePerLayer {
		return 0 // a comparison mode: each layer schedules, and decodes its items itself
	}
	return cuda.AttnRecordSets(m.b.dev.Info(), m.cfg.HeadDim(), len(m.layers), m.cfg.Attention == loader.AttentionBlockSparse)
}

// layoutArena lays out the arena of a batch of T tokens and S sequences:
// token types and seeds uploaded or not, fp32 hidden and pooled outputs in
// the arena or not, and the pooler's buffers or not.
func (m *Model) layoutArena(T, S int, types, seeds, hidden, pooled, pooler bool) arenaLayout {
	cfg := &m.cfg
	es := m.b.dt.Size()
	t, s, h, i := int64(T), int64(S), int64(cfg.Hidden), int64(cfg.Intermediate)
	l := arenaLayout{in: layoutIn(T, S, types, seeds), part: -1, hid32: -1, pool32: -1, cls: -1, py: -1}
	off := l.in.size
	next := func(n int64) int64 { o := off; off += align(n); return o }
	l.x = next((t + 1) * h * es) // a spare row: CLS pooling of an empty sequence reads row T
	l.qkv = next(t * 3 * h * es)
	l.att = next(t * h * es)
	l.tmp = next(t * h * es)
	l.inter = next(t * i * es)
	l.ws = next(cuda.AttnWorkspaceBytes(T, S, cfg.Heads, m.attnRecordSets()))
	if cfg.Attention == loader.AttentionBlockSparse {
		l.part = next(cuda.AttnPartialBytes(T, S, cfg.Heads, cfg.HeadDim()))
	}
	if hidden {
		l.hid32 = next(4 * t * h)
	}
	if pooled {
		l.pool32 = next(4 * s * h)
	}
	if pooler {
		l.cls = next(s * h * es)
		l.py = next(s * h * es)
	}
	l.size = off
	return l
}

// kern returns the kernel pointers of l in the arena at base.
func (l *arenaLayout) kern(base cuda.DevPtr, T, S int, out *Outputs) *kern {
	at := func(o int64) cuda.DevPtr {
		if o < 0 {
			return 0
		}
		return base.Add(o)
	}
	return &kern{T: T, S: S, x: at(l.x), qkv: at(l.qkv), att: at(l.att), tmp: at(l.tmp), inter: at(l.inter),
		ws: at(l.ws), part: at(l.part), hid32: at(l.hid32), pool32: at(l.pool32), cls: at(l.cls), poolY: at(l.py),
		tok: at(l.in.tok), pos: at(l.in.pos), cu: at(l.in.cu), typeIDs: at(l.in.typ), seeds: at(l.in.seeds), out: out}
}

// kern holds one batch's device pointers (all inside its arena, or the
// caller's device outputs) for the kernel sequence.
type kern struct {
	T, S                                                    int
	x, qkv, att, tmp, inter, ws, part                       cuda.DevPtr
	hid32, pool32, cls, poolY, tok, pos, cu, typeIDs, seeds cuda.DevPtr
	out                                                     *Outputs
}

// kernels enqueues the batch's kernels on the compute stream, from the
// embedding to the last output kernel (pr, when set, records a stage event
// after each op).
func (m *Model) kernels(c *cuda.Ctx, k *kern, pr *stageProf) error {
	cfg := &m.cfg
	dt, es := m.b.dt, m.b.dt.Size()
	T, S, out := k.T, k.S, k.out
	H, I, heads, D := cfg.Hidden, cfg.Intermediate, cfg.Heads, cfg.HeadDim()
	wantHidden := out.Hidden != nil || out.HiddenDev != 0
	wantPooled := out.Pooled != nil || out.PooledDev != 0
	sparse := cfg.Attention == loader.AttentionBlockSparse
	recSets := m.attnRecordSets()
	x, qkv, att, tmp, inter, ws, part := k.x, k.qkv, k.att, k.tmp, k.inter, k.ws, k.part
	hid32, pool32, cls, poolY, cu, typeIDs, seeds := k.hid32, k.pool32, k.cls, k.poolY, k.cu, k.typeIDs, k.seeds
	var err error

	// ---- first kernel
	if err = c.EmbedLayerNorm(cuda.EmbedArgs{DType: dt, Out: x, IDs: k.tok, PosIDs: k.pos, TypeIDs: typeIDs,
		Word: m.word, Pos: m.pos, Type: m.typ, Gamma: m.embW, Beta: m.embB, Rows: T, Cols: H,
		Vocab: cfg.VocabSize, NPos: cfg.MaxPositions, NType: cfg.TypeVocabSize, Eps: cfg.LayerNormEps}); err != nil {
		return err
	}
	pr.mark(c, stEmbed)
	eps := cfg.LayerNormEps
	tanhGELU := cfg.Activation == loader.ActGELUTanh || m.b.gelu == "tanh-epilogue"
	hd := int64(H)
	for l, w := range m.layers {
		if err = c.Linear(cuda.LinearArgs{DType: dt, M: T, N: 3 * H, K: H, X: x, W: w.qkvW, Bias: w.qkvB, Y: qkv, Epilogue: cuda.EpilogueBias}); err != nil {
			return err
		}
		pr.mark(c, stQKV)
		if err = c.Attention(cuda.AttentionArgs{DType: dt, Q: qkv, K: qkv.Add(hd * es), V: qkv.Add(2 * hd * es), O: att,
			QRow: 3 * hd, KRow: 3 * hd, VRow: 3 * hd, ORow: hd, QHead: int64(D), KHead: int64(D), VHead: int64(D), OHead: int64(D),
			CuSeqlens: cu, ReqSeeds: seeds, Seed: m.b.seed, NSeq: S, Heads: heads, HeadDim: D, Tokens: T,
			Layer: l, RandomBlocks: cfg.RandomBlocks, Sparse: sparse, Workspace: ws, Partial: part,
			ScheduleReady: l > 0 && !attnSchedulePerLayer, RecordSets: recSets}); err != nil {
			return err
		}
		pr.mark(c, stAttn)
		if err = c.Linear(cuda.LinearArgs{DType: dt, M: T, N: H, K: H, X: att, W: w.aoW, Bias: w.aoB, Y: tmp, Epilogue: cuda.EpilogueBias}); err != nil {
			return err
		}
		pr.mark(c, stAO)
		if err = c.AddLayerNorm(dt, x, tmp, x, 0, w.ln1W, w.ln1B, T, H, eps); err != nil {
			return err
		}
		pr.mark(c, stLN1)
		if tanhGELU {
			err = c.Linear(cuda.LinearArgs{DType: dt, M: T, N: I, K: H, X: x, W: w.iW, Bias: w.iB, Y: inter, Epilogue: cuda.EpilogueGELUBias})
		} else {
			err = c.Linear(cuda.LinearArgs{DType: dt, M: T, N: I, K: H, X: x, W: w.iW, Y: inter, Epilogue: cuda.EpilogueNone})
			if err == nil {
				pr.mark(c, stFFN1)
				err = c.BiasGELU(dt, inter, inter, w.iB, T, I, false)
			}
		}
		if err != nil {
			return err
		}
		pr.mark(c, stGELU)
		if err = c.Linear(cuda.LinearArgs{DType: dt, M: T, N: H, K: I, X: inter, W: w.oW, Bias: w.oB, Y: tmp, Epilogue: cuda.EpilogueBias}); err != nil {
			return err
		}
		pr.mark(c, stFFN2)
		if err = c.AddLayerNorm(dt, x, tmp, x, 0, w.ln2W, w.ln2B, T, H, eps); err != nil {
			return err
		}
		pr.mark(c, stLN2)
	}

	// ---- outputs
	if wantHidden {
		dst := hid32
		if out.HiddenDev != 0 {
			dst = cuda.DevPtr(out.HiddenDev)
		}
		if err = c.Convert(cuda.F32, dst, dt, x, int64(T)*hd); err != nil {
			return err
		}
	}
	if wantPooled {
		dst := pool32
		if out.PooledDev != 0 {
			dst = cuda.DevPtr(out.PooledDev)
		}
		switch out.Pooling {
		case PoolCLS:
			err = c.FinishRows(dt, dst, x, cu, S, H, false, out.Normalize)
		case PoolMean:
			err = c.MeanPool(dt, dst, x, cu, S, H)
			if err == nil && out.Normalize {
				err = c.FinishRows(cuda.F32, dst, dst, 0, S, H, false, true)
			}
		case PoolPooler:
			if m.poolW == 0 {
				return status.Errorf(status.InvalidArgument, "gpu: pooler pooling on a model without a pooler")
			}
			err = c.GatherRows(cls, x, cu, S, T, H*int(es))
			if err == nil {
				err = c.Linear(cuda.LinearArgs{DType: dt, M: S, N: H, K: H, X: cls, W: m.poolW, Bias: m.poolB, Y: poolY, Epilogue: cuda.EpilogueBias})
			}
			if err == nil {
				err = c.FinishRows(dt, dst, poolY, 0, S, H, true, out.Normalize)
			}
		default:
			err = status.Errorf(status.InvalidArgument, "gpu: unknown pooling %d", out.Pooling)
		}
		if err != nil {
			return err
		}
	}
	pr.mark(c, stOut)
	return nil
}

// finish waits for p's download and copies the host outputs.
func (m *Model) finish(c *cuda.Ctx, p *pending, out *Outputs) error {
	defer m.release(c, p)
	if err := c.EventSync(p.evOut); err != nil {
		return err
	}
	hb := p.host.Bytes()
	H := m.cfg.Hidden
	f32 := func(o int64, n int) []float32 { return unsafe.Slice((*float32)(unsafe.Pointer(&hb[o])), n) }
	if out.Hidden != nil {
		parallelCopy(out.Hidden, f32(p.hidOff, p.T*H))
	}
	if out.Pooled != nil {
		parallelCopy(out.Pooled, f32(p.poolOff, p.S*H))
	}
	return nil
}

// release returns p's buffers and events. The device buffers may be reused
// by later work on the compute stream (stream order keeps that safe); the
// pinned buffer is only released after its download completed or the batch
// failed before any copy was enqueued.
func (m *Model) release(c *cuda.Ctx, p *pending) {
	for _, e := range []cuda.Event{p.evIn, p.evDone, p.evOut} {
		if e != 0 {
			c.DestroyEvent(e)
		}
	}
	c.Free(p.arena)
	c.HostFree(p.host)
	*p = pending{}
}
