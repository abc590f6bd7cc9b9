// Package cpu is raptor's float32 CPU backend, the reference every other
// backend is checked against: the BERT-family encoder graph on packed
// batches with the attention plan of internal/plan.
//
// Parallelism is a worker pool (Options.Threads) over row tiles (the
// projections and the FFN, with their bias, residual and LayerNorm fused)
// and over (sequence, head, query block) attention tasks.
//
// Batch invariance (a request's output is bit-identical whatever shares its
// batch, in any order) holds by construction on both GEMM paths:
//   - packed: the linear layers run on blas.Packed, whose every output element
//     is one FMA chain that depends on its own row only, so row tiles may
//     span sequences and are sized for the batch;
//   - tiled: the linear layers run on a blas.Gemm (OpenBLAS, whose per-row
//     results depend on M, or pure Go) over row tiles fixed relative to each
//     sequence's first token, never mixing two sequences' rows.
//
// Attention always runs per sequence, with the plan's key chunks, through
// the blas.Gemm.
package cpu

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/model"
	"github.com/raptor-infer/raptor/internal/plan"
	"github.com/raptor-infer/raptor/loader"
)

// tileRows is the largest row tile of the projections and the FFN. On the
// tiled path a sequence is cut into tiles [0, 256), [256, 512), ... of its
// own rows; on the packed path the batch is cut into tiles of at most 256.
const tileRows = 256

// denseQueryTile is the query block of dense attention.
const denseQueryTile = 64

// Backend is the CPU backend: a worker pool and its GEMMs.
type Backend struct {
	pool   *Pool
	gemm   blas.Gemm
	packed bool
	seed   uint64
}

// New returns a CPU backend with threads workers (>= 1), the engine seed of
// the attention plan, the GEMM for attention (and for the linear layers
// unless packed), and whether the linear layers use blas.Packed.
func New(threads int, gemm blas.Gemm, packed bool, seed uint64) *Backend {
	return &Backend{pool: NewPool(threads), gemm: gemm, packed: packed, seed: seed}
}

// Name describes the backend.
func (b *Backend) Name() string {
	lin := "tiled " + b.gemm.Name()
	if b.packed {
		lin = "packed " + blas.PackedKernel()
	}
	return fmt.Sprintf("cpu (%d threads, linear layers %s, attention %s)", b.pool.Workers(), lin, b.gemm.Name())
}

// Threads is the number of workers.
func (b *Backend) Threads() int { return b.pool.Workers() }

// Close stops the workers; no model of this backend may run afterwards.
func (b *Backend) Close() { b.pool.Close() }

// Model is a model loaded on the CPU backend. Forward may be called
// concurrently.
type Model struct {
	b                  *Backend
	cfg                loader.Config
	h, heads, d, inter int
	wordEmb, posEmb    []float32
	typeEmb            []float32
	embLNW, embLNB     []float32
	layers             []layer
	qTile, ck          int

	mu      sync.Mutex
	scratch []*workerScratch
}

type layer struct {
	qkv, ao, in, out       linear
	qkvB, aoB, inB, outB   []float32
	ln1W, ln1B, ln2W, ln2B []float32
}

// linear is a linear layer's weight, transposed to [in, out] for the tiled
// path or packed for the packed path.
type linear struct {
	t       []float32
	p       *blas.Packed
	in, out int
}

// newLinear takes HF's [out, in] weight.
func newLinear(w []float32, out, in int, packed bool) linear {
	t := transpose(w, out, in)
	if packed {
		return linear{p: blas.Pack(t, in, out, out), in: in, out: out}
	}
	return linear{t: t, in: in, out: out}
}

// mul adds a·W to c for rows rows.
func (l *linear) mul(g blas.Gemm, rows int, a []float32, lda int, c []float32, ldc int) {
	if l.p != nil {
		l.p.Mul(rows, a, lda, c, ldc)
		return
	}
	g.Sgemm(false, rows, l.out, l.in, 1, a, lda, l.t, l.out, 1, c, ldc)
}

type workerScratch struct {
	xa, inter []float32
	attn      *attnScratch
}

// Load prepares p for this backend (weights transposed to [in, out]); p's
// linear weights are released.
func (b *Backend) Load(p *model.Params) *Model {
	c := p.Config
	m := &Model{b: b, cfg: c, h: c.Hidden, heads: c.Heads, d: c.HeadDim(), inter: c.Intermediate,
		wordEmb: p.WordEmb, posEmb: p.PosEmb, typeEmb: p.TypeEmb, embLNW: p.EmbLNW, embLNB: p.EmbLNB}
	h, in := c.Hidden, c.Intermediate
	for i := range p.Layers {
		pl := &p.Layers[i]
		pk := b.packed
		m.layers = append(m.layers, layer{
			qkv: newLinear(pl.QKVW, 3*h, h, pk), qkvB: pl.QKVB,
			ao: newLinear(pl.AttnOutW, h, h, pk), aoB: pl.AttnOutB, ln1W: pl.AttnLNW, ln1B: pl.AttnLNB,
			in: newLinear(pl.InterW, in, h, pk), inB: pl.InterB,
			out: newLinear(pl.OutW, h, in, pk), outB: pl.OutB, ln2W: pl.OutLNW, ln2B: pl.OutLNB,
		})
		pl.QKVW, pl.AttnOutW, pl.InterW, pl.OutW = nil, nil, nil, nil
	}
	m.qTile = denseQueryTile
	if c.Attention == loader.AttentionBlockSparse {
		m.qTile = c.BlockSize
	}
	m.ck = max(1, keyChunk/m.qTile) * m.qTile
	return m
}

// transpose returns the cols x rows transpose of a rows x cols matrix.
func transpose(w []float32, rows, cols int) []float32 {
	t := make([]float32, len(w))
	for r := 0; r < rows; r++ {
		for c, v := range w[r*cols : (r+1)*cols] {
			t[c*rows+r] = v
		}
	}
	return t
}

func (m *Model) workerScratch() []*workerScratch {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.scratch == nil {
		m.scratch = make([]*workerScratch, m.b.pool.Workers())
		for i := range m.scratch {
			m.scratch[i] = &workerScratch{
				xa:    make([]float32, tileRows*m.h),
				inter: make([]float32, tileRows*m.inter),
				attn:  newAttnScratch(m.qTile, m.ck, m.d),
			}
		}
	}
	return m.scratch
}

// Release drops the model's weights and scratch.
func (m *Model) Release() {
	m.mu.Lock()
	m.scratch = nil
	m.mu.Unlock()
	m.layers = nil
	m.wordEmb, m.posEmb, m.typeEmb = nil, nil, nil
}

// tile is a range of rows of the packed batch.
type tile struct{ start, rows int }

type attnTask struct {
	seq, head, qb int
	cost          int
}

// Forward computes the last hidden states of a validated batch into
// x[:T*hidden]. It checks ctx between phases and returns ctx.Err() when
// it is done.
func (m *Model) Forward(ctx context.Context, in *model.Batch, x []float32) error {
	T, H := len(in.Tokens), m.h
	nseq := in.NumSeqs()
	x = x[:T*H]
	sparse := m.cfg.Attention == loader.AttentionBlockSparse
	tiles := m.tiles(in)
	pos := make([]int32, T) // position of each token in its sequence
	plans := make([]plan.Seq, nseq)
	var tasks []attnTask
	for s := 0; s < nseq; s++ {
		start, end := in.Seq(s)
		n := end - start
		for t := start; t < end; t++ {
			pos[t] = int32(t - start)
		}
		sp := plan.New(n, m.qTile, m.cfg.RandomBlocks, sparse, m.b.seed, in.Seed(s))
		plans[s] = sp
		nb := sp.NumBlocks()
		for qb := 0; qb < nb; qb++ {
			lo, hi := sp.BlockRows(qb)
			keys := n
			if sp.Sparse && qb > 0 && qb < nb-1 {
				keys = (5 + sp.Random) * sp.BlockSize
			}
			for h := 0; h < m.heads; h++ {
				tasks = append(tasks, attnTask{s, h, qb, (hi - lo) * keys})
			}
		}
	}
	// Largest first, for balance; the order never changes a result.
	slices.SortStableFunc(tiles, func(a, b tile) int { return b.rows - a.rows })
	slices.SortStableFunc(tasks, func(a, b attnTask) int { return b.cost - a.cost })

	sc := m.workerScratch()
	qkv := make([]float32, T*3*H)
	ctxb := make([]float32, T*H)
	g := m.b.gemm
	pool := m.b.pool
	eps := m.cfg.LayerNormEps

	pool.Run(len(tiles), func(_, i int) { m.embed(in, pos, tiles[i], x) })
	for l := range m.layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		ly := &m.layers[l]
		pool.Run(len(tiles), func(_, i int) {
			t := tiles[i]
			out := qkv[t.start*3*H : (t.start+t.rows)*3*H]
			for r := 0; r < t.rows; r++ {
				copy(out[r*3*H:(r+1)*3*H], ly.qkvB)
			}
			ly.qkv.mul(g, t.rows, x[t.start*H:], H, out, 3*H)
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		args := &attnArgs{gemm: g, qkv: qkv, out: ctxb, hidden: H, d: m.d, layer: l, ck: m.ck}
		pool.Run(len(tasks), func(w, i int) {
			tk := tasks[i]
			start, _ := in.Seq(tk.seq)
			attendBlock(args, sc[w].attn, start, plans[tk.seq], tk.head, tk.qb)
		})
		if err := ctx.Err(); err != nil {
			return err
		}
		pool.Run(len(tiles), func(w, i int) {
			t := tiles[i]
			ws := sc[w]
			rows := t.rows
			xa := ws.xa[:rows*H]
			for r := 0; r < rows; r++ {
				copy(xa[r*H:(r+1)*H], ly.aoB)
			}
			ly.ao.mul(g, rows, ctxb[t.start*H:], H, xa, H)
			xt := x[t.start*H : (t.start+rows)*H]
			for r := 0; r < rows; r++ {
				row := xa[r*H : (r+1)*H]
				res := xt[r*H : (r+1)*H]
				for j := range row {
					row[j] += res[j]
				}
				layerNorm(row, ly.ln1W, ly.ln1B, eps)
			}
			I := m.inter
			inter := ws.inter[:rows*I]
			for r := 0; r < rows; r++ {
				copy(inter[r*I:(r+1)*I], ly.inB)
			}
			ly.in.mul(g, rows, xa, H, inter, I)
			for r := 0; r < rows; r++ {
				if m.cfg.Activation == loader.ActGELUTanh {
					geluTanhSlice(inter[r*I : (r+1)*I])
				} else {
					geluErfSlice(inter[r*I : (r+1)*I])
				}
			}
			for r := 0; r < rows; r++ {
				copy(xt[r*H:(r+1)*H], ly.outB)
			}
			ly.out.mul(g, rows, inter, I, xt, H)
			for r := 0; r < rows; r++ {
				row := xt[r*H : (r+1)*H]
				res := xa[r*H : (r+1)*H]
				for j := range row {
					row[j] += res[j]
				}
				layerNorm(row, ly.ln2W, ly.ln2B, eps)
			}
		})
	}
	return ctx.Err()
}

// tiles cuts the batch into row tiles. Packed: tiles of the whole batch,
// sized to give every worker several (rows of different sequences may share
// a tile). Tiled: tileRows-row tiles of each sequence from its first token.
func (m *Model) tiles(in *model.Batch) []tile {
	var tiles []tile
	T := len(in.Tokens)
	if m.b.packed {
		rows := (T + 4*m.b.pool.Workers() - 1) / (4 * m.b.pool.Workers())
		rows = min(tileRows, max(24, (rows+5)/6*6))
		for start := 0; start < T; start += rows {
			tiles = append(tiles, tile{start, min(rows, T-start)})
		}
		return tiles
	}
	for s := 0; s < in.NumSeqs(); s++ {
		start, end := in.Seq(s)
		for off := start; off < end; off += tileRows {
			tiles = append(tiles, tile{off, min(tileRows, end-off)})
		}
	}
	return tiles
}

// embed writes the embeddings of tile t: LayerNorm((word + type) + position).
func (m *Model) embed(in *model.Batch, pos []int32, t tile, x []float32) {
	H := m.h
	for r := t.start; r < t.start+t.rows; r++ {
		row := x[r*H : (r+1)*H]
		tok := int(in.Tokens[r])
		typ := 0
		if in.TokenTypes != nil {
			typ = int(in.TokenTypes[r])
		}
		p0 := m.cfg.PositionOffset + int(pos[r])
		w := m.wordEmb[tok*H : (tok+1)*H]
		ty := m.typeEmb[typ*H : (typ+1)*H]
		p := m.posEmb[p0*H : (p0+1)*H]
		for j := range row {
			row[j] = (w[j] + ty[j]) + p[j]
		}
		layerNorm(row, m.embLNW, m.embLNB, m.cfg.LayerNormEps)
	}
}

// layerNorm normalises row in place: (x - mean) / sqrt(var + eps) * w + b,
// with the mean and (biased) variance accumulated in float64.
func layerNorm(row, w, b []float32, eps float32) {
	var sum float64
	for _, v := range row {
		sum += float64(v)
	}
	mean := sum / float64(len(row))
	var ss float64
	for _, v := range row {
		d := float64(v) - mean
		ss += d * d
	}
	inv := 1 / math.Sqrt(ss/float64(len(row))+float64(eps))
	w, b = w[:len(row)], b[:len(row)]
	for j, v := range row {
		row[j] = float32((float64(v)-mean)*inv)*w[j] + b[j]
	}
}
