package loader

import (
	"fmt"
	"testing"
)

// benchModel is a ~24M-parameter BERT (vocab 30522, hidden 512, 4 layers)
// with random weights.
func benchModel(b *testing.B, d DType, c Codec, chunk int) []byte {
	b.Helper()
	cfg := Config{
		Family: FamilyBERT, VocabSize: 30522, Hidden: 512, Layers: 4, Heads: 8, Intermediate: 2048,
		MaxPositions: 512, TypeVocabSize: 2, LayerNormEps: 1e-12, DType: d, Pooler: true,
	}
	w, err := NewRandomWriter(cfg, 1, WriterOptions{Codec: c, ChunkSize: chunk, Level: 1})
	if err != nil {
		b.Fatal(err)
	}
	data, err := w.Bytes()
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// BenchmarkRead measures Read (validate, decompress, verify) from memory;
// MB/s counts raw weight bytes made ready. bench/loadbench measures Open
// on a BigBird-base file against HuggingFace.
func BenchmarkRead(b *testing.B) {
	for _, tc := range []struct {
		d     DType
		c     Codec
		chunk int
	}{
		{F16, CodecNone, DefaultChunkSize},
		{F16, CodecZstd, DefaultChunkSize},
		{F16, CodecZstdShuffle, 256 << 10},
		{F16, CodecZstdShuffle, DefaultChunkSize},
		{F16, CodecZstdShuffle, 4 << 20},
		{BF16, CodecZstdShuffle, DefaultChunkSize},
		{F32, CodecZstdShuffle, DefaultChunkSize},
	} {
		b.Run(fmt.Sprintf("%s/%s/chunk=%dK", tc.d, tc.c, tc.chunk>>10), func(b *testing.B) {
			data := benchModel(b, tc.d, tc.c, tc.chunk)
			f, err := Read(data)
			if err != nil {
				b.Fatal(err)
			}
			var raw int64
			for _, n := range f.Names() {
				t, _ := f.Tensor(n)
				raw += t.RawSize
			}
			b.SetBytes(raw)
			b.ReportMetric(float64(raw)/float64(len(data)), "ratio")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f, err := Read(data)
				if err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}
