package loader

import (
	"hash/fnv"
	"math"
	"strings"
)

// NewRandomWriter returns a Writer that already holds every tensor cfg
// needs (ExpectedTensors), stored as cfg.DType and filled with
// deterministic pseudo-random values: linear and embedding weights
// ~ N(0, 0.02²) as HF initialises them, biases ~ N(0, 0.02²), LayerNorm
// weights ~ 1 + N(0, 0.1²) and LayerNorm biases ~ N(0, 0.1²). Each tensor's
// values depend only on seed and its name. Tests use it to build models in
// memory: NewRandomWriter(cfg, 1, WriterOptions{}) then Bytes and Read.
func NewRandomWriter(cfg Config, seed uint64, opts WriterOptions) (*Writer, error) {
	w := NewWriter(cfg, opts)
	for _, e := range ExpectedTensors(cfg) {
		h := fnv.New64a()
		h.Write([]byte(e.Name))
		rng := splitmix64(seed ^ h.Sum64())
		mean, std := 0.0, 0.02
		if strings.Contains(e.Name, "LayerNorm") {
			std = 0.1
			if strings.HasSuffix(e.Name, ".weight") {
				mean = 1
			}
		}
		data := make([]float32, elements(e.Shape))
		for i := range data {
			data[i] = float32(mean + std*rng.normal())
		}
		if err := w.Add(e.Name, cfg.DType, e.Shape, data); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// splitmix64 is a small deterministic generator (Steele et al., 2014).
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// uniform returns a float64 in (0, 1).
func (s *splitmix64) uniform() float64 { return (float64(s.next()>>11) + 0.5) / (1 << 53) }

// normal returns a standard normal value (Box-Muller).
func (s *splitmix64) normal() float64 {
	return math.Sqrt(-2*math.Log(s.uniform())) * math.Cos(2*math.Pi*s.uniform())
}
