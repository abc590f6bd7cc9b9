package plan

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"testing"
)

type vectors struct {
	Mix []struct {
		Z, Out string
	}
	Draw []struct {
		Seed, Rseed, Key   string
		Layer, Head, Block int
		Draws              []uint32
	}
	Random []struct {
		Seed, Rseed               string
		Layer, Head, Block, NB, R int
		Blocks                    []int32
	}
	KeyBlocks []struct {
		N, B, R            int
		Sparse             bool
		Seed, Rseed        string
		Layer, Head, Block int
		Blocks             []int32
	} `json:"key_blocks"`
}

func u64(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func loadVectors(t *testing.T) *vectors {
	t.Helper()
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Mix) == 0 || len(v.Draw) == 0 || len(v.Random) == 0 || len(v.KeyBlocks) == 0 {
		t.Fatal("vectors.json is missing a section")
	}
	return &v
}

// TestVectors compares the generator with the independent Python
// implementation's fixed vectors (testdata/gen_vectors.py).
func TestVectors(t *testing.T) {
	v := loadVectors(t)
	for _, c := range v.Mix {
		t.Run("mix/"+c.Z, func(t *testing.T) {
			if got := Mix(u64(t, c.Z)); got != u64(t, c.Out) {
				t.Fatalf("Mix(%s) = %d, want %s", c.Z, got, c.Out)
			}
		})
	}
	for _, c := range v.Draw {
		t.Run(fmt.Sprintf("draw/%s/%s/%d/%d/%d", c.Seed, c.Rseed, c.Layer, c.Head, c.Block), func(t *testing.T) {
			k := Key(u64(t, c.Seed), u64(t, c.Rseed), c.Layer, c.Head, c.Block)
			if k != u64(t, c.Key) {
				t.Fatalf("Key = %d, want %s", k, c.Key)
			}
			for j, want := range c.Draws {
				if got := Draw(k, j); got != want {
					t.Fatalf("Draw(%d) = %d, want %d", j, got, want)
				}
			}
		})
	}
	for _, c := range v.Random {
		t.Run(fmt.Sprintf("random/nb=%d/r=%d/i=%d", c.NB, c.R, c.Block), func(t *testing.T) {
			k := Key(u64(t, c.Seed), u64(t, c.Rseed), c.Layer, c.Head, c.Block)
			got := Random(nil, k, c.Block, c.NB, c.R)
			if !slices.Equal(got, c.Blocks) {
				t.Fatalf("Random = %v, want %v", got, c.Blocks)
			}
		})
	}
	for _, c := range v.KeyBlocks {
		t.Run(fmt.Sprintf("keyblocks/n=%d/b=%d/sparse=%v/i=%d", c.N, c.B, c.Sparse, c.Block), func(t *testing.T) {
			s := New(c.N, c.B, c.R, c.Sparse, u64(t, c.Seed), u64(t, c.Rseed))
			got := s.KeyBlocks(nil, c.Layer, c.Head, c.Block)
			if !slices.Equal(got, c.Blocks) {
				t.Fatalf("KeyBlocks = %v, want %v", got, c.Blocks)
			}
		})
	}
}

// TestRandomProperties checks R(i) over many keys: r distinct sorted blocks
// in {1..nb-2} outside the window, and roughly uniform.
func TestRandomProperties(t *testing.T) {
	for _, tc := range []struct{ nb, r int }{{6, 1}, {10, 2}, {12, 3}, {64, 3}, {257, 3}} {
		t.Run(fmt.Sprintf("nb=%d/r=%d", tc.nb, tc.r), func(t *testing.T) {
			counts := make([]int, tc.nb)
			const trials = 4000
			i := tc.nb / 2
			for s := 0; s < trials; s++ {
				got := Random(nil, Key(uint64(s), 1, 2, 3, i), i, tc.nb, tc.r)
				if len(got) != tc.r {
					t.Fatalf("len %d", len(got))
				}
				for j, b := range got {
					if b < 1 || int(b) > tc.nb-2 || (int(b) >= i-1 && int(b) <= i+1) {
						t.Fatalf("block %d not a candidate (i=%d): %v", b, i, got)
					}
					if j > 0 && got[j-1] >= b {
						t.Fatalf("not sorted/distinct: %v", got)
					}
					counts[b]++
				}
			}
			m := tc.nb - 5
			want := float64(trials*tc.r) / float64(m)
			for b, c := range counts {
				if c == 0 {
					continue
				}
				if math.Abs(float64(c)-want) > 6*math.Sqrt(want) {
					t.Errorf("block %d drawn %d times, expected about %.0f", b, c, want)
				}
			}
		})
	}
}

func TestDenseThreshold(t *testing.T) {
	for _, tc := range []struct {
		n, b, r int
		sparse  bool
		want    bool
	}{{704, 64, 3, true, false}, {705, 64, 3, true, true}, {1, 64, 3, true, false}, {16384, 64, 3, false, false}, {145, 16, 2, true, true}} {
		t.Run(fmt.Sprintf("n=%d/b=%d/r=%d/%v", tc.n, tc.b, tc.r, tc.sparse), func(t *testing.T) {
			s := New(tc.n, tc.b, tc.r, tc.sparse, 0, 0)
			if s.Sparse != tc.want {
				t.Fatalf("Sparse = %v, want %v", s.Sparse, tc.want)
			}
			if s.Sparse && s.NumBlocks() < 6+2*tc.r {
				t.Fatalf("nb = %d < 6+2r", s.NumBlocks())
			}
		})
	}
}

func TestRandomPanicsWithTooFewCandidates(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	Random(nil, 1, 2, 6, 2)
}
