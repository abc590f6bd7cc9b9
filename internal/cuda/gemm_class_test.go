package cuda

import "testing"

// mClass: M itself up to 64; above, the smallest multiple of a quarter of
// M's power of two that holds M (four classes per power of two), so a class
// exceeds M by less than a quarter of M and classes never shrink as M grows.
func TestMClass(t *testing.T) {
	for _, tc := range []struct{ m, want int }{
		{1, 1}, {63, 63}, {64, 64},
		{65, 80}, {80, 80}, {81, 96}, {127, 128}, {128, 128},
		{129, 160}, {2049, 2560}, {3000, 3072}, {4096, 4096}, {4097, 5120},
		{32768, 32768}, {148466, 163840},
	} {
		if got := mClass(tc.m); got != tc.want {
			t.Errorf("mClass(%d) = %d, want %d", tc.m, got, tc.want)
		}
	}
	prev := 0
	for m := 1; m <= 1<<17; m++ {
		c := mClass(m)
		if c < m || c < prev {
			t.Fatalf("mClass(%d) = %d (previous class %d)", m, c, prev)
		}
		if m > 64 && 4*(c-m) >= m {
			t.Fatalf("mClass(%d) = %d exceeds M by a quarter of M or more", m, c)
		}
		prev = c
	}
}
