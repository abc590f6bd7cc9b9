package loader

import (
	"fmt"
	"hash/crc32"
)

// File format constants. The layout is documented in loader/schema/raptor.fbs.
const (
	// Magic starts every raptor weight file; it is also the flatbuffer file
	// identifier of the header.
	Magic = "RPTR"
	// FormatVersion is the weight file format version this package writes
	// and the only one it reads.
	FormatVersion = 1
	// DataAlign is the alignment of the data section and of every tensor in it.
	DataAlign = 64
	// DefaultChunkSize is the number of raw bytes per checksummed (and, for
	// compressed tensors, separately compressed) chunk.
	DefaultChunkSize = 256 << 10
	// MinChunkSize and MaxChunkSize bound a file's chunk size, a power of two.
	MinChunkSize = 64 << 10
	MaxChunkSize = 64 << 20
	// DefaultMaxDecompressed is the default cap on the total bytes the reader
	// allocates for decompressed tensors of one file (see MaxDecompressed).
	DefaultMaxDecompressed = 16 << 30

	preambleSize = 16
	// Limits that bound what a header can make the reader allocate.
	maxHeaderSize   = 256 << 20 // flatbuffer header bytes
	maxTensors      = 1 << 16
	maxRank         = 8
	maxNameLen      = 512
	maxVocab        = 1 << 22
	maxTokenLen     = 512
	maxVocabBytes   = 64 << 20
	maxChunkEntries = 1 << 22 // chunk lengths and checksums, all tensors together
)

// Codec is how a tensor's bytes are stored in the data section.
type Codec uint8

const (
	// CodecNone stores raw little-endian elements; a reader memory-maps them.
	CodecNone Codec = 0
	// CodecZstd compresses each chunk as one zstd frame.
	CodecZstd Codec = 1
	// CodecZstdShuffle byte-plane shuffles each chunk (all first bytes of
	// the elements, then all second bytes, ...) and then compresses it as
	// one zstd frame.
	CodecZstdShuffle Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecZstd:
		return "zstd"
	case CodecZstdShuffle:
		return "zstd+shuffle"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c <= CodecZstdShuffle }

func (d DType) valid() bool { return d <= BF16 }

// Valid reports whether d is a known dtype.
func (d DType) Valid() bool { return d.valid() }

// DecodeFloat32 converts the little-endian elements of dtype d in raw to
// float32, into dst (len(raw) / d.Size() elements).
func DecodeFloat32(dst []float32, raw []byte, d DType) { decodeF32(dst, raw, d) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// ExpectedTensors returns the canonical names and shapes of every tensor an
// encoder with configuration cfg needs, in canonical order: embeddings, the
// layers, the pooler when cfg.Pooler is set, then the head's (HeadTensors).
func ExpectedTensors(cfg Config) []ExpectedTensor {
	h, in := cfg.Hidden, cfg.Intermediate
	out := []ExpectedTensor{
		{TensorWordEmb, []int{cfg.VocabSize, h}},
		{TensorPosEmb, []int{cfg.MaxPositions, h}},
		{TensorTypeEmb, []int{cfg.TypeVocabSize, h}},
		{TensorEmbLNWeight, []int{h}},
		{TensorEmbLNBias, []int{h}},
	}
	for l := 0; l < cfg.Layers; l++ {
		for _, t := range []struct {
			suffix string
			shape  []int
		}{
			{LayerQueryWeight, []int{h, h}}, {LayerQueryBias, []int{h}},
			{LayerKeyWeight, []int{h, h}}, {LayerKeyBias, []int{h}},
			{LayerValueWeight, []int{h, h}}, {LayerValueBias, []int{h}},
			{LayerAttnOutWeight, []int{h, h}}, {LayerAttnOutBias, []int{h}},
			{LayerAttnLNWeight, []int{h}}, {LayerAttnLNBias, []int{h}},
			{LayerInterWeight, []int{in, h}}, {LayerInterBias, []int{in}},
			{LayerOutWeight, []int{h, in}}, {LayerOutBias, []int{h}},
			{LayerOutLNWeight, []int{h}}, {LayerOutLNBias, []int{h}},
		} {
			out = append(out, ExpectedTensor{LayerTensor(l, t.suffix), t.shape})
		}
	}
	if cfg.Pooler {
		out = append(out, ExpectedTensor{TensorPoolerWeight, []int{h, h}}, ExpectedTensor{TensorPoolerBias, []int{h}})
	}
	return append(out, HeadTensors(cfg)...)
}

// ExpectedTensor is a tensor name and shape an encoder needs.
type ExpectedTensor struct {
	Name  string
	Shape []int
}
