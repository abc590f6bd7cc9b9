package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/raptor-infer/raptor/internal/status"
)

// smallConfig is a model small enough that the bad-file matrix runs fast.
func smallConfig() Config {
	return Config{
		Family: FamilyBERT, VocabSize: 2100, Hidden: 16, Layers: 1, Heads: 2, Intermediate: 32,
		MaxPositions: 16, TypeVocabSize: 2, LayerNormEps: 1e-12, DType: F32,
	}
}

// smallFile returns a valid file whose word embeddings use codec c.
func smallFile(t testing.TB, c Codec) []byte {
	t.Helper()
	w, err := NewRandomWriter(smallConfig(), 1, WriterOptions{Codec: c, ChunkSize: MinChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	b, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// split returns a file's decoded header and its data section.
func split(t testing.TB, b []byte) (*header, []byte) {
	t.Helper()
	hsize := binary.LittleEndian.Uint32(b[4:])
	h, err := decodeHeader(b[preambleSize : preambleSize+hsize])
	if err != nil {
		t.Fatal(err)
	}
	return h, b[h.dataOffset:]
}

// rebuild re-encodes b's header after mutate changed it, with a correct
// layout and checksum, followed by b's data section.
func rebuild(t testing.TB, b []byte, mutate func(h *header)) []byte {
	t.Helper()
	h, data := split(t, b)
	mutate(h)
	if err := headerLayout(h); err != nil {
		t.Fatal(err)
	}
	return append(assembleFile(h), data...)
}

// rehash fixes the header checksum after a test edited header bytes.
func rehash(b []byte) []byte {
	hsize := binary.LittleEndian.Uint32(b[4:])
	binary.LittleEndian.PutUint32(b[8:], crc32c(b[preambleSize:preambleSize+hsize]))
	return b
}

func tensorIndex(h *header, name string) int {
	for i := range h.tensors {
		if h.tensors[i].name == name {
			return i
		}
	}
	panic("no tensor " + name)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestBadFiles(t *testing.T) {
	raw := smallFile(t, CodecNone)
	zst := smallFile(t, CodecZstd)
	for _, b := range [][]byte{raw, zst} {
		if _, err := Read(b); err != nil {
			t.Fatalf("the valid base file fails: %v", err)
		}
	}
	h, _ := split(t, raw)
	emb := h.tensors[tensorIndex(h, TensorWordEmb)]
	hz, _ := split(t, zst)
	embZ := hz.tensors[tensorIndex(hz, TensorWordEmb)]
	if Codec(embZ.codec) != CodecZstd || len(embZ.chunkLens) < 2 {
		t.Fatalf("base zstd file: word embeddings codec %d with %d chunks", embZ.codec, len(embZ.chunkLens))
	}
	dataStart := int(h.dataOffset)

	// A zstd frame of 256 MiB of zeros without a content size: a bomb.
	// One with a 64 KiB window (which the decoder accepts), one with 8 MiB.
	makeBomb := func(window int) []byte {
		var bomb bytes.Buffer
		enc, _ := zstd.NewWriter(&bomb, zstd.WithEncoderCRC(false), zstd.WithWindowSize(window))
		zeros := make([]byte, 1<<20)
		for i := 0; i < 256; i++ {
			enc.Write(zeros)
		}
		enc.Close()
		return bomb.Bytes()
	}
	bomb, bigWindowBomb := makeBomb(MinChunkSize), makeBomb(8<<20)
	// Frames without a content size, one byte longer and shorter than the chunk.
	streamFrame := func(n int) []byte {
		var b bytes.Buffer
		enc, _ := zstd.NewWriter(&b, zstd.WithEncoderCRC(false), zstd.WithWindowSize(MinChunkSize))
		enc.Write(make([]byte, n))
		enc.Close()
		return b.Bytes()
	}
	if len(bomb) > 64<<10 || len(bigWindowBomb) > 64<<10 {
		t.Fatalf("bombs of %d and %d bytes are not bombs", len(bomb), len(bigWindowBomb))
	}

	cases := []struct {
		name string
		file func() []byte
		opts []Option
		msg  string // the error message must contain this
	}{
		{"empty", func() []byte { return nil }, nil, "file too short: 0 bytes"},
		{"truncated in preamble", func() []byte { return raw[:10] }, nil, "file too short: 10 bytes"},
		{"truncated in header", func() []byte { return raw[:100] }, nil, "file truncated: the"},
		{"truncated in data", func() []byte { return raw[:len(raw)-100] }, nil, "file truncated: the data section ends at byte"},
		{"trailing bytes", func() []byte { return append(clone(raw), 0, 0, 0) }, nil, "3 unexpected bytes after the data section"},
		{"wrong magic", func() []byte { b := clone(raw); copy(b, "PK\x03\x04"); return b }, nil, `not a raptor weight file: it starts with "PK\x03\x04"`},
		{"safetensors file", func() []byte { return []byte("\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ") }, nil, "not a raptor weight file"},
		{"wrong identifier", func() []byte { b := clone(raw); copy(b[preambleSize+4:], "XXXX"); return b }, nil, `header identifier "XXXX"`},
		{"wrong version", func() []byte { return rebuild(t, raw, func(h *header) { h.version = 2 }) }, nil, "unsupported format version 2 (this build reads version 1)"},
		{"reserved preamble", func() []byte { b := clone(raw); b[12] = 1; return b }, nil, "reserved preamble field is 0x1"},
		{"header size huge", func() []byte { b := clone(raw); binary.LittleEndian.PutUint32(b[4:], 1<<31); return b }, nil, "header size 2147483648 outside"},
		{"flipped header byte", func() []byte { b := clone(raw); b[preambleSize+40] ^= 0x10; return b }, nil, "header checksum mismatch"},
		{"flipped data byte", func() []byte { b := clone(raw); b[dataStart+int(emb.offset)+1000] ^= 1; return b }, nil, `checksum mismatch in tensor "embeddings.word_embeddings.weight" chunk 0 of`},
		{"flipped bytes in two tensors", func() []byte {
			b := clone(raw)
			b[dataStart+int(emb.offset)+70000] ^= 1
			b[len(b)-1] ^= 1
			return b
		}, nil, "(2 tensors fail: embeddings.word_embeddings.weight, "},
		{"flipped zstd byte", func() []byte { b := clone(zst); b[int(hz.dataOffset)+int(embZ.offset)+200] ^= 0xff; return b }, nil, `tensor "embeddings.word_embeddings.weight" chunk 0`},
		{"root offset outside header", func() []byte {
			b := clone(raw)
			binary.LittleEndian.PutUint32(b[preambleSize:], 1<<30)
			return rehash(b)
		}, nil, "malformed header: Model: table at 1073741824 is outside the header"},
		{"vtable garbage", func() []byte {
			b := clone(raw)
			root := preambleSize + binary.LittleEndian.Uint32(b[preambleSize:])
			binary.LittleEndian.PutUint32(b[root:], 0x7fffffff)
			return rehash(b)
		}, nil, "malformed header: Model: vtable at"},
		{"data offset misaligned", func() []byte {
			return rebuildAt(t, raw, func(h *header) { h.dataOffset += 8 })
		}, nil, "data section offset"},
		{"offset out of range", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[tensorIndex(h, TensorWordEmb)].offset = h.dataSize + 64 })
		}, nil, `tensor "embeddings.word_embeddings.weight": bytes [`},
		{"offset wraps around", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[tensorIndex(h, TensorWordEmb)].offset = ^uint64(0) &^ 63 })
		}, nil, "lie outside the data section"},
		{"offset misaligned", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[tensorIndex(h, TensorWordEmb)].offset += 4 })
		}, nil, "offset 4 is not a multiple of 64"},
		{"length out of range", func() []byte {
			return rebuild(t, zst, func(h *header) {
				e := &h.tensors[tensorIndex(h, TensorWordEmb)]
				e.chunkLens[len(e.chunkLens)-1] += uint32(h.dataSize)
				e.length += h.dataSize
			})
		}, nil, "lie outside the data section"},
		{"overlapping tensors", func() []byte {
			return rebuild(t, raw, func(h *header) {
				h.tensors[tensorIndex(h, TensorTypeEmb)].offset = h.tensors[tensorIndex(h, TensorPosEmb)].offset + 64
			})
		}, nil, "overlap"},
		{"shape does not match length", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[tensorIndex(h, TensorWordEmb)].shape = []uint64{2100, 15} })
		}, nil, "shape [2100 15] of f32 is 126000 bytes, but its raw size says 134400"},
		{"zero dimension", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[0].shape = []uint64{0, 16} })
		}, nil, "has a zero dimension"},
		{"rank too high", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[0].shape = make([]uint64, 9) })
		}, nil, "rank 9 exceeds 8"},
		{"declared size of many GiB (zstd)", func() []byte {
			return rebuild(t, zst, func(h *header) {
				e := &h.tensors[tensorIndex(h, TensorWordEmb)]
				e.shape = []uint64{1 << 20, 1 << 20}
				e.rawSize = 1 << 42
			})
		}, nil, "declares 4.0 TiB decompressed, above the limit of 16.0 GiB"},
		{"declared size of many GiB (raw)", func() []byte {
			return rebuild(t, raw, func(h *header) {
				e := &h.tensors[tensorIndex(h, TensorWordEmb)]
				e.shape = []uint64{1 << 20, 1 << 11}
				e.rawSize, e.length = 8<<30, 8<<30
				h.chunkSize = MaxChunkSize
				for j := range h.tensors {
					h.tensors[j].crcs = make([]uint32, (h.tensors[j].rawSize+MaxChunkSize-1)/MaxChunkSize)
				}
			})
		}, nil, "lie outside the data section"},
		{"chunk tables too large", func() []byte {
			return rebuild(t, raw, func(h *header) {
				for j := range h.tensors {
					h.tensors[j].crcs = make([]uint32, 1<<20)
				}
			})
		}, nil, "chunk tables hold more than 4194304 entries"},
		{"shape overflows", func() []byte {
			return rebuild(t, raw, func(h *header) { h.tensors[0].shape = []uint64{1 << 40, 1 << 40} })
		}, nil, "overflows"},
		{"total decompressed above the cap", func() []byte { return zst }, []Option{MaxDecompressed(10000)}, "above the limit of 9.8 KiB"},
		// The bomb replaces the first chunk, whose declared size stays 64 KiB.
		{"zstd bomb", nil, nil, ""},
		{"zstd bomb with a large window", nil, nil, ""},
		{"zstd chunk one byte too long", nil, nil, ""},
		{"zstd chunk one byte short", nil, nil, ""},
		{"zstd frame content size mismatch", nil, nil, "zstd frame declares"},
		{"unknown dtype", func() []byte { return rebuild(t, raw, func(h *header) { h.tensors[0].dtype = 9 }) }, nil, "unknown dtype 9"},
		{"unknown codec", func() []byte { return rebuild(t, raw, func(h *header) { h.tensors[0].codec = 7 }) }, nil, "unknown codec 7"},
		{"duplicate tensor", func() []byte { return rebuild(t, raw, func(h *header) { h.tensors[1].name = h.tensors[0].name }) }, nil, "appears twice"},
		{"missing tensor", func() []byte { return rebuild(t, raw, func(h *header) { h.tensors[0].name = "something.else" }) }, nil, "missing 1 tensor(s) a bert model with this config needs: embeddings.word_embeddings.weight"},
		{"tensor shape differs from config", func() []byte {
			return rebuild(t, raw, func(h *header) { h.cfg.vocab = 2101 })
		}, nil, "embeddings.word_embeddings.weight has shape [2100 16], the config needs [2101 16]"},
		{"bad config", func() []byte { return rebuild(t, raw, func(h *header) { h.cfg.heads = 3; h.cfg.family = 7 }) }, nil, "invalid config: unknown family 7; head count 3 does not divide hidden size 16"},
		{"bad tokenizer ids", func() []byte {
			return rebuild(t, raw, func(h *header) {
				h.tok = &rawTokenizer{vocab: []string{"a", "b"}, cls: 2, sep: -1, pad: -1, unk: -1, mask: -1}
			})
		}, nil, "tokenizer cls id 2 outside [-1, 2)"},
		{"chunk checksum count", func() []byte { return rebuild(t, raw, func(h *header) { h.tensors[0].crcs = h.tensors[0].crcs[1:] }) }, nil, "chunk checksums for"},
		{"chunk lengths do not add up", func() []byte {
			return rebuild(t, zst, func(h *header) { h.tensors[tensorIndex(h, TensorWordEmb)].chunkLens[0]++ })
		}, nil, "chunk lengths add up to"},
		{"chunk size not a power of two", func() []byte { return rebuild(t, raw, func(h *header) { h.chunkSize = 100000 }) }, nil, "chunk size 100000 is not a power of two"},
	}
	// Cases whose files need the pieces above.
	for i := range cases {
		switch cases[i].name {
		case "zstd bomb":
			cases[i].file = func() []byte { return withFirstChunk(t, zst, bomb) }
			// The decoder stops at the first block past the chunk's size.
			cases[i].msg = `tensor "embeddings.word_embeddings.weight" chunk 0: corrupt zstd data: output bigger than max block size (65536)`
		case "zstd bomb with a large window":
			cases[i].file = func() []byte { return withFirstChunk(t, zst, bigWindowBomb) }
			cases[i].msg = `tensor "embeddings.word_embeddings.weight" chunk 0: corrupt zstd data: window size exceeded`
		case "zstd chunk one byte too long":
			cases[i].file = func() []byte { return withFirstChunk(t, zst, streamFrame(MinChunkSize+1)) }
			cases[i].msg = `tensor "embeddings.word_embeddings.weight" chunk 0: zstd data decompresses to more than the 65536 bytes declared`
		case "zstd chunk one byte short":
			cases[i].file = func() []byte { return withFirstChunk(t, zst, streamFrame(MinChunkSize-1)) }
			cases[i].msg = `tensor "embeddings.word_embeddings.weight" chunk 0: zstd frame declares 65535 bytes, the chunk has 65536`
		case "zstd frame content size mismatch":
			cases[i].file = func() []byte {
				frame := zstd.EncodeTo(nil, make([]byte, 1000)) // declares 1000 bytes
				return withFirstChunk(t, zst, frame)
			}
			cases[i].msg = "zstd frame declares 1000 bytes, the chunk has 65536"
		}
	}
	dir := t.TempDir()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.file()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			f, err := Read(b, tc.opts...)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			checkBad(t, f, err, tc.msg)
			// Memory stays bounded: no case may allocate more than 32 MiB.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
				t.Errorf("Read allocated %d MiB", alloc>>20)
			}
			// The same from a file on disk, through the mapping.
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err = Open(path, tc.opts...)
			checkBad(t, f, err, tc.msg)
			if err != nil && !strings.Contains(err.Error(), path) {
				t.Errorf("Open error %q does not name the file", err)
			}
		})
	}
}

func checkBad(t *testing.T, f *File, err error, msg string) {
	t.Helper()
	if err == nil {
		f.Close()
		t.Fatalf("bad file accepted")
	}
	var se *status.Error
	if !errors.As(err, &se) || se.Code != status.InvalidModel {
		t.Fatalf("error %v has code %v, want INVALID_MODEL", err, status.CodeOf(err))
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q does not contain %q", err, msg)
	}
}

// rebuildAt is rebuild for mutations of the layout itself: mutate runs after
// the layout is computed, and the data section is placed at h.dataOffset.
func rebuildAt(t testing.TB, b []byte, mutate func(h *header)) []byte {
	t.Helper()
	h, data := split(t, b)
	if err := headerLayout(h); err != nil {
		t.Fatal(err)
	}
	mutate(h)
	return append(assembleFile(h), data...)
}

// withFirstChunk replaces the first zstd chunk of the word embeddings with
// frame, fixing up lengths, offsets and the header checksum.
func withFirstChunk(t testing.TB, b []byte, frame []byte) []byte {
	t.Helper()
	h, data := split(t, b)
	i := tensorIndex(h, TensorWordEmb)
	e := &h.tensors[i]
	old := uint64(e.chunkLens[0])
	var section []byte
	for j := range h.tensors {
		x := &h.tensors[j]
		stored := data[x.offset : x.offset+x.length]
		if j == i {
			stored = append(append([]byte(nil), frame...), stored[old:]...)
			x.chunkLens[0] = uint32(len(frame))
			x.length = uint64(len(stored))
		}
		for len(section)%DataAlign != 0 {
			section = append(section, 0)
		}
		x.offset = uint64(len(section))
		section = append(section, stored...)
	}
	h.dataSize = uint64(len(section))
	if err := headerLayout(h); err != nil {
		t.Fatal(err)
	}
	return append(assembleFile(h), section...)
}

// Open reports a missing file and a directory as IO errors.
func TestOpenIOErrors(t *testing.T) {
	for _, path := range []string{filepath.Join(t.TempDir(), "nope"), t.TempDir()} {
		_, err := Open(path)
		if status.CodeOf(err) != status.IO {
			t.Fatalf("Open(%s) = %v, want an IO error", path, err)
		}
	}
}

// A file truncated while it is mapped makes reads fault; the fault becomes
// an error, not a crash.
func TestTruncatedWhileMapped(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("files are read, not mapped, on this OS")
	}
	path := filepath.Join(t.TempDir(), "m.raptor")
	if err := os.WriteFile(path, smallFile(t, CodecNone), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, SkipVerify())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.Float32(TensorWordEmb)
	if status.CodeOf(err) != status.IO || !strings.Contains(err.Error(), "changed or truncated while mapped") {
		t.Fatalf("Float32 of a truncated mapping: %v", err)
	}
	if err := f.Verify(); status.CodeOf(err) != status.IO {
		t.Fatalf("Verify of a truncated mapping: %v", err)
	}
}
