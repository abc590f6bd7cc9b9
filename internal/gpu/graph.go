package gpu

import (
	"math/bits"
	"sync/atomic"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/model"
)

// CUDA graphs by token-count class (issue 8).
//
// Enqueueing a batch eagerly costs the device worker ~0.8 ms of host time
// whatever the batch's size (24 cublasLtMatmul and ~35 kernel launches for
// a 6-layer encoder), which under a stream of small requests keeps the
// worker near saturation at half the offline rate. A captured CUDA graph
// replays the same kernels with one cuGraphLaunch, but it bakes every shape
// (the GEMMs' M, the grids) and every pointer. So a batch of T <= graphTokens
// tokens and S sequences runs as a batch of a class shape (Tc, Sc):
//   - Tc is T rounded up to one of eight classes per power of two (at most
//     12.5% more tokens; 64 below 64); above 64 it stays inside T's GEMM
//     plan class (cuda.GEMMClass), so the GEMMs use the algorithm the eager
//     path uses (below 64, and for the pooler's GEMM over Sc rows, the
//     class's plan may differ from the eager one: rows are computed
//     independently either way, equal within rounding);
//   - the Tc-T padding tokens form padding sequences of 1 to 64 tokens
//     (token id 0, type 0, seed 0): dense, one block each, so their
//     attention costs little;
//   - Sc is S plus those, rounded up to a power of two with empty padding
//     sequences (no attention work, pooled rows of zeros);
//   - the padding's outputs are dropped.
// A class is a pair (Tc, Sc) with Sc <= max(64, Tc/16): a stream of requests
// of mixed lengths makes a few dozen to a hundred of them (a finer S class
// made hundreds). Batches of more sequences run eagerly, unpadded.
// Every class batch runs in one device arena shared by all classes (sized
// for the largest class): the compute stream orders the batches, so the
// arena's inputs are copied in (device to device, from the batch's own
// upload buffer) and its outputs copied out (to the batch's own buffer or
// the caller's device pointers) on the compute stream around the graph. A
// class's first batch runs its kernels eagerly on the arena (so every
// kernel, cuBLASLt's included, is loaded before any capture), its second is
// captured, and later ones replay the graph (a class beyond maxGraphs, or
// whose capture failed, runs eagerly on the same arena, with the same
// results). Sequences are
// computed independently, so a request's rows are those of the eager path
// up to the GEMM algorithm (the same per M class).
//
// The padding runs through every kernel (its attention is small: blocks of
// at most 64 tokens); it is counted in GraphStats and Outputs.PadTokens,
// which the engine reports as padded tokens.

// defaultGraphTokens is a model's graph limit unless RAPTOR_CUDA_GRAPHS
// sets one: 8192 tokens for models up to 512 wide, else 4096. A graph pays
// while a batch's kernels last less than its eager enqueue (~0.7 ms for six
// layers), and its class pads it by up to 12.5%. Measured with bench/serve
// (bench/RESULTS.md, issue 8): on an H100 without a warm-up, 16384 gave
// all-MiniLM-L6-v2 a worse p99 at 50% load than 4096 (captures of large
// classes in the traffic); on an H200 with the warm-up (Model.Warmup),
// 8192 gave it a 22-24% lower p99 at 50% load than 4096 (bursts of 4-8k
// tokens replay graphs), and gave a BERT-base-shaped model (768 wide) the
// same p99 as 4096 at 50% and 90% load; 2048 was no better for it.
func defaultGraphTokens(hidden int) int {
	if hidden <= 512 {
		return 8192
	}
	return 4096
}

// maxGraphs bounds the captured classes; later classes run eagerly on the
// shared arena.
const maxGraphs = 512

// graphKey is what a class batch's kernels depend on besides the arena.
type graphKey struct {
	T, S           int
	types, seeds   bool
	hidden, pooled bool
	pooling        Pooling
	normalize      bool
}

type graphEntry struct {
	g     *cuda.Graph
	seen  int // batches run
	fails int // failed captures; at maxCaptureFails the class stays eager
}

// maxCaptureFails is how often a class's capture may fail before the class
// runs eagerly for good.
const maxCaptureFails = 3

// maxFailsInARow failed captures in a row, whatever their classes, turn
// graphs off for the model (logged once): capture does not work here.
const maxFailsInARow = 16

// arenaRetry is how many class-shaped batches run eagerly after the shared
// arena could not be allocated, before the next try.
const arenaRetry = 256

// graphState is a Model's graphs and arena: used on the device worker
// only, except the counters.
type graphState struct {
	maxT    int // largest class Tc: batches of at most this many tokens run as classes (0: graphs off)
	maxS    int // largest class Sc
	padLen  int // longest padding sequence
	arena   cuda.Buffer
	off     atomic.Bool // too many failed captures in a row: graphs off (read by GraphShapes off the worker)
	skip    int         // batches to run eagerly before the arena's next allocation try
	inARow  int         // failed captures in a row
	entries map[graphKey]*graphEntry

	batches, replays, captures, fails, padTokens atomic.Int64
}

// GraphStats counts the batches that ran padded to a class shape.
type GraphStats struct {
	Batches   int64 // batches run as a class shape (graph or eager)
	Replays   int64 // of them, replayed from a captured graph
	Captures  int64 // graphs captured
	Fails     int64 // failed captures (logged; the batch ran eagerly)
	PadTokens int64 // padding tokens added
}

// GraphStats returns the model's graph counters.
func (m *Model) GraphStats() GraphStats {
	g := &m.g
	return GraphStats{Batches: g.batches.Load(), Replays: g.replays.Load(), Captures: g.captures.Load(),
		Fails: g.fails.Load(), PadTokens: g.padTokens.Load()}
}

// GraphRuns is how many forwards replayed a captured graph.
func (m *Model) GraphRuns() int64 { return m.g.replays.Load() }

// initGraphs sets the class limits from the backend's graphTokens
// (RAPTOR_CUDA_GRAPHS) or the model's default.
func (m *Model) initGraphs() {
	m.g.padLen = min(64, m.cfg.MaxPositions-m.cfg.PositionOffset)
	limit := m.b.graphTokens
	if limit < 0 {
		limit = defaultGraphTokens(m.cfg.Hidden)
	}
	if limit > 0 && m.g.padLen > 0 {
		// A batch of T tokens runs as class tokenClass(T): the limit is
		// rounded up to its class, so that every class a batch under it
		// reaches is one Model.GraphShapes lists (a warm-up covers them).
		m.g.maxT = tokenClass(limit)
		m.g.maxS = max(64, m.g.maxT/16)
	}
}

// tokenClass is T rounded up to one of eight classes per power of two, and
// 64 for T <= 64.
func tokenClass(t int) int {
	if t <= 64 {
		return 64
	}
	k := bits.Len(uint(t-1)) - 1 // 2^k < t <= 2^(k+1), k >= 6
	step := 1 << (k - 3)
	return (t + step - 1) &^ (step - 1)
}

// seqClass is S rounded up to a power of two.
func seqClass(s int) int {
	if s <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(s-1))
}

// classShape returns the class shape of a batch of T tokens and S
// sequences and the lengths of its padding sequences: the Tc-T padding
// tokens in sequences of 1..padLen tokens, then empty ones up to Sc. ok is
// false when the class would exceed maxT tokens or maxS sequences.
func classShape(T, S, padLen, maxT, maxS int) (tc, sc int, pad []int, ok bool) {
	if T < 1 || S < 1 || padLen < 1 {
		return 0, 0, nil, false
	}
	tc = tokenClass(T)
	p := tc - T
	n := (p + padLen - 1) / padLen // padding sequences with tokens
	sc = seqClass(S + n)
	if tc > maxT || sc > maxS {
		return 0, 0, nil, false
	}
	pad = make([]int, sc-S)
	for i := 0; i < n; i++ {
		pad[i] = p / n
		if i < p%n {
			pad[i]++
		}
	}
	return tc, sc, pad, true
}

// Shape is a batch shape: T tokens in S sequences.
type Shape struct{ T, S int }

// GraphShapes returns one batch shape per class that a stream of requests
// with sequences of at most maxLen tokens can make, up to maxTokens tokens
// (0: every class): a batch of that shape is its class (Tc, Sc) with no
// padding, so running one twice (eagerly, then captured) prepares the
// class's CUDA graph. Classes above the backend's graph limit run eagerly
// and are left out; nil when graphs are off.
func (m *Model) GraphShapes(maxTokens, maxLen int) []Shape {
	limit := m.g.maxT
	if maxTokens > 0 {
		limit = min(limit, maxTokens)
	}
	if m.g.maxT == 0 || m.g.off.Load() {
		return nil
	}
	return graphShapes(limit, m.g.maxT, m.g.maxS, maxLen)
}

// PlanShapes returns one batch shape per GEMM plan class (cuda.GEMMClass:
// four per power of two) above the graph limit, up to maxTokens tokens,
// with sequences of at most maxLen tokens: such batches run eagerly, and
// the first batch of a class makes its cuBLASLt plans (heuristic queries on
// the device worker). Running one of each prepares them.
func (m *Model) PlanShapes(maxTokens, maxLen int) []Shape {
	lo := 0
	if m.g.maxT > 0 && !m.g.off.Load() {
		lo = m.g.maxT
	}
	return planShapes(lo, maxTokens, maxLen)
}

// planShapes is a shape (T, ceil(T/maxLen)) for every M class above lo up
// to maxTokens, T the class's largest M (maxTokens for the last one).
func planShapes(lo, maxTokens, maxLen int) []Shape {
	if maxLen < 1 {
		return nil
	}
	var out []Shape
	for t := lo + 1; t <= maxTokens; t = cuda.GEMMClass(t) + 1 {
		T := min(cuda.GEMMClass(t), maxTokens)
		out = append(out, Shape{T: T, S: (T + maxLen - 1) / maxLen})
	}
	return out
}

// graphShapes lists a shape (T, S) for every class (Tc, Sc) with Tc up to
// tokenClass(limit) and at most graphTokens, and Sc a power of two up to
// maxS that a batch can reach: T = Tc tokens in S = min(Sc, Tc)
// sequences of at most maxLen tokens (a batch of T tokens and S sequences
// has S + padding sequences <= Tc, so Sc <= seqClass(Tc); and Sc
// sequences of maxLen tokens must hold Tc of them).
func graphShapes(limit, graphTokens, maxS, maxLen int) []Shape {
	if limit < 1 || maxLen < 1 {
		return nil
	}
	var out []Shape
	for tc := 64; tc <= graphTokens; tc = tokenClass(tc + 1) {
		for sc := 1; sc <= min(maxS, seqClass(tc)); sc *= 2 {
			if n := min(sc, tc); n*maxLen >= tc {
				out = append(out, Shape{T: tc, S: n})
			}
		}
		if tc >= limit {
			break
		}
	}
	return out
}

// enqueueGraph enqueues b as its class shape when it has one (ok), as a
// graph replay or, before the class is captured, eagerly on the shared
// arena. ok false: run b eagerly on its own arena.
func (m *Model) enqueueGraph(c *cuda.Ctx, b *model.Batch, out *Outputs, e0, e1 cuda.Event) (_ *pending, ok bool, err error) {
	g := &m.g
	T, S := len(b.Tokens), b.NumSeqs()
	if g.maxT == 0 || g.off.Load() || T > g.maxT {
		return nil, false, nil
	}
	if g.skip > 0 {
		g.skip--
		return nil, false, nil
	}
	tc, sc, pad, ok := classShape(T, S, g.padLen, g.maxT, g.maxS)
	if !ok {
		return nil, false, nil
	}
	if g.arena.Ptr == 0 {
		size := m.layoutArena(g.maxT, g.maxS, true, true, true, true, m.poolW != 0).size
		if g.arena, err = c.Alloc(size); err != nil {
			g.skip = arenaRetry
			c.Logf(cuda.LogWarn, "gpu: CUDA graphs paused for %d batches: no memory for their %d-byte arena: %v", arenaRetry, size, err)
			return nil, false, nil
		}
	}
	wantHidden := out.Hidden != nil || out.HiddenDev != 0
	wantPooled := out.Pooled != nil || out.PooledDev != 0
	key := graphKey{T: tc, S: sc, types: b.TokenTypes != nil, seeds: b.Seeds != nil, hidden: wantHidden, pooled: wantPooled}
	if wantPooled {
		key.pooling, key.normalize = out.Pooling, out.Normalize
	}
	lay := m.layoutArena(tc, sc, key.types, key.seeds, wantHidden, wantPooled, wantPooled && out.Pooling == PoolPooler)
	if lay.size > g.arena.Size {
		return nil, false, nil // cannot happen: every part grows with T and S
	}
	H := int64(m.cfg.Hidden)
	// The batch's own buffers (device and pinned, the same layout): the
	// class inputs, then the host outputs' staging.
	p := &pending{hidOff: -1, poolOff: -1, T: T, S: S}
	size := lay.in.size
	if out.Hidden != nil {
		p.hidOff = size
		size += align(4 * int64(T) * H)
	}
	if out.Pooled != nil {
		p.poolOff = size
		size += align(4 * int64(S) * H)
	}
	if p.arena, err = c.Alloc(size); err != nil {
		return nil, true, err
	}
	if p.host, err = c.HostAlloc(size); err != nil {
		m.release(c, p)
		return nil, true, err
	}
	defer func() {
		if err != nil {
			m.abandon(c, p)
		}
	}()
	if err = m.newEvents(c, p); err != nil {
		return nil, true, err
	}
	m.packInputs(p.host.Bytes(), lay.in, b, pad)
	if err = m.upload(c, p, p.arena.Ptr, lay.in.size, e0); err != nil {
		return nil, true, err
	}
	base := g.arena.Ptr
	if err = c.CopyDtoD(base, p.arena.Ptr, lay.in.size); err != nil {
		return nil, true, err
	}
	// The kernels write the fp32 outputs into the shared arena.
	kout := &Outputs{Pooling: out.Pooling, Normalize: out.Normalize}
	k := lay.kern(base, tc, sc, kout)
	if wantHidden {
		kout.HiddenDev = uintptr(k.hid32)
	}
	if wantPooled {
		kout.PooledDev = uintptr(k.pool32)
	}
	if err = m.launchClass(c, key, k); err != nil {
		return nil, true, err
	}
	g.batches.Add(1)
	// Outputs out of the shared arena on the compute stream: to the
	// caller's device pointers, or to this batch's staging for download.
	// copyOut copies rows x hidden floats from src to the caller's device
	// pointer dev, or to the staging at off (returned, for the download).
	copyOut := func(src cuda.DevPtr, rows int, host bool, dev uintptr, off int64) (cuda.DevPtr, error) {
		dst, staged := cuda.DevPtr(dev), cuda.DevPtr(0)
		if host {
			dst = p.arena.Ptr.Add(off)
			staged = dst
		}
		return staged, c.CopyDtoD(dst, src, 4*int64(rows)*H)
	}
	var hid32, pool32 cuda.DevPtr
	if wantHidden {
		if hid32, err = copyOut(k.hid32, T, out.Hidden != nil, out.HiddenDev, p.hidOff); err != nil {
			return nil, true, err
		}
	}
	if wantPooled {
		if pool32, err = copyOut(k.pool32, S, out.Pooled != nil, out.PooledDev, p.poolOff); err != nil {
			return nil, true, err
		}
	}
	if err = m.download(c, p, e1, hid32, pool32); err != nil {
		return nil, true, err
	}
	g.padTokens.Add(int64(tc - T))
	out.PadTokens = tc - T
	return p, true, nil
}

// launchClass runs k (a class batch on the shared arena): eagerly on the
// class's first batch, then as the class's graph, captured on its second;
// beyond maxGraphs classes, or when a capture fails (logged; retried on the
// class's next batch, up to maxCaptureFails times), eagerly.
func (m *Model) launchClass(c *cuda.Ctx, key graphKey, k *kern) error {
	g := &m.g
	if g.entries == nil {
		g.entries = map[graphKey]*graphEntry{}
	}
	e := g.entries[key]
	if e == nil && len(g.entries) < maxGraphs {
		e = &graphEntry{}
		g.entries[key] = e
	}
	if e == nil || e.fails >= maxCaptureFails || g.off.Load() {
		return m.kernels(c, k, nil)
	}
	e.seen++
	if e.g == nil {
		if e.seen < 2 {
			return m.kernels(c, k, nil)
		}
		gr, err := c.Capture(func() error { return m.kernels(c, k, nil) })
		if err != nil {
			e.fails++
			g.fails.Add(1)
			g.inARow++
			c.Logf(cuda.LogWarn, "gpu: CUDA graph capture of a %d-token class failed (%d of %d), running it eagerly: %v", key.T, e.fails, maxCaptureFails, err)
			if g.inARow >= maxFailsInARow {
				g.off.Store(true)
				c.Logf(cuda.LogWarn, "gpu: CUDA graphs off for this model: %d captures failed in a row", g.inARow)
			}
			return m.kernels(c, k, nil)
		}
		g.inARow = 0
		e.g = gr
		g.captures.Add(1)
	}
	if err := c.LaunchGraph(e.g); err != nil {
		return err
	}
	g.replays.Add(1)
	return nil
}

// releaseGraphs destroys the graphs and frees the shared arena (the
// model's release, on the device worker).
func (m *Model) releaseGraphs(c *cuda.Ctx) {
	g := &m.g
	for k, e := range g.entries {
		if e.g != nil {
			c.DestroyGraph(e.g)
		}
		delete(g.entries, k)
	}
	if g.arena.Ptr != 0 {
		c.Free(g.arena)
		g.arena = cuda.Buffer{}
	}
}
