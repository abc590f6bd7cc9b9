package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/raptor-infer/raptor/internal/blas"
	"github.com/raptor-infer/raptor/internal/plan"
)

func gemms(t *testing.T) []blas.Gemm {
	gs := []blas.Gemm{blas.Go()}
	if o, err := blas.LoadLibrary("libopenblas.so.0"); err == nil {
		gs = append(gs, o)
	} else {
		t.Logf("OpenBLAS not tested: %v", err)
	}
	return gs
}

// refAttentionRow is the float64 masked-dense reference: query row q (relative
// to its sequence) of head h attends exactly the keys of the plan's blocks
// for its query block, each once, keys past n masked.
func refAttentionRow(qkv []float32, hidden, d, s0 int, sp plan.Seq, layer, h, q int) []float64 {
	ld := 3 * hidden
	mask := make([]bool, sp.NumBlocks()*sp.BlockSize)
	for _, b := range sp.KeyBlocks(nil, layer, h, q/sp.BlockSize) {
		for k := int(b) * sp.BlockSize; k < (int(b)+1)*sp.BlockSize; k++ {
			mask[k] = true
		}
	}
	qv := qkv[(s0+q)*ld+h*d : (s0+q)*ld+h*d+d]
	scale := 1 / math.Sqrt(float64(d))
	scores := make([]float64, sp.N)
	mx := math.Inf(-1)
	for k := 0; k < sp.N; k++ {
		if !mask[k] {
			continue
		}
		kv := qkv[(s0+k)*ld+hidden+h*d:]
		var s float64
		for j := 0; j < d; j++ {
			s += float64(qv[j]) * float64(kv[j])
		}
		scores[k] = s * scale
		mx = math.Max(mx, scores[k])
	}
	out := make([]float64, d)
	var sum float64
	for k := 0; k < sp.N; k++ {
		if !mask[k] {
			continue
		}
		p := math.Exp(scores[k] - mx)
		sum += p
		vv := qkv[(s0+k)*ld+2*hidden+h*d:]
		for j := 0; j < d; j++ {
			out[j] += p * float64(vv[j])
		}
	}
	for j := range out {
		out[j] /= sum
	}
	return out
}

// TestAttentionMatchesReference runs block-sparse and dense attention on
// ragged packed batches with the lengths the plan's edge cases need and
// compares with the float64 reference built from the same plan.
func TestAttentionMatchesReference(t *testing.T) {
	const b, r = 64, 3
	lengths := []int{1, b - 1, b, b + 1, (5 + 2*r) * b, (5+2*r)*b + 1, 4096, 16384}
	if testing.Short() || raceEnabled {
		lengths = []int{1, b - 1, b, b + 1, (5 + 2*r) * b, (5+2*r)*b + 1, 2000}
	}
	for _, g := range gemms(t) {
		for _, d := range []int{32, 64} {
			for _, sparse := range []bool{true, false} {
				name := fmt.Sprintf("%s/d=%d/sparse=%v", g.Name(), d, sparse)
				t.Run(name, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(d), 7))
					lens := append([]int(nil), lengths...)
					rng.Shuffle(len(lens), func(i, j int) { lens[i], lens[j] = lens[j], lens[i] })
					if !sparse {
						lens = lens[:0]
						for _, n := range lengths {
							if n <= 4096 {
								lens = append(lens, n)
							}
						}
					}
					testAttention(t, g, rng, lens, 2, d, b, r, sparse)
				})
			}
		}
	}
}

func TestAttentionSmallBlocks(t *testing.T) {
	for _, g := range gemms(t) {
		t.Run(g.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 5))
			testAttention(t, g, rng, []int{145, 16, 300, 1, 160, 17, 999}, 3, 16, 16, 2, true)
		})
	}
}

func testAttention(t *testing.T, g blas.Gemm, rng *rand.Rand, lens []int, heads, d, b, r int, sparse bool) {
	hidden := heads * d
	T := 0
	cu := []int{0}
	for _, n := range lens {
		T += n
		cu = append(cu, T)
	}
	qkv := make([]float32, T*3*hidden)
	for i := range qkv {
		qkv[i] = float32(rng.NormFloat64())
	}
	out := make([]float32, T*hidden)
	qTile := b
	if !sparse {
		qTile = denseQueryTile
	}
	ck := max(1, keyChunk/qTile) * qTile
	sc := newAttnScratch(qTile, ck, d)
	const layer = 5
	args := &attnArgs{gemm: g, qkv: qkv, out: out, hidden: hidden, d: d, layer: layer, ck: ck}
	plans := make([]plan.Seq, len(lens))
	for s, n := range lens {
		plans[s] = plan.New(n, qTile, r, sparse, 11, uint64(s*31+1))
		for h := 0; h < heads; h++ {
			for qb := 0; qb < plans[s].NumBlocks(); qb++ {
				attendBlock(args, sc, cu[s], plans[s], h, qb)
			}
		}
	}
	var maxErr, maxRef float64
	checked := 0
	for s, n := range lens {
		rows := make([]int, 0)
		if n <= 2*b+2 {
			for q := 0; q < n; q++ {
				rows = append(rows, q)
			}
		} else {
			rows = append(rows, 0, b-1, b, n-1, n-2, (n-1)/b*b, (n-1)/b*b-1)
			for i := 0; i < 40; i++ {
				rows = append(rows, rng.IntN(n))
			}
		}
		for _, q := range rows {
			for h := 0; h < heads; h++ {
				want := refAttentionRow(qkv, hidden, d, cu[s], plans[s], layer, h, q)
				got := out[(cu[s]+q)*hidden+h*d:]
				for j, w := range want {
					maxErr = math.Max(maxErr, math.Abs(float64(got[j])-w))
					maxRef = math.Max(maxRef, math.Abs(w))
				}
				checked++
			}
		}
	}
	t.Logf("lengths %v: %d rows checked, max abs error %.3g (max |ref| %.3g)", lens, checked, maxErr, maxRef)
	if maxErr > 2e-5 {
		t.Fatalf("max abs error %.3g > 2e-5", maxErr)
	}
}
