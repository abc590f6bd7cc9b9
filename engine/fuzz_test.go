package engine

import (
	"context"
	"math"
	"sync"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

// FuzzEncodeBatch fuzzes the validation behind raptor_encode and
// raptor_submit: the C ABI copies a raptor_batch_t / raptor_output_t into an
// engine.Batch / engine.Outputs (abi/encode.go checks only pointers and
// counts) and Model.Encode validates the contents. The fuzzer builds
// arbitrary batches (tokens, cu_seqlens, types, seeds) and output buffers
// of arbitrary lengths and pooling modes, and checks Encode against an
// independent statement of the header's rules:
//   - it succeeds exactly when the batch and outputs are valid;
//   - a failure has the documented status (INVALID_ARGUMENT, OUT_OF_RANGE or
//     BUFFER_TOO_SMALL), a message, and leaves the outputs untouched;
//   - a success gives, for each sequence, bit for bit what that sequence
//     gives alone (batch invariance), with finite values.
//
// The committed corpus is testdata/fuzz/FuzzEncodeBatch.

const (
	fuzzVocab   = 50
	fuzzTypes   = 2
	fuzzMaxPos  = 40
	fuzzHidden  = 8
	fuzzPoisonV = float32(-7.25)
)

var fuzzModel struct {
	once sync.Once
	m    *Model
	err  error
}

// fuzzTinyModel is a 1-layer block-sparse BigBird (block 4, 1 random block:
// sparse from 29 tokens on) with a pooler, shared by every fuzz input.
func fuzzTinyModel(t testing.TB) *Model {
	fuzzModel.once.Do(func() {
		opts := DefaultOptions()
		opts.Backend, opts.BLAS, opts.Threads, opts.Seed = BackendCPU, "off", 1, 7
		opts.Log = func(LogLevel, string) {}
		e, err := New(opts)
		if err != nil {
			fuzzModel.err = err
			return
		}
		cfg := loader.Config{Family: loader.FamilyBigBird, VocabSize: fuzzVocab, Hidden: fuzzHidden, Layers: 1,
			Heads: 2, Intermediate: 8, MaxPositions: fuzzMaxPos, TypeVocabSize: fuzzTypes, LayerNormEps: 1e-12,
			Activation: loader.ActGELUTanh, Pooler: true, Attention: loader.AttentionBlockSparse, BlockSize: 4, RandomBlocks: 1}
		fuzzModel.m, fuzzModel.err = e.Load(testmodel.Random(cfg, 3, 0.3))
	})
	if fuzzModel.err != nil {
		t.Fatal(fuzzModel.err)
	}
	return fuzzModel.m
}

// fuzzBatch decodes the fuzzer's bytes into a batch and outputs.
//   - tokens: one byte each, token = byte - 4 (so -4..251: mostly in range);
//   - cu: cu[0] = int8(cu[0]), then cu[i] = cu[i-1] + int8(cu[i]);
//     flags&0x20 sets the last offset to the token count;
//   - flags&1: token types (byte%3 - (byte>>7): -1..2); flags&2: seeds,
//     flags&4 one seed too many;
//   - flags&8: hidden buffer of T*H + hidDelta floats; flags&16: pooled
//     buffer of S*H + poolDelta floats; pooling is any int8.
func fuzzBatch(tokens, cu []byte, flags uint8, hidDelta, poolDelta, pooling int8) (*Batch, *Outputs) {
	b := &Batch{}
	b.Tokens = make([]int32, len(tokens))
	for i, x := range tokens {
		b.Tokens[i] = int32(x) - 4
	}
	if len(cu) > 0 {
		b.CuSeqlens = make([]int32, len(cu))
		b.CuSeqlens[0] = int32(int8(cu[0]))
		for i := 1; i < len(cu); i++ {
			b.CuSeqlens[i] = b.CuSeqlens[i-1] + int32(int8(cu[i]))
		}
		if flags&0x20 != 0 {
			b.CuSeqlens[len(cu)-1] = int32(len(tokens))
		}
	}
	if flags&1 != 0 {
		b.TokenTypes = make([]int32, len(tokens))
		for i, x := range tokens {
			b.TokenTypes[i] = int32(x%3) - int32(x>>7)
		}
	}
	S := b.NumSeqs()
	if flags&2 != 0 {
		n := S
		if flags&4 != 0 {
			n++
		}
		b.Seeds = make([]uint64, n)
		for i := range b.Seeds {
			b.Seeds[i] = uint64(i)*0x9E3779B97F4A7C15 + uint64(flags)
		}
	}
	out := &Outputs{Pooling: Pooling(pooling), Normalize: flags&0x40 != 0}
	mk := func(n int) []float32 {
		if n < 0 {
			n = 0
		}
		s := make([]float32, n)
		for i := range s {
			s[i] = fuzzPoisonV
		}
		return s
	}
	if flags&8 != 0 {
		out.Hidden = mk(len(tokens)*fuzzHidden + int(hidDelta))
	}
	if flags&16 != 0 {
		out.Pooled = mk(S*fuzzHidden + int(poolDelta))
	}
	return b, out
}

// fuzzValid states the header's rules independently of Model.validate and
// returns the status a batch must get.
func fuzzValid(b *Batch, out *Outputs) status.Code {
	T, S := len(b.Tokens), b.NumSeqs()
	if T == 0 || S < 1 || b.CuSeqlens[0] != 0 {
		return status.InvalidArgument
	}
	for s := 0; s < S; s++ {
		n := int64(b.CuSeqlens[s+1]) - int64(b.CuSeqlens[s])
		if n <= 0 {
			return status.InvalidArgument
		}
		if n > fuzzMaxPos {
			return status.OutOfRange
		}
	}
	if int(b.CuSeqlens[S]) != T {
		return status.InvalidArgument
	}
	if b.TokenTypes != nil && len(b.TokenTypes) != T || b.Seeds != nil && len(b.Seeds) != S {
		return status.InvalidArgument
	}
	for _, t := range b.Tokens {
		if t < 0 || t >= fuzzVocab {
			return status.OutOfRange
		}
	}
	for _, t := range b.TokenTypes {
		if t < 0 || t >= fuzzTypes {
			return status.OutOfRange
		}
	}
	if out.Hidden != nil && len(out.Hidden) < T*fuzzHidden {
		return status.BufferTooSmall
	}
	if out.Pooled != nil {
		if len(out.Pooled) < S*fuzzHidden {
			return status.BufferTooSmall
		}
		if out.Pooling < PoolCLS || out.Pooling > PoolPooler {
			return status.InvalidArgument
		}
	}
	return status.OK
}

// fuzzSeq is n valid token bytes.
func fuzzSeq(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(4 + i%fuzzVocab)
	}
	return b
}

func FuzzEncodeBatch(f *testing.F) {
	// Valid: one sequence; three ragged sequences with types and seeds and
	// both outputs; a sparse one (33 tokens). Invalid: unsorted offsets,
	// cu[0] != 0, too long, short buffers, bad pooling, id out of range.
	f.Add([]byte{5, 6, 7}, []byte{0, 3}, uint8(0x18), int8(0), int8(0), int8(1))
	f.Add([]byte{5, 6, 7, 8, 9, 10, 11}, []byte{0, 2, 1, 4}, uint8(0x1b|0x40), int8(0), int8(0), int8(2))
	f.Add(fuzzSeq(33), []byte{0, 33}, uint8(0x18), int8(0), int8(0), int8(0))
	f.Add([]byte{5, 6, 7, 8}, []byte{0, 3, 255, 2}, uint8(0x18), int8(0), int8(0), int8(1))
	f.Add([]byte{5, 6}, []byte{1, 1}, uint8(0x18), int8(0), int8(0), int8(1))
	f.Add(fuzzSeq(41), []byte{0, 41}, uint8(0x18), int8(0), int8(0), int8(1))
	f.Add([]byte{5, 6, 7}, []byte{0, 3}, uint8(0x18), int8(-1), int8(0), int8(1))
	f.Add([]byte{5, 6, 7}, []byte{0, 3}, uint8(0x18), int8(0), int8(-8), int8(1))
	f.Add([]byte{5, 6, 7}, []byte{0, 3}, uint8(0x10), int8(0), int8(0), int8(3))
	f.Add([]byte{5, 200, 7}, []byte{0, 3}, uint8(0x10), int8(0), int8(0), int8(1))
	f.Add([]byte{5, 6, 7}, []byte{0, 3}, uint8(0x06), int8(0), int8(0), int8(1))
	f.Fuzz(func(t *testing.T, tokens, cu []byte, flags uint8, hidDelta, poolDelta, pooling int8) {
		if len(tokens) > 256 || len(cu) > 64 {
			return
		}
		m := fuzzTinyModel(t)
		b, out := fuzzBatch(tokens, cu, flags, hidDelta, poolDelta, pooling)
		want := fuzzValid(b, out)
		err := m.Encode(context.Background(), b, out)
		got := status.CodeOf(err)
		if got != want {
			t.Fatalf("Encode: status %v, want %v (%v)\nbatch %+v", got, want, err, b)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			for _, s := range [][]float32{out.Hidden, out.Pooled} {
				for i, v := range s {
					if v != fuzzPoisonV {
						t.Fatalf("output written on error (element %d = %v)", i, v)
					}
				}
			}
			return
		}
		H := fuzzHidden
		var written []float32
		if out.Hidden != nil {
			written = append(written, out.Hidden[:len(b.Tokens)*H]...)
		}
		if out.Pooled != nil {
			written = append(written, out.Pooled[:b.NumSeqs()*H]...)
		}
		for i, v := range written {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v == fuzzPoisonV {
				t.Fatalf("output element %d = %v", i, v)
			}
		}
		// Batch invariance: each sequence alone gives the same bits.
		if b.NumSeqs() == 1 {
			return
		}
		for s := 0; s < b.NumSeqs(); s++ {
			lo, hi := int(b.CuSeqlens[s]), int(b.CuSeqlens[s+1])
			one := &Batch{Tokens: b.Tokens[lo:hi], CuSeqlens: []int32{0, int32(hi - lo)}}
			if b.TokenTypes != nil {
				one.TokenTypes = b.TokenTypes[lo:hi]
			}
			if b.Seeds != nil {
				one.Seeds = b.Seeds[s : s+1]
			}
			o1 := &Outputs{Pooling: out.Pooling, Normalize: out.Normalize}
			if out.Hidden != nil {
				o1.Hidden = make([]float32, (hi-lo)*H)
			}
			if out.Pooled != nil {
				o1.Pooled = make([]float32, H)
			}
			if err := m.Encode(context.Background(), one, o1); err != nil {
				t.Fatalf("sequence %d alone: %v", s, err)
			}
			for i, v := range o1.Hidden {
				if math.Float32bits(v) != math.Float32bits(out.Hidden[lo*H+i]) {
					t.Fatalf("sequence %d hidden[%d]: %v alone, %v in the batch", s, i, v, out.Hidden[lo*H+i])
				}
			}
			for i, v := range o1.Pooled {
				if math.Float32bits(v) != math.Float32bits(out.Pooled[s*H+i]) {
					t.Fatalf("sequence %d pooled[%d]: %v alone, %v in the batch", s, i, v, out.Pooled[s*H+i])
				}
			}
		}
	})
}
