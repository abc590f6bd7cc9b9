// Package testmodel holds helpers for raptor's engine tests and benchmarks:
// in-memory weights, random models, a minimal safetensors reader and a
// float64 reference forward pass written independently of the backends.
package testmodel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"

	"github.com/raptor-infer/raptor/internal/plan"
	"github.com/raptor-infer/raptor/loader"
)

// Tensor is a float32 tensor.
type Tensor struct {
	Data  []float32
	Shape []int
}

// Weights is an in-memory engine.Weights.
type Weights struct {
	Cfg     loader.Config
	Tensors map[string]Tensor
}

// Config implements engine.Weights.
func (w *Weights) Config() loader.Config { return w.Cfg }

// Float32 implements engine.Weights.
func (w *Weights) Float32(name string) ([]float32, []int, error) {
	t, ok := w.Tensors[name]
	if !ok {
		return nil, nil, fmt.Errorf("no tensor %q", name)
	}
	return t.Data, t.Shape, nil
}

// T returns a tensor's data (nil if absent).
func (w *Weights) T(name string) []float32 { return w.Tensors[name].Data }

// Shapes returns every tensor name the config needs with its shape.
func Shapes(c loader.Config) map[string][]int {
	h, in := c.Hidden, c.Intermediate
	s := map[string][]int{
		loader.TensorWordEmb: {c.VocabSize, h}, loader.TensorPosEmb: {c.MaxPositions, h},
		loader.TensorTypeEmb: {c.TypeVocabSize, h}, loader.TensorEmbLNWeight: {h}, loader.TensorEmbLNBias: {h},
	}
	for l := 0; l < c.Layers; l++ {
		for suf, shape := range map[string][]int{
			loader.LayerQueryWeight: {h, h}, loader.LayerQueryBias: {h}, loader.LayerKeyWeight: {h, h},
			loader.LayerKeyBias: {h}, loader.LayerValueWeight: {h, h}, loader.LayerValueBias: {h},
			loader.LayerAttnOutWeight: {h, h}, loader.LayerAttnOutBias: {h}, loader.LayerAttnLNWeight: {h},
			loader.LayerAttnLNBias: {h}, loader.LayerInterWeight: {in, h}, loader.LayerInterBias: {in},
			loader.LayerOutWeight: {h, in}, loader.LayerOutBias: {h}, loader.LayerOutLNWeight: {h},
			loader.LayerOutLNBias: {h},
		} {
			s[loader.LayerTensor(l, suf)] = shape
		}
	}
	if c.Pooler {
		s[loader.TensorPoolerWeight] = []int{h, h}
		s[loader.TensorPoolerBias] = []int{h}
	}
	return s
}

// Random returns a model with random weights: normal(0, std) for matrices
// and biases, 1 + normal(0, 0.1) for LayerNorm gains, normal(0, 1) for
// embeddings.
func Random(c loader.Config, seed uint64, std float64) *Weights {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	w := &Weights{Cfg: c, Tensors: map[string]Tensor{}}
	names := make([]string, 0)
	shapes := Shapes(c)
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		shape := shapes[n]
		size := 1
		for _, d := range shape {
			size *= d
		}
		data := make([]float32, size)
		sd, mean := std, 0.0
		switch {
		case isLNWeight(n):
			sd, mean = 0.1, 1
		case len(shape) == 2 && (n == loader.TensorWordEmb || n == loader.TensorPosEmb || n == loader.TensorTypeEmb):
			sd = 1
		}
		for i := range data {
			data[i] = float32(mean + sd*r.NormFloat64())
		}
		w.Tensors[n] = Tensor{data, shape}
	}
	return w
}

func isLNWeight(n string) bool {
	return len(n) > 16 && n[len(n)-16:] == "LayerNorm.weight"
}

// ReadSafetensors reads a safetensors file's F32, I32 and I64 tensors (I32
// and I64 converted to float32 only where exact; ints are also returned) and
// its metadata.
func ReadSafetensors(path string) (f32 map[string]Tensor, ints map[string][]int64, meta map[string]string, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(raw) < 8 {
		return nil, nil, nil, fmt.Errorf("%s: too short", path)
	}
	hl := binary.LittleEndian.Uint64(raw)
	if hl > uint64(len(raw)-8) {
		return nil, nil, nil, fmt.Errorf("%s: header length %d", path, hl)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(raw[8:8+hl], &header); err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	data := raw[8+hl:]
	f32, ints, meta = map[string]Tensor{}, map[string][]int64{}, map[string]string{}
	for name, v := range header {
		if name == "__metadata__" {
			if err := json.Unmarshal(v, &meta); err != nil {
				return nil, nil, nil, err
			}
			continue
		}
		var t struct {
			Dtype   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets [2]int `json:"data_offsets"`
		}
		if err := json.Unmarshal(v, &t); err != nil {
			return nil, nil, nil, err
		}
		if t.Offsets[0] < 0 || t.Offsets[1] > len(data) || t.Offsets[0] > t.Offsets[1] {
			return nil, nil, nil, fmt.Errorf("%s: tensor %s offsets %v", path, name, t.Offsets)
		}
		b := data[t.Offsets[0]:t.Offsets[1]]
		switch t.Dtype {
		case "F32":
			out := make([]float32, len(b)/4)
			for i := range out {
				out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
			f32[name] = Tensor{out, t.Shape}
		case "I32":
			out := make([]int64, len(b)/4)
			for i := range out {
				out[i] = int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
			}
			ints[name] = out
		case "I64":
			out := make([]int64, len(b)/8)
			for i := range out {
				out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
			}
			ints[name] = out
		default:
			return nil, nil, nil, fmt.Errorf("%s: tensor %s has dtype %s", path, name, t.Dtype)
		}
	}
	return f32, ints, meta, nil
}

// ConfigJSON is the model config the parity scripts store in a safetensors
// file's metadata under "config".
type ConfigJSON struct {
	Family         string  `json:"family"`
	VocabSize      int     `json:"vocab_size"`
	Hidden         int     `json:"hidden"`
	Layers         int     `json:"layers"`
	Heads          int     `json:"heads"`
	Intermediate   int     `json:"intermediate"`
	MaxPositions   int     `json:"max_positions"`
	TypeVocabSize  int     `json:"type_vocab_size"`
	LayerNormEps   float64 `json:"layer_norm_eps"`
	Activation     string  `json:"activation"`
	PositionOffset int     `json:"position_offset"`
	PadTokenID     int     `json:"pad_token_id"`
	Attention      string  `json:"attention"`
	BlockSize      int     `json:"block_size"`
	RandomBlocks   int     `json:"random_blocks"`
	Pooler         bool    `json:"pooler"`
}

// parseName returns the value among vals whose String() is s: the names are
// loader's own, so fixtures and the loader cannot drift apart.
func parseName[T fmt.Stringer](what, s string, vals ...T) (T, error) {
	for _, v := range vals {
		if v.String() == s {
			return v, nil
		}
	}
	var zero T
	return zero, fmt.Errorf("%s %q", what, s)
}

// ParseConfig converts the JSON config to a loader.Config.
func ParseConfig(s string) (loader.Config, error) {
	var j ConfigJSON
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return loader.Config{}, err
	}
	c := loader.Config{VocabSize: j.VocabSize, Hidden: j.Hidden, Layers: j.Layers, Heads: j.Heads,
		Intermediate: j.Intermediate, MaxPositions: j.MaxPositions, TypeVocabSize: j.TypeVocabSize,
		LayerNormEps: float32(j.LayerNormEps), PositionOffset: j.PositionOffset, PadTokenID: j.PadTokenID,
		BlockSize: j.BlockSize, RandomBlocks: j.RandomBlocks, Pooler: j.Pooler}
	var err error
	if c.Family, err = parseName("family", j.Family, loader.FamilyBERT, loader.FamilyRoBERTa, loader.FamilyBigBird); err != nil {
		return c, err
	}
	if c.Activation, err = parseName("activation", j.Activation, loader.ActGELU, loader.ActGELUTanh); err != nil {
		return c, err
	}
	if c.Attention, err = parseName("attention", j.Attention, loader.AttentionDense, loader.AttentionBlockSparse); err != nil {
		return c, err
	}
	return c, nil
}

// FromSafetensors builds Weights from a file whose metadata has "config"
// and whose tensors carry canonical names (extra tensors are kept).
func FromSafetensors(path string) (*Weights, map[string][]int64, map[string]string, error) {
	f32, ints, meta, err := ReadSafetensors(path)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := ParseConfig(meta["config"])
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: config: %w", path, err)
	}
	return &Weights{Cfg: c, Tensors: f32}, ints, meta, nil
}

// Reference computes the last hidden states in float64, directly from the
// definitions: embeddings, then per layer attention over the plan's key set
// (built from internal/plan, masks per query row), output projection,
// residual + LayerNorm, GELU FFN, residual + LayerNorm. Slow: tiny models.
func Reference(w *Weights, tokens, cu, types []int32, seeds []uint64, engineSeed uint64) [][]float64 {
	c := w.Cfg
	H, nh, I := c.Hidden, c.Heads, c.Intermediate
	d := H / nh
	var out [][]float64
	for s := 0; s+1 < len(cu); s++ {
		lo, hi := int(cu[s]), int(cu[s+1])
		n := hi - lo
		x := make([][]float64, n)
		for t := 0; t < n; t++ {
			tok, typ := int(tokens[lo+t]), 0
			if types != nil {
				typ = int(types[lo+t])
			}
			row := make([]float64, H)
			for j := range row {
				row[j] = float64(w.T(loader.TensorWordEmb)[tok*H+j]) + float64(w.T(loader.TensorTypeEmb)[typ*H+j]) +
					float64(w.T(loader.TensorPosEmb)[(c.PositionOffset+t)*H+j])
			}
			x[t] = ln(row, w.T(loader.TensorEmbLNWeight), w.T(loader.TensorEmbLNBias), float64(c.LayerNormEps))
		}
		var seed uint64
		if seeds != nil {
			seed = seeds[s]
		}
		bs := c.BlockSize
		sparse := c.Attention == loader.AttentionBlockSparse
		sp := plan.New(n, bs, c.RandomBlocks, sparse, engineSeed, seed)
		for l := 0; l < c.Layers; l++ {
			L := func(suf string) []float32 { return w.T(loader.LayerTensor(l, suf)) }
			q := linear(x, L(loader.LayerQueryWeight), L(loader.LayerQueryBias))
			k := linear(x, L(loader.LayerKeyWeight), L(loader.LayerKeyBias))
			v := linear(x, L(loader.LayerValueWeight), L(loader.LayerValueBias))
			ctx := make([][]float64, n)
			for t := range ctx {
				ctx[t] = make([]float64, H)
			}
			for h := 0; h < nh; h++ {
				for t := 0; t < n; t++ {
					allowed := make([]bool, n)
					if sp.Sparse {
						for _, b := range sp.KeyBlocks(nil, l, h, t/sp.BlockSize) {
							for kk := int(b) * sp.BlockSize; kk < min(n, (int(b)+1)*sp.BlockSize); kk++ {
								allowed[kk] = true
							}
						}
					} else {
						for kk := range allowed {
							allowed[kk] = true
						}
					}
					sc := make([]float64, n)
					mx := math.Inf(-1)
					for kk := 0; kk < n; kk++ {
						if !allowed[kk] {
							continue
						}
						var dot float64
						for j := h * d; j < (h+1)*d; j++ {
							dot += q[t][j] * k[kk][j]
						}
						sc[kk] = dot / math.Sqrt(float64(d))
						mx = math.Max(mx, sc[kk])
					}
					var sum float64
					for kk := 0; kk < n; kk++ {
						if allowed[kk] {
							sc[kk] = math.Exp(sc[kk] - mx)
							sum += sc[kk]
						}
					}
					for kk := 0; kk < n; kk++ {
						if allowed[kk] {
							for j := h * d; j < (h+1)*d; j++ {
								ctx[t][j] += sc[kk] / sum * v[kk][j]
							}
						}
					}
				}
			}
			a := linear(ctx, L(loader.LayerAttnOutWeight), L(loader.LayerAttnOutBias))
			for t := range a {
				for j := range a[t] {
					a[t][j] += x[t][j]
				}
				a[t] = ln(a[t], L(loader.LayerAttnLNWeight), L(loader.LayerAttnLNBias), float64(c.LayerNormEps))
			}
			inter := linear(a, L(loader.LayerInterWeight), L(loader.LayerInterBias))
			for t := range inter {
				for j, u := range inter[t] {
					if c.Activation == loader.ActGELUTanh {
						inter[t][j] = 0.5 * u * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(u+0.044715*u*u*u)))
					} else {
						inter[t][j] = 0.5 * u * (1 + math.Erf(u/math.Sqrt2))
					}
				}
			}
			o := linear(inter, L(loader.LayerOutWeight), L(loader.LayerOutBias))
			for t := range o {
				for j := range o[t] {
					o[t][j] += a[t][j]
				}
				o[t] = ln(o[t], L(loader.LayerOutLNWeight), L(loader.LayerOutLNBias), float64(c.LayerNormEps))
			}
			_ = I
			x = o
		}
		out = append(out, x...)
	}
	return out
}

// linear is x W^T + b with W [out, in].
func linear(x [][]float64, w, b []float32) [][]float64 {
	outDim := len(b)
	inDim := len(w) / outDim
	y := make([][]float64, len(x))
	for t, row := range x {
		y[t] = make([]float64, outDim)
		for o := 0; o < outDim; o++ {
			s := float64(b[o])
			wr := w[o*inDim : (o+1)*inDim]
			for i, v := range row {
				s += v * float64(wr[i])
			}
			y[t][o] = s
		}
	}
	return y
}

func ln(x []float64, w, b []float32, eps float64) []float64 {
	var mean, v float64
	for _, u := range x {
		mean += u
	}
	mean /= float64(len(x))
	for _, u := range x {
		v += (u - mean) * (u - mean)
	}
	v /= float64(len(x))
	out := make([]float64, len(x))
	for j, u := range x {
		out[j] = (u-mean)/math.Sqrt(v+eps)*float64(w[j]) + float64(b[j])
	}
	return out
}
