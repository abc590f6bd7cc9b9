package cpu

import (
	"math"

	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/plan"
)

// keyChunk is how many keys one pass of the online softmax covers (rounded
// down to whole blocks, at least one block). Scratch per worker is
// O(block * keyChunk), never O(n^2) or O(n).
const keyChunk = 512

// attnScratch is one worker's attention buffers.
type attnScratch struct {
	blocks []int32
	ranges []int32   // merged key ranges [lo, hi) of the current query block
	kc, vc []float32 // gathered keys and values [ck, d]
	s      []float32 // scores, then probabilities [bq, ck]
	o      []float32 // unnormalised output [bq, d]
	m, l   []float32 // running max and sum per query row
}

func newAttnScratch(bq, ck, d int) *attnScratch {
	return &attnScratch{
		kc: make([]float32, ck*d), vc: make([]float32, ck*d),
		s: make([]float32, bq*ck), o: make([]float32, bq*d),
		m: make([]float32, bq), l: make([]float32, bq),
	}
}

// attnArgs describe one layer's attention over a packed batch: qkv holds
// T rows of [q | k | v] (each hidden wide, head h at columns h*d..h*d+d),
// out receives T rows of hidden.
type attnArgs struct {
	gemm   blas.Gemm
	qkv    []float32
	out    []float32
	hidden int
	d      int
	layer  int
	ck     int // key chunk, a multiple of the plan's block size
}

// attendBlock computes head h's attention output for query block qb of the
// sequence that starts at token s0 and whose plan is sp: softmax over the
// plan's key set (each key once, keys past the end never visited), one key
// chunk at a time with the online-softmax rescaling. The sequence of
// operations depends only on the sequence itself, not on its batch.
func attendBlock(a *attnArgs, sc *attnScratch, s0 int, sp plan.Seq, head, qb int) {
	d, ld := a.d, 3*a.hidden
	qlo, qhi := sp.BlockRows(qb)
	bq := qhi - qlo
	sc.blocks = sp.KeyBlocks(sc.blocks[:0], a.layer, head, qb)
	// Merge consecutive blocks into key ranges, clipped at the sequence end.
	sc.ranges = sc.ranges[:0]
	for _, blk := range sc.blocks {
		lo, hi := sp.BlockRows(int(blk))
		if n := len(sc.ranges); n > 0 && sc.ranges[n-1] == int32(lo) {
			sc.ranges[n-1] = int32(hi)
			continue
		}
		sc.ranges = append(sc.ranges, int32(lo), int32(hi))
	}
	qoff := (s0+qlo)*ld + head*d
	koff, voff := a.hidden+head*d, 2*a.hidden+head*d
	scale := float32(1 / math.Sqrt(float64(d)))
	first := true
	ri, pos := 0, int(sc.ranges[0]) // next key: range ri, position pos
	for ri < len(sc.ranges) {
		// Collect up to ck keys.
		nk := 0
		var kmat, vmat []float32
		var ldk int
		rlo, rhi := pos, int(sc.ranges[ri+1])
		// Fast path: the chunk lies inside one range: read k and v in place.
		// Otherwise gather up to ck keys from consecutive ranges.
		if rhi-rlo >= a.ck || ri+2 >= len(sc.ranges) {
			nk = min(a.ck, rhi-rlo)
			kmat, vmat, ldk = a.qkv[(s0+rlo)*ld+koff:], a.qkv[(s0+rlo)*ld+voff:], ld
			pos += nk
			if pos == rhi {
				ri += 2
				if ri < len(sc.ranges) {
					pos = int(sc.ranges[ri])
				}
			}
		} else {
			for ri < len(sc.ranges) && nk < a.ck {
				hi := int(sc.ranges[ri+1])
				take := min(a.ck-nk, hi-pos)
				for t := 0; t < take; t++ {
					row := (s0 + pos + t) * ld
					copy(sc.kc[(nk+t)*d:(nk+t+1)*d], a.qkv[row+koff:row+koff+d])
					copy(sc.vc[(nk+t)*d:(nk+t+1)*d], a.qkv[row+voff:row+voff+d])
				}
				nk += take
				pos += take
				if pos == hi {
					ri += 2
					if ri < len(sc.ranges) {
						pos = int(sc.ranges[ri])
					}
				}
			}
			kmat, vmat, ldk = sc.kc, sc.vc, d
		}
		s := sc.s[:bq*nk]
		a.gemm.Sgemm(true, bq, nk, d, scale, a.qkv[qoff:], ld, kmat, ldk, 0, s, nk)
		for t := 0; t < bq; t++ {
			row := s[t*nk : (t+1)*nk]
			mx := row[0]
			for _, v := range row[1:] {
				mx = max(mx, v)
			}
			var corr float32
			if !first {
				old := sc.m[t]
				mx = max(mx, old)
				corr = expf(old - mx)
			}
			sum := expShiftSum(row, mx)
			sc.m[t] = mx
			if first {
				sc.l[t] = sum
			} else {
				sc.l[t] = sc.l[t]*corr + sum
				orow := sc.o[t*d : (t+1)*d]
				for j := range orow {
					orow[j] *= corr
				}
			}
		}
		beta := float32(1)
		if first {
			beta = 0
		}
		a.gemm.Sgemm(false, bq, d, nk, 1, s, nk, vmat, ldk, beta, sc.o[:bq*d], d)
		first = false
	}
	for t := 0; t < bq; t++ {
		inv := 1 / sc.l[t]
		dst := a.out[(s0+qlo+t)*a.hidden+head*d : (s0+qlo+t)*a.hidden+head*d+d]
		for j, v := range sc.o[t*d : (t+1)*d] {
			dst[j] = v * inv
		}
	}
}
