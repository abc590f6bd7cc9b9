package engine

import (
	"math/rand/v2"
	"testing"

	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// TestGPUSanitizeEncoder: the whole encoder on small shapes, for
// compute-sanitizer (tests/gpu/run.sh --sanitize runs it under memcheck and
// racecheck): a dense BERT (head dimension 32) and a block-sparse BigBird
// (head dimension 64, sequences past the sparse threshold of 11 blocks), each
// on one small ragged batch in fp16 and bf16, mean and CLS pooling, against
// the float32 CPU backend on the same weights (relative error <= 2e-2). It
// runs every kernel of the forward: embeddings, the GEMMs with their
// epilogues, dense and sparse attention, layer norms, pooling. Skips without
// a GPU.
func TestGPUSanitizeEncoder(t *testing.T) {
	engines := map[ComputeDType]*Engine{ComputeFP16: gpuEngine(t, ComputeFP16), ComputeBF16: gpuEngine(t, ComputeBF16)}
	cpuE := cpuRefEngine(t)
	cases := []struct {
		name string
		cfg  loader.Config
		lens []int
	}{
		{"bert-dense-d32", gpuConfig(loader.FamilyBERT, loader.AttentionDense, 64, 2, 128, 2), []int{1, 5, 63, 64, 65, 129}},
		{"bigbird-sparse-d64", gpuConfig(loader.FamilyBigBird, loader.AttentionBlockSparse, 128, 2, 256, 2), []int{1, 65, 705, 130}},
	}
	for ci, c := range cases {
		w := testmodel.Random(c.cfg, uint64(ci+11), 0.05)
		b := raggedBatch(rand.New(rand.NewPCG(uint64(ci), 5)), c.cfg, c.lens)
		cm, err := cpuE.Load(w)
		if err != nil {
			t.Fatal(err)
		}
		for _, dt := range []ComputeDType{ComputeFP16, ComputeBF16} {
			gm, err := engines[dt].Load(w)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			for _, pool := range []Pooling{PoolMean, PoolCLS} {
				rh, rp := encodeOut(t, cm, b, pool, false)
				h, p := encodeOut(t, gm, b, pool, false)
				eh, _ := gpuRelErr(h, rh)
				ep, _ := gpuRelErr(p, rp)
				t.Logf("%s dtype %d pool %d T=%d: hidden rel %.2e, pooled rel %.2e", c.name, dt, pool, len(b.Tokens), eh, ep)
				if !(eh <= 2e-2) || !(ep <= 2e-2) {
					t.Errorf("%s dtype %d pool %d: relative error hidden %.3g pooled %.3g > 2e-2", c.name, dt, pool, eh, ep)
				}
			}
			gm.Close()
		}
		cm.Close()
	}
}
