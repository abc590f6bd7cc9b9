// Package plan is raptor's block-sparse attention plan (ARCHITECTURE.md, "The
// attention plan") and the counter-based generator that draws each query
// block's random key blocks. The CPU backend uses it directly; the CUDA
// backend reimplements Generator in a kernel, so everything in the section
// "The generator" below is normative, bit for bit.
//
// # The plan
//
// A sequence of n tokens with block size b and r random blocks has
// nb = ceil(n/b) blocks. If the model's attention is dense, or
// n <= (5+2r)*b, every query attends every key of its sequence. Otherwise
// query block i attends the key blocks
//
//   - 0 .. nb-1 (all), if i = 0 or i = nb-1 (global rows);
//   - else {0, nb-1} ∪ {i-1, i, i+1} ∪ R(i), each block counted once,
//
// where R(i) is r distinct blocks drawn from {1 .. nb-2} \ {i-1, i, i+1}.
// Keys at positions >= n in the last block are masked (never attended).
// n > (5+2r)*b implies nb >= 6+2r, so the candidate set always has at least
// nb-5 >= r+1 members.
//
// # The generator
//
// All arithmetic is on unsigned 64-bit integers and wraps modulo 2^64;
// ">>" is a logical shift. Two constants:
//
//	GAMMA = 0x9E3779B97F4A7C15   (the SplitMix64 increment)
//	START = 0x243F6A8885A308D3   (the first 64 fraction bits of pi)
//
// The SplitMix64 finalizer:
//
//	mix(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
//	        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
//	        return z ^ (z >> 31)
//
// The key of query block i of head h in layer l, for engine seed S and
// request seed Q (layer, head and block zero-extended to 64 bits):
//
//	k = START
//	for w in (S, Q, l, h, i):  k = mix((k ^ w) + GAMMA)
//
// Draw number j (j = 0, 1, 2, ...) of that key is the high half of the j-th
// SplitMix64 output seeded with k:
//
//	u_j = mix(k + (j+1)*GAMMA) >> 32          (a 32-bit value)
//
// and a uniform index below a bound m >= 1 is the multiply-high
// (u_j * m) >> 32 (computed in 64 bits; bias at most m/2^32, accepted).
//
// R(i) for 1 <= i <= nb-2: the candidates are {1 .. nb-2} minus the window
// [lo, hi] with lo = max(1, i-1), hi = min(nb-2, i+1), in increasing order;
// there are m = (nb-2) - (hi-lo+1) of them, and candidate c (0-based) is
// block 1+c if 1+c < lo, else block 1+c+(hi-lo+1). Floyd's algorithm picks r
// distinct candidate indices with one draw per step:
//
//	picks = {}
//	for step, t in enumerate(m-r .. m-1):      // step = 0 .. r-1
//	    x = (u_step * (t+1)) >> 32              // uniform in [0, t]
//	    picks += (x in picks) ? t : x
//
// The picked candidates are mapped to blocks and returned sorted ascending.
// internal/plan/testdata/gen_vectors.py is an independent implementation that
// produces the fixed vectors this package is tested against.
package plan

import "fmt"

// Defaults of the BigBird plan.
const (
	DefaultBlockSize    = 64
	DefaultRandomBlocks = 3
)

const (
	gamma = 0x9E3779B97F4A7C15
	start = 0x243F6A8885A308D3
)

// Mix is the SplitMix64 finalizer.
func Mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// Key is the generator key of query block i of head h in layer l.
func Key(engineSeed, requestSeed uint64, layer, head, block int) uint64 {
	k := uint64(start)
	for _, w := range [5]uint64{engineSeed, requestSeed, uint64(layer), uint64(head), uint64(block)} {
		k = Mix((k ^ w) + gamma)
	}
	return k
}

// Draw is the 32-bit draw number j of key k.
func Draw(k uint64, j int) uint32 {
	return uint32(Mix(k+uint64(j+1)*gamma) >> 32)
}

// Random appends R(i), sorted ascending, for query block i (1 <= i <= nb-2) of
// a sequence of nb blocks with r random blocks, drawn with key k, to dst. It
// panics if fewer than r candidates exist, which cannot happen for a
// sequence above the dense threshold.
func Random(dst []int32, k uint64, i, nb, r int) []int32 {
	if i < 1 || i > nb-2 {
		panic(fmt.Sprintf("plan: R(%d) undefined for %d blocks", i, nb))
	}
	lo, hi := max(1, i-1), min(nb-2, i+1)
	width := hi - lo + 1
	m := (nb - 2) - width
	if r > m {
		panic(fmt.Sprintf("plan: %d random blocks from %d candidates (nb=%d, i=%d)", r, m, nb, i))
	}
	base := len(dst)
	for step := 0; step < r; step++ {
		t := m - r + step
		x := int((uint64(Draw(k, step)) * uint64(t+1)) >> 32)
		for _, p := range dst[base:] {
			if int(p) == x {
				x = t
				break
			}
		}
		dst = append(dst, int32(x))
	}
	picks := dst[base:]
	for j, c := range picks {
		b := 1 + int(c)
		if b >= lo {
			b += width
		}
		picks[j] = int32(b)
	}
	insertionSort(picks)
	return dst
}

func insertionSort(a []int32) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// Seq is the plan of one sequence.
type Seq struct {
	N         int    // tokens
	BlockSize int    // b
	Random    int    // r
	Sparse    bool   // the model uses block-sparse attention and N is above the dense threshold
	Seed      uint64 // engine seed
	ReqSeed   uint64 // request seed
}

// New returns the plan of a sequence of n tokens. sparse says whether the
// model's attention is block-sparse; the plan is dense anyway when
// n <= (5+2r)*b. For a dense model blockSize only sets the query tile and may
// be 0 (DefaultBlockSize).
func New(n, blockSize, randomBlocks int, sparse bool, seed, reqSeed uint64) Seq {
	if blockSize <= 0 {
		blockSize = DefaultBlockSize
	}
	s := Seq{N: n, BlockSize: blockSize, Random: randomBlocks, Seed: seed, ReqSeed: reqSeed}
	s.Sparse = sparse && !IsDense(n, blockSize, randomBlocks)
	return s
}

// IsDense reports whether a sequence of n tokens is below the block-sparse
// threshold (5+2r)*b and so attends densely.
func IsDense(n, b, r int) bool { return n <= (5+2*r)*b }

// NumBlocks is ceil(N / BlockSize).
func (s Seq) NumBlocks() int { return (s.N + s.BlockSize - 1) / s.BlockSize }

// BlockRows returns the token range [lo, hi) of block i.
func (s Seq) BlockRows(i int) (lo, hi int) {
	return i * s.BlockSize, min(s.N, (i+1)*s.BlockSize)
}

// KeyBlocks appends to dst the key blocks, sorted ascending and each once,
// that query block i attends in layer l, head h.
func (s Seq) KeyBlocks(dst []int32, layer, head, i int) []int32 {
	nb := s.NumBlocks()
	if !s.Sparse || i == 0 || i == nb-1 {
		for j := 0; j < nb; j++ {
			dst = append(dst, int32(j))
		}
		return dst
	}
	base := len(dst)
	dst = append(dst, 0)
	dst = Random(dst, Key(s.Seed, s.ReqSeed, layer, head, i), i, nb, s.Random)
	for j := i - 1; j <= i+1; j++ {
		if j > 0 && j < nb-1 {
			dst = append(dst, int32(j))
		}
	}
	dst = append(dst, int32(nb-1))
	insertionSort(dst[base:])
	return dst
}
