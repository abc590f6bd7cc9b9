// Package lenmix draws request lengths from the search/RAG embedding mix the
// serving benchmarks use: 55% of 8-64 tokens, 30% of 65-192, 12% of 193-384
// and 3% of 385-maxLen (mostly short queries and passages, a tail of long
// documents).
package lenmix

import "math/rand/v2"

// Draw returns one length of the mix, at most maxLen.
func Draw(rng *rand.Rand, maxLen int) int {
	between := func(lo, hi int) int {
		hi = min(hi, maxLen)
		lo = min(lo, hi)
		return lo + rng.IntN(hi-lo+1)
	}
	switch p := rng.Float64(); {
	case p < 0.55:
		return between(8, 64)
	case p < 0.85:
		return between(65, 192)
	case p < 0.97:
		return between(193, 384)
	default:
		return between(385, maxLen)
	}
}
