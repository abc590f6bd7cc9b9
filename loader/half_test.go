package loader

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Every binary16 value survives f16 -> f32 -> f16, and the f32 value is the
// one the IEEE encoding defines.
func TestF16Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		exp, mant := int(h>>10)&0x1f, float64(h&0x3ff)
		var want float64
		switch {
		case exp == 0x1f && mant == 0:
			want = math.Inf(1)
		case exp == 0x1f:
			if !math.IsNaN(float64(f)) {
				t.Fatalf("%#04x: got %v, want NaN", h, f)
			}
			if back := F32ToF16(f); back != h|0x200 {
				t.Fatalf("%#04x: NaN round trip gave %#04x", h, back)
			}
			continue
		case exp == 0:
			want = mant * math.Pow(2, -24)
		default:
			want = (1 + mant/1024) * math.Pow(2, float64(exp-15))
		}
		if h&0x8000 != 0 {
			want = -want
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("%#04x: F16ToF32 = %v, want %v", h, f, want)
		}
		if back := F32ToF16(f); back != h {
			t.Fatalf("%#04x: round trip gave %#04x", h, back)
		}
	}
}

// nearestCheck checks that enc(x) is a nearest representable value to x
// with ties to the even encoding, using dec to read encodings back.
func nearestCheck(t *testing.T, x float32, enc func(float32) uint16, dec func(uint16) float32, maxFinite float64) {
	t.Helper()
	h := enc(x)
	got := float64(dec(h))
	xv := float64(x)
	if math.IsNaN(xv) {
		if !math.IsNaN(got) {
			t.Fatalf("NaN %#x encoded as %#04x", math.Float32bits(x), h)
		}
		return
	}
	if math.IsInf(got, 0) {
		// Overflow is right only beyond max + half an ulp of max.
		if math.Abs(xv) <= maxFinite {
			t.Fatalf("%g (%#x) encoded as infinity", xv, math.Float32bits(x))
		}
		return
	}
	// Neighbouring encodings (same sign) must be no closer.
	for _, n := range []uint16{h - 1, h + 1} {
		if n&0x7fff == 0x7fff || (h&0x7fff == 0 && n == h-1) {
			continue
		}
		nv := float64(dec(n))
		if math.IsNaN(nv) || math.IsInf(nv, 0) || math.Signbit(nv) != math.Signbit(got) {
			continue
		}
		d, dn := math.Abs(got-xv), math.Abs(nv-xv)
		if dn < d || (dn == d && h&1 == 1) {
			t.Fatalf("%g (%#x) encoded as %#04x (%g); %#04x (%g) is nearer or the even tie", xv, math.Float32bits(x), h, got, n, nv)
		}
	}
}

func TestF32ToHalfRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	special := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519.99, 65520, -65520, 1e-8, 2.98e-8, 5.96e-8, 6.1e-5,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.MaxFloat32, math.SmallestNonzeroFloat32, 1.0009765625, 1.00048828125}
	for _, x := range special {
		nearestCheck(t, x, F32ToF16, F16ToF32, 65519.99)
		nearestCheck(t, x, F32ToBF16, BF16ToF32, 3.3961775e38)
	}
	for i := 0; i < 500_000; i++ {
		// Random bit patterns cover every exponent; scaled normals cover weights.
		x := math.Float32frombits(rng.Uint32())
		if i%2 == 0 {
			x = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(40)-30)))
		}
		nearestCheck(t, x, F32ToF16, F16ToF32, 65519.99)
		nearestCheck(t, x, F32ToBF16, BF16ToF32, 3.3961775e38)
	}
	// Exact ties: halfway between 1 and 1+2^-10 rounds to even (1).
	if got := F32ToF16(1 + 1.0/2048); got != 0x3c00 {
		t.Fatalf("tie rounded to %#04x, want 0x3c00", got)
	}
	if got := F32ToF16(1 + 3.0/2048); got != 0x3c02 {
		t.Fatalf("tie rounded to %#04x, want 0x3c02", got)
	}
	if got := F32ToBF16(math.Float32frombits(0x3f808000)); got != 0x3f80 {
		t.Fatalf("bf16 tie rounded to %#04x, want 0x3f80", got)
	}
	if got := F32ToBF16(math.Float32frombits(0x3f818000)); got != 0x3f82 {
		t.Fatalf("bf16 tie rounded to %#04x, want 0x3f82", got)
	}
}

func TestShuffleRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1, 2, 3, 4, 8} {
		for _, n := range []int{0, 1, 7, 1000, 1003} {
			src := make([]byte, n*size)
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			sh, back := make([]byte, len(src)), make([]byte, len(src))
			shuffle(sh, src, size)
			for i := 0; i < n; i++ {
				for p := 0; p < size; p++ {
					if sh[p*n+i] != src[i*size+p] {
						t.Fatalf("size %d n %d: plane %d element %d misplaced", size, n, p, i)
					}
				}
			}
			unshuffle(back, sh, size)
			if string(back) != string(src) {
				t.Fatalf("size %d n %d: unshuffle does not invert shuffle", size, n)
			}
		}
	}
}
