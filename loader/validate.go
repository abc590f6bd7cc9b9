package loader

import (
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"
	"unicode/utf8"
)

// Limits of a valid Config; far above any real encoder, low enough that
// sizes derived from them cannot overflow.
const (
	maxHidden       = 1 << 16
	maxLayers       = 1 << 10
	maxIntermediate = 1 << 20
	maxPositions    = 1 << 24
	maxTypeVocab    = 1 << 16
	maxBlockSize    = 1 << 12
	maxRandomBlocks = 1 << 8
)

// Validate checks that c describes a model raptor can hold: known enums,
// positive sizes within generous limits, Hidden divisible by Heads, a
// position offset and pad id inside their tables, and a consistent tokenizer.
func (c *Config) Validate() error {
	var bad []string
	check := func(ok bool, format string, args ...any) {
		if !ok {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	check(c.Family <= FamilyBigBird, "unknown family %d", uint8(c.Family))
	check(c.Activation <= ActGELUTanh, "unknown activation %d", uint8(c.Activation))
	check(c.Attention <= AttentionBlockSparse, "unknown attention kind %d", uint8(c.Attention))
	check(c.DType.valid(), "unknown dtype %d", uint8(c.DType))
	check(c.VocabSize >= 1 && c.VocabSize <= maxVocab, "vocab size %d outside [1, %d]", c.VocabSize, maxVocab)
	check(c.Hidden >= 1 && c.Hidden <= maxHidden, "hidden size %d outside [1, %d]", c.Hidden, maxHidden)
	check(c.Layers >= 1 && c.Layers <= maxLayers, "layer count %d outside [1, %d]", c.Layers, maxLayers)
	check(c.Heads >= 1 && c.Heads <= c.Hidden && c.Hidden%c.Heads == 0, "head count %d does not divide hidden size %d", c.Heads, c.Hidden)
	check(c.Intermediate >= 1 && c.Intermediate <= maxIntermediate, "intermediate size %d outside [1, %d]", c.Intermediate, maxIntermediate)
	check(c.MaxPositions >= 1 && c.MaxPositions <= maxPositions, "max positions %d outside [1, %d]", c.MaxPositions, maxPositions)
	check(c.TypeVocabSize >= 1 && c.TypeVocabSize <= maxTypeVocab, "type vocab size %d outside [1, %d]", c.TypeVocabSize, maxTypeVocab)
	eps := float64(c.LayerNormEps)
	check(eps > 0 && eps < 1 && !math.IsNaN(eps), "layer norm epsilon %g outside (0, 1)", eps)
	check(c.PositionOffset >= 0 && c.PositionOffset < c.MaxPositions, "position offset %d outside [0, max positions %d)", c.PositionOffset, c.MaxPositions)
	check(c.PadTokenID >= -1 && c.PadTokenID < c.VocabSize, "pad token id %d outside [-1, vocab size %d)", c.PadTokenID, c.VocabSize)
	check(c.BlockSize >= 0 && c.BlockSize <= maxBlockSize, "block size %d outside [0, %d]", c.BlockSize, maxBlockSize)
	check(c.RandomBlocks >= 0 && c.RandomBlocks <= maxRandomBlocks, "random blocks %d outside [0, %d]", c.RandomBlocks, maxRandomBlocks)
	if c.Attention == AttentionBlockSparse {
		check(c.BlockSize >= 1, "block_sparse attention needs a block size >= 1")
	}
	if t := c.Tokenizer; t != nil {
		n := len(t.Vocab)
		check(n >= 1 && n <= c.VocabSize, "tokenizer vocabulary of %d tokens outside [1, vocab size %d]", n, c.VocabSize)
		total := 0
		for i, s := range t.Vocab {
			total += len(s)
			if len(s) > maxTokenLen || !utf8.ValidString(s) {
				bad = append(bad, fmt.Sprintf("tokenizer token %d is not valid UTF-8 of at most %d bytes", i, maxTokenLen))
				break
			}
		}
		check(total <= maxVocabBytes, "tokenizer vocabulary of %d bytes exceeds %d", total, maxVocabBytes)
		for _, s := range []struct {
			name string
			id   int32
		}{{"cls", t.CLS}, {"sep", t.SEP}, {"pad", t.PAD}, {"unk", t.UNK}, {"mask", t.MASK}} {
			check(s.id >= -1 && int(s.id) < n, "tokenizer %s id %d outside [-1, %d)", s.name, s.id, n)
		}
		check(t.MaxLength >= 0 && t.MaxLength <= maxPositions, "tokenizer max length %d outside [0, %d]", t.MaxLength, maxPositions)
	}
	bad = append(bad, c.validateHead()...)
	if len(bad) > 0 {
		return fmt.Errorf("invalid config: %s", strings.Join(bad, "; "))
	}
	return nil
}

// configFromRaw converts a stored config (and tokenizer) to a Config.
func configFromRaw(r rawConfig, t *rawTokenizer) Config {
	c := Config{
		Family: Family(r.family), VocabSize: int(r.vocab), Hidden: int(r.hidden), Layers: int(r.layers),
		Heads: int(r.heads), Intermediate: int(r.inter), MaxPositions: int(r.maxPos),
		TypeVocabSize: int(r.typeVocab), LayerNormEps: r.eps, Activation: Activation(r.activation),
		PositionOffset: int(r.posOffset), PadTokenID: int(r.pad), Attention: AttentionKind(r.attention),
		BlockSize: int(r.blockSize), RandomBlocks: int(r.randomBlocks), Pooler: r.pooler, DType: DType(r.dtype),
	}
	if t != nil {
		c.Tokenizer = &TokenizerSpec{
			Vocab: t.vocab, Lowercase: t.lowercase, StripAccents: t.stripAccents,
			CLS: t.cls, SEP: t.sep, PAD: t.pad, UNK: t.unk, MASK: t.mask, MaxLength: int(t.maxLength),
		}
	}
	return c
}

// rawFromConfig is the inverse of configFromRaw. c must be valid.
func rawFromConfig(c Config) (rawConfig, *rawTokenizer) {
	r := rawConfig{
		family: uint8(c.Family), activation: uint8(c.Activation), attention: uint8(c.Attention), dtype: uint8(c.DType),
		vocab: uint32(c.VocabSize), hidden: uint32(c.Hidden), layers: uint32(c.Layers), heads: uint32(c.Heads),
		inter: uint32(c.Intermediate), maxPos: uint32(c.MaxPositions), typeVocab: uint32(c.TypeVocabSize),
		eps: c.LayerNormEps, posOffset: uint32(c.PositionOffset), pad: int32(c.PadTokenID),
		blockSize: uint32(c.BlockSize), randomBlocks: uint32(c.RandomBlocks), pooler: c.Pooler,
	}
	var rt *rawTokenizer
	if t := c.Tokenizer; t != nil {
		rt = &rawTokenizer{
			vocab: t.Vocab, lowercase: t.Lowercase, stripAccents: t.StripAccents,
			cls: t.CLS, sep: t.SEP, pad: t.PAD, unk: t.UNK, mask: t.MASK, maxLength: uint32(t.MaxLength),
		}
	}
	return r, rt
}

// shapeBytes returns the byte size of a tensor of the given shape and dtype,
// or an error if a dimension is zero or the size overflows 2^62.
func shapeBytes(shape []uint64, d DType) (uint64, error) {
	if len(shape) == 0 || len(shape) > maxRank {
		return 0, fmt.Errorf("rank %d outside [1, %d]", len(shape), maxRank)
	}
	n := uint64(d.Size())
	for _, s := range shape {
		if s == 0 {
			return 0, fmt.Errorf("shape %v has a zero dimension", shape)
		}
		hi, lo := bits.Mul64(n, s)
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("shape %v of %s overflows", shape, d)
		}
		n = lo
	}
	return n, nil
}

// checkLayout checks that stored byte ranges lie in a data section of size
// dataSize, are DataAlign-aligned and do not overlap. names[i] names range i.
func checkLayout(names []string, offsets, lengths []uint64, dataSize uint64) error {
	idx := make([]int, len(names))
	for i := range idx {
		if offsets[i]%DataAlign != 0 {
			return fmt.Errorf("tensor %q: offset %d is not a multiple of %d", names[i], offsets[i], DataAlign)
		}
		if offsets[i] > dataSize || lengths[i] > dataSize-offsets[i] {
			return fmt.Errorf("tensor %q: bytes [%d, %d+%d) lie outside the data section of %d bytes", names[i], offsets[i], offsets[i], lengths[i], dataSize)
		}
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return offsets[idx[a]] < offsets[idx[b]] })
	for k := 1; k < len(idx); k++ {
		p, q := idx[k-1], idx[k]
		if offsets[p]+lengths[p] > offsets[q] {
			return fmt.Errorf("tensors %q [%d, %d) and %q [%d, %d) overlap", names[p], offsets[p], offsets[p]+lengths[p], names[q], offsets[q], offsets[q]+lengths[q])
		}
	}
	return nil
}

// checkExpected checks that every tensor cfg needs is present with the
// right shape. shapes maps names to shapes.
func checkExpected(cfg Config, shapes map[string][]int) error {
	var missing, wrong []string
	for _, e := range ExpectedTensors(cfg) {
		s, ok := shapes[e.Name]
		if !ok {
			missing = append(missing, e.Name)
			continue
		}
		if !equalInts(s, e.Shape) {
			wrong = append(wrong, fmt.Sprintf("%s has shape %v, the config needs %v", e.Name, s, e.Shape))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %d tensor(s) a %s model with this config needs: %s", len(missing), cfg.Family, listNames(missing, 8))
	}
	if len(wrong) > 0 {
		return fmt.Errorf("%d tensor(s) do not match the config: %s", len(wrong), listNames(wrong, 4))
	}
	return nil
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// listNames joins up to max names and says how many more there are.
func listNames(names []string, max int) string {
	if len(names) <= max {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:max], ", "), len(names)-max)
}
