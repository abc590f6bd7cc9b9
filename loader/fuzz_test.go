package loader

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
)

// fuzzSeeds are small valid files, one per dtype and codec (with and without
// a tokenizer), that seed FuzzRead. The committed corpus in
// testdata/fuzz/FuzzRead holds the same files plus broken variants;
// regenerate it with RAPTOR_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus.
func fuzzSeeds(t testing.TB) map[string][]byte {
	seeds := map[string][]byte{}
	for _, d := range []DType{F32, F16, BF16} {
		for _, c := range []Codec{CodecNone, CodecZstd, CodecZstdShuffle} {
			cfg := Config{
				Family: FamilyRoBERTa, VocabSize: 16, Hidden: 8, Layers: 1, Heads: 2, Intermediate: 8,
				MaxPositions: 8, TypeVocabSize: 1, LayerNormEps: 1e-5, Activation: ActGELUTanh,
				PositionOffset: 2, PadTokenID: 1, DType: d,
			}
			if c == CodecZstd {
				cfg.Family, cfg.Attention, cfg.BlockSize, cfg.RandomBlocks, cfg.Pooler = FamilyBigBird, AttentionBlockSparse, 2, 1, true
				cfg.Tokenizer = &TokenizerSpec{Vocab: []string{"[PAD]", "[UNK]", "a", "##b"}, Lowercase: true, CLS: -1, SEP: -1, PAD: 0, UNK: 1, MASK: -1, MaxLength: 6}
			}
			w, err := NewRandomWriter(cfg, 3, WriterOptions{Codec: c, Producer: "fuzz seed"})
			if err != nil {
				t.Fatal(err)
			}
			// Constant tensors compress, so every codec appears in the file.
			b, err := w.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			seeds[fmt.Sprintf("valid-%s-%s", d, c)] = b
		}
	}
	return seeds
}

// FuzzRead feeds arbitrary bytes to Read: it must return a valid File or an
// INVALID_MODEL *status.Error, never panic, and keep memory bounded. Each
// input is read twice: as is, and with its header checksum fixed up, so
// that mutations of the header reach the verifier and the validation behind
// the checksum.
func FuzzRead(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzOne(t, data)
		if len(data) >= preambleSize {
			if h := uint64(binary.LittleEndian.Uint32(data[4:])); preambleSize+h <= uint64(len(data)) {
				fuzzOne(t, rehash(clone(data)))
			}
		}
	})
}

func fuzzOne(t *testing.T, data []byte) {
	{
		file, err := Read(data, MaxDecompressed(64<<20))
		if err != nil {
			var se *status.Error
			if !errors.As(err, &se) || se.Code != status.InvalidModel {
				t.Fatalf("error %v has code %v, want INVALID_MODEL", err, status.CodeOf(err))
			}
			return
		}
		defer file.Close()
		for _, name := range file.Names() {
			info, ok := file.Tensor(name)
			if !ok {
				t.Fatalf("listed tensor %q not found", name)
			}
			v, shape, err := file.Float32(name)
			if err != nil || len(v) != info.Elements() || !equalInts(shape, info.Shape) {
				t.Fatalf("Float32(%q): %d values, shape %v, %v", name, len(v), shape, err)
			}
		}
		if err := file.Verify(); err != nil {
			t.Fatalf("accepted file fails Verify: %v", err)
		}
	}
}

func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("RAPTOR_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("set RAPTOR_WRITE_FUZZ_CORPUS=1 to rewrite testdata/fuzz/FuzzRead")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzRead")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seeds := fuzzSeeds(t)
	base := seeds["valid-f32-zstd"]
	// Broken variants start the fuzzer next to interesting failures.
	seeds["truncated"] = base[:len(base)/2]
	seeds["header-only"] = base[:64]
	flipped := clone(base)
	flipped[len(flipped)-3] ^= 0x40
	seeds["flipped-data"] = flipped
	seeds["bad-header-crc"] = func() []byte { b := clone(base); b[preambleSize+20] ^= 1; return b }()
	seeds["overlap"] = rebuild(t, seeds["valid-f16-none"], func(h *header) { h.tensors[1].offset = h.tensors[0].offset })
	for name, b := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
