package cuda

import (
	"math/rand"
	"testing"
)

// attnTickets counts the work items (tickets) of a batch as the schedule
// kernel makes them (kernels/sparse_attention.cuh, "Schedule"): per head, a
// dense sequence has nb items, a sparse one nb-4 middle rows, rows 1 and nb-2,
// and its two global rows in ceil(nb/C) chunks each.
func attnTickets(lens []int, heads, r, C int, sparse bool) int64 {
	var n int64
	for _, l := range lens {
		nb := (l + AttnBlock - 1) / AttnBlock
		if !sparse || l <= (5+2*r)*AttnBlock {
			n += int64(nb)
			continue
		}
		n += int64(nb - 2 + 2*((nb+C-1)/C))
	}
	return n * int64(heads)
}

// TestAttnWorkspaceRecordsBound checks that the item records' room in the
// workspace covers every ticket of random ragged batches (the kernel writes
// one record set per layer for each ticket; a short bound would let it write
// past the workspace).
func TestAttnWorkspaceRecordsBound(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, tc := range []struct {
		name   string
		maxLen int
		nseq   int
	}{
		{"short", 200, 64},
		{"around the dense threshold", 800, 40},
		{"long", 70000, 3},
		{"one token each", 1, 100},
		{"mixed", 20000, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for it := 0; it < 200; it++ {
				lens := make([]int, 1+rng.Intn(tc.nseq))
				T := 0
				for i := range lens {
					lens[i] = 1 + rng.Intn(tc.maxLen)
					T += lens[i]
				}
				heads := 1 + rng.Intn(16)
				base := AttnWorkspaceBytes(T, len(lens), heads, 0)
				for _, sets := range []int{1, 3} {
					room := (AttnWorkspaceBytes(T, len(lens), heads, sets) - base) / 4 / int64(sets)
					for _, r := range []int{0, 1, 3, 16} {
						need := attnTickets(lens, heads, r, attnSplitBlocks, true) * attnRecInts
						if room < need {
							t.Fatalf("T=%d nseq=%d heads=%d r=%d sets=%d: record room %d ints < %d needed",
								T, len(lens), heads, r, sets, room, need)
						}
					}
				}
			}
		})
	}
}

func TestAttnRecordSets(t *testing.T) {
	h := Info{Arch: "sm_90a"}
	a := Info{Arch: "sm_80"}
	for _, tc := range []struct {
		name    string
		info    Info
		headDim int
		layers  int
		sparse  bool
		want    int
	}{
		{"hopper sparse", h, 64, 12, true, 12},
		{"hopper dense: one set for every layer", h, 64, 6, false, 1},
		{"hopper D=128", h, 128, 24, true, 24},
		{"hopper D=32 runs mma.sync", h, 32, 12, true, 0},
		{"ampere runs mma.sync", a, 64, 12, true, 0},
		{"no layers", h, 64, 0, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if attnForceMMA {
				t.Skip("RAPTOR_ATTN_KERNEL=mma: every device runs the mma.sync kernel")
			}
			if got := AttnRecordSets(tc.info, tc.headDim, tc.layers, tc.sparse); got != tc.want {
				t.Fatalf("AttnRecordSets = %d, want %d", got, tc.want)
			}
		})
	}
}
