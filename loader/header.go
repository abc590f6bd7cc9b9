package loader

import (
	"encoding/binary"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/raptor-infer/raptor/loader/internal/fb"
)

// header is the decoded flatbuffer header, with values exactly as stored:
// nothing in it has been validated beyond the flatbuffer structure.
type header struct {
	version    uint32
	cfg        rawConfig
	tok        *rawTokenizer
	chunkSize  uint32
	dataOffset uint64
	dataSize   uint64
	tensors    []rawTensor
	producer   string
	head       *HeadSpec // appended: the optional task head
}

type rawConfig struct {
	family, activation, attention, dtype                   uint8
	vocab, hidden, layers, heads, inter, maxPos, typeVocab uint32
	eps                                                    float32
	posOffset                                              uint32
	pad                                                    int32
	blockSize, randomBlocks                                uint32
	pooler                                                 bool
}

type rawTokenizer struct {
	vocab                    []string
	lowercase, stripAccents  bool
	cls, sep, pad, unk, mask int32
	maxLength                uint32
}

type rawTensor struct {
	name      string
	dtype     uint8
	shape     []uint64
	offset    uint64
	length    uint64
	codec     uint8
	rawSize   uint64
	chunkLens []uint32
	crcs      []uint32
}

// encodeHeader builds the flatbuffer for h.
func encodeHeader(h *header) []byte {
	b := flatbuffers.NewBuilder(1024 + 128*len(h.tensors))

	var tokOff flatbuffers.UOffsetT
	if t := h.tok; t != nil {
		strs := make([]flatbuffers.UOffsetT, len(t.vocab))
		for i, s := range t.vocab {
			strs[i] = b.CreateString(s)
		}
		fb.TokenizerStartVocabVector(b, len(strs))
		for i := len(strs) - 1; i >= 0; i-- {
			b.PrependUOffsetT(strs[i])
		}
		vocab := b.EndVector(len(strs))
		fb.TokenizerStart(b)
		fb.TokenizerAddVocab(b, vocab)
		fb.TokenizerAddLowercase(b, t.lowercase)
		fb.TokenizerAddStripAccents(b, t.stripAccents)
		fb.TokenizerAddClsId(b, t.cls)
		fb.TokenizerAddSepId(b, t.sep)
		fb.TokenizerAddPadId(b, t.pad)
		fb.TokenizerAddUnkId(b, t.unk)
		fb.TokenizerAddMaskId(b, t.mask)
		fb.TokenizerAddMaxLength(b, t.maxLength)
		tokOff = fb.TokenizerEnd(b)
	}

	c := h.cfg
	fb.ConfigStart(b)
	fb.ConfigAddFamily(b, fb.Family(c.family))
	fb.ConfigAddVocabSize(b, c.vocab)
	fb.ConfigAddHiddenSize(b, c.hidden)
	fb.ConfigAddNumLayers(b, c.layers)
	fb.ConfigAddNumHeads(b, c.heads)
	fb.ConfigAddIntermediateSize(b, c.inter)
	fb.ConfigAddMaxPositions(b, c.maxPos)
	fb.ConfigAddTypeVocabSize(b, c.typeVocab)
	fb.ConfigAddLayerNormEps(b, c.eps)
	fb.ConfigAddActivation(b, fb.Activation(c.activation))
	fb.ConfigAddPositionOffset(b, c.posOffset)
	fb.ConfigAddPadTokenId(b, c.pad)
	fb.ConfigAddAttention(b, fb.Attention(c.attention))
	fb.ConfigAddBlockSize(b, c.blockSize)
	fb.ConfigAddRandomBlocks(b, c.randomBlocks)
	fb.ConfigAddPooler(b, c.pooler)
	fb.ConfigAddDtype(b, fb.DType(c.dtype))
	cfgOff := fb.ConfigEnd(b)

	tensors := make([]flatbuffers.UOffsetT, len(h.tensors))
	for i := range h.tensors {
		t := &h.tensors[i]
		name := b.CreateString(t.name)
		fb.TensorStartShapeVector(b, len(t.shape))
		for j := len(t.shape) - 1; j >= 0; j-- {
			b.PrependUint64(t.shape[j])
		}
		shape := b.EndVector(len(t.shape))
		var lens flatbuffers.UOffsetT
		if t.chunkLens != nil {
			fb.TensorStartChunkLengthsVector(b, len(t.chunkLens))
			for j := len(t.chunkLens) - 1; j >= 0; j-- {
				b.PrependUint32(t.chunkLens[j])
			}
			lens = b.EndVector(len(t.chunkLens))
		}
		fb.TensorStartChunkCrc32cVector(b, len(t.crcs))
		for j := len(t.crcs) - 1; j >= 0; j-- {
			b.PrependUint32(t.crcs[j])
		}
		crcs := b.EndVector(len(t.crcs))
		fb.TensorStart(b)
		fb.TensorAddName(b, name)
		fb.TensorAddDtype(b, fb.DType(t.dtype))
		fb.TensorAddShape(b, shape)
		fb.TensorAddOffset(b, t.offset)
		fb.TensorAddLength(b, t.length)
		fb.TensorAddCodec(b, fb.Codec(t.codec))
		fb.TensorAddRawSize(b, t.rawSize)
		if t.chunkLens != nil {
			fb.TensorAddChunkLengths(b, lens)
		}
		fb.TensorAddChunkCrc32c(b, crcs)
		tensors[i] = fb.TensorEnd(b)
	}
	fb.ModelStartTensorsVector(b, len(tensors))
	for i := len(tensors) - 1; i >= 0; i-- {
		b.PrependUOffsetT(tensors[i])
	}
	tensorsOff := b.EndVector(len(tensors))
	var producer flatbuffers.UOffsetT
	if h.producer != "" {
		producer = b.CreateString(h.producer)
	}

	headOff := encodeHead(b, h.head)

	fb.ModelStart(b)
	fb.ModelAddFormatVersion(b, h.version)
	fb.ModelAddConfig(b, cfgOff)
	if h.tok != nil {
		fb.ModelAddTokenizer(b, tokOff)
	}
	fb.ModelAddChunkSize(b, h.chunkSize)
	fb.ModelAddDataOffset(b, h.dataOffset)
	fb.ModelAddDataSize(b, h.dataSize)
	fb.ModelAddTensors(b, tensorsOff)
	if h.producer != "" {
		fb.ModelAddProducer(b, producer)
	}
	if headOff != 0 {
		fb.ModelAddHead(b, headOff)
	}
	b.FinishWithFileIdentifier(fb.ModelEnd(b), []byte(Magic))
	return b.FinishedBytes()
}

// assembleFile returns the preamble and header bytes of a file, padded to
// h.dataOffset: the file is these bytes followed by the data section. The
// caller sets h.dataOffset with headerLayout first.
func assembleFile(h *header) []byte {
	hdr := encodeHeader(h)
	out := make([]byte, h.dataOffset)
	copy(out, Magic)
	binary.LittleEndian.PutUint32(out[4:], uint32(len(hdr)))
	binary.LittleEndian.PutUint32(out[8:], crc32c(hdr))
	copy(out[preambleSize:], hdr)
	return out
}

// headerLayout sets h.dataOffset: the first multiple of DataAlign after the
// preamble and header. Scalars are fixed-width once non-default, so the
// header size does not depend on the value chosen; a placeholder is encoded
// first to measure it.
func headerLayout(h *header) error {
	h.dataOffset = 1 << 40
	n := uint64(len(encodeHeader(h)))
	if n > maxHeaderSize {
		return fmt.Errorf("header of %d bytes exceeds the %d-byte limit", n, maxHeaderSize)
	}
	h.dataOffset = alignUp(preambleSize+n, DataAlign)
	if m := uint64(len(encodeHeader(h))); m != n {
		return fmt.Errorf("internal error: header size changed from %d to %d", n, m)
	}
	return nil
}

// decodeHeader reads a verified header flatbuffer (see verifyHeader). It
// enforces the count and size limits that bound the memory a header can make
// the reader allocate (a flatbuffer may point many offsets at one big vector
// or string); everything else is checked later, in validate.
func decodeHeader(buf []byte) (*header, error) {
	m := fb.GetRootAsModel(buf, 0)
	h := &header{
		version:    m.FormatVersion(),
		chunkSize:  m.ChunkSize(),
		dataOffset: m.DataOffset(),
		dataSize:   m.DataSize(),
	}
	if p := m.Producer(); len(p) > maxNameLen {
		return nil, fmt.Errorf("producer string of %d bytes exceeds %d", len(p), maxNameLen)
	} else {
		h.producer = string(p)
	}
	c := m.Config(nil) // required: verified present
	h.cfg = rawConfig{
		family: uint8(c.Family()), activation: uint8(c.Activation()), attention: uint8(c.Attention()),
		dtype: uint8(c.Dtype()), vocab: c.VocabSize(), hidden: c.HiddenSize(), layers: c.NumLayers(),
		heads: c.NumHeads(), inter: c.IntermediateSize(), maxPos: c.MaxPositions(),
		typeVocab: c.TypeVocabSize(), eps: c.LayerNormEps(), posOffset: c.PositionOffset(),
		pad: c.PadTokenId(), blockSize: c.BlockSize(), randomBlocks: c.RandomBlocks(), pooler: c.Pooler(),
	}
	if t := m.Tokenizer(nil); t != nil {
		n := t.VocabLength()
		if n > maxVocab {
			return nil, fmt.Errorf("tokenizer vocabulary of %d tokens exceeds %d", n, maxVocab)
		}
		total := 0
		for i := 0; i < n; i++ {
			l := len(t.Vocab(i))
			if l > maxTokenLen {
				return nil, fmt.Errorf("tokenizer token %d is %d bytes long, more than %d", i, l, maxTokenLen)
			}
			total += l
		}
		if total > maxVocabBytes {
			return nil, fmt.Errorf("tokenizer vocabulary of %d bytes exceeds %d", total, maxVocabBytes)
		}
		rt := &rawTokenizer{
			vocab:     make([]string, n),
			lowercase: t.Lowercase(), stripAccents: t.StripAccents(),
			cls: t.ClsId(), sep: t.SepId(), pad: t.PadId(), unk: t.UnkId(), mask: t.MaskId(),
			maxLength: t.MaxLength(),
		}
		for i := range rt.vocab {
			rt.vocab[i] = string(t.Vocab(i))
		}
		h.tok = rt
	}
	hd, err := decodeHead(m)
	if err != nil {
		return nil, err
	}
	h.head = hd
	n := m.TensorsLength()
	if n > maxTensors {
		return nil, fmt.Errorf("%d tensors exceed the limit of %d", n, maxTensors)
	}
	h.tensors = make([]rawTensor, n)
	var ft fb.Tensor
	chunks := 0
	for i := 0; i < n; i++ {
		m.Tensors(&ft, i)
		t := &h.tensors[i]
		name := ft.Name()
		if len(name) > maxNameLen {
			return nil, fmt.Errorf("tensor %d: name of %d bytes exceeds %d", i, len(name), maxNameLen)
		}
		t.name = string(name)
		r := ft.ShapeLength()
		if r > maxRank {
			return nil, fmt.Errorf("tensor %q: rank %d exceeds %d", t.name, r, maxRank)
		}
		t.dtype = uint8(ft.Dtype())
		t.shape = make([]uint64, r)
		for j := range t.shape {
			t.shape[j] = ft.Shape(j)
		}
		t.offset, t.length, t.codec, t.rawSize = ft.Offset(), ft.Length(), uint8(ft.Codec()), ft.RawSize()
		nl, nc := ft.ChunkLengthsLength(), ft.ChunkCrc32cLength()
		chunks += nl + nc
		if chunks > maxChunkEntries {
			return nil, fmt.Errorf("tensor %q: the chunk tables hold more than %d entries in all", t.name, maxChunkEntries)
		}
		if nl > 0 {
			t.chunkLens = make([]uint32, nl)
			for j := range t.chunkLens {
				t.chunkLens[j] = ft.ChunkLengths(j)
			}
		}
		t.crcs = make([]uint32, nc)
		for j := range t.crcs {
			t.crcs[j] = ft.ChunkCrc32c(j)
		}
	}
	return h, nil
}
