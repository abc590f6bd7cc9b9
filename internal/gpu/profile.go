package gpu

import (
	"time"

	"github.com/raptor-infer/raptor/internal/cuda"
	"github.com/raptor-infer/raptor/internal/model"
)

// Stages of the per-stage profile (issue 7): what each event closes.
const (
	stEmbed = iota // embedding gather + LayerNorm
	stQKV          // fused QKV GEMM + bias
	stAttn         // attention (plan, schedule, kernel)
	stAO           // output projection + bias
	stLN1          // residual + LayerNorm
	stFFN1         // FFN1 GEMM (+ bias + GELU epilogue on the tanh models)
	stGELU         // bias + erf GELU kernel
	stFFN2         // FFN2 GEMM + bias
	stLN2          // residual + LayerNorm
	stOut          // fp32 conversion / pooling
	nStages
)

// StageNames are the stages of StageProfile.Ms, in order.
var StageNames = [nStages]string{"embed", "qkv_gemm", "attention", "ao_gemm", "add_ln1", "ffn1_gemm", "bias_gelu", "ffn2_gemm", "add_ln2", "output"}

// stageProf records a timing event after each op of a batch; a nil
// *stageProf records nothing.
type stageProf struct {
	ev    []cuda.Event
	stage []int
	err   error
}

func (p *stageProf) mark(c *cuda.Ctx, stage int) {
	if p == nil || p.err != nil {
		return
	}
	e, err := c.NewEvent(true)
	if err == nil {
		err = c.RecordEvent(e, c.Compute())
	}
	if err != nil {
		p.err = err
		return
	}
	p.ev = append(p.ev, e)
	p.stage = append(p.stage, stage)
}

// StageProfile is one batch's device time per stage, summed over layers.
type StageProfile struct {
	Ms        [nStages]float64 // device ms per stage (StageNames)
	TotalMs   float64          // first to last kernel, with the stage events in between
	EnqueueMs float64          // host wall time of the enqueue (allocation, staging, every launch)
}

// Profile runs b once with a timing event after every op and returns the
// device time per stage. The events themselves add a little device time.
func (m *Model) Profile(b *model.Batch, out *Outputs) (StageProfile, error) {
	var sp StageProfile
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		e0, e1, release, err := timingEvents(c)
		if err != nil {
			return err
		}
		defer release()
		pr := &stageProf{}
		defer func() {
			for _, e := range pr.ev {
				c.DestroyEvent(e)
			}
		}()
		t0 := time.Now()
		p, err := m.enqueueK(c, b, out, e0, e1, pr, nil)
		sp.EnqueueMs = float64(time.Since(t0).Microseconds()) / 1e3
		if err != nil {
			return err
		}
		if err := m.finish(c, p, out); err != nil {
			return err
		}
		if pr.err != nil {
			return pr.err
		}
		prev := e0
		for i, e := range pr.ev {
			ms, err := c.Elapsed(prev, e)
			if err != nil {
				return err
			}
			sp.Ms[pr.stage[i]] += float64(ms)
			prev = e
		}
		ms, err := c.Elapsed(e0, e1)
		sp.TotalMs = float64(ms)
		return err
	})
	return sp, err
}

// GraphProbe compares one batch's kernels launched one by one with the
// same kernels replayed as a CUDA graph (issue 7: graphs where they
// measurably cut launch overhead).
type GraphProbe struct {
	Kernels int // launches in the graph (nodes)
	// device ms per forward, median of reps, each forward timed alone
	// (events around it, synchronised after): eager includes any time the
	// GPU waits for the host's launches.
	EagerMs, GraphMs float64
	// device ms per forward over reps back-to-back forwards (one event
	// pair around all of them): the pipelined case.
	EagerStreamMs, GraphStreamMs float64
	// host ms to enqueue one forward (median): the launches vs one
	// cuGraphLaunch.
	EagerHostMs, GraphHostMs float64
	CaptureMs                float64 // capture + instantiate, once
	Identical                bool    // the graph's fp32 hidden states are bitwise the eager ones
}

// ProbeGraph runs b once (upload), then times its kernels eager and as a
// captured graph on the same buffers. Device hidden outputs only.
func (m *Model) ProbeGraph(b *model.Batch, reps int) (GraphProbe, error) {
	var g GraphProbe
	T, H := len(b.Tokens), m.cfg.Hidden
	err := m.b.dev.Do(func(c *cuda.Ctx) error {
		hid, err := c.Alloc(4 * int64(T) * int64(H))
		if err != nil {
			return err
		}
		defer c.Free(hid)
		out := &Outputs{HiddenDev: uintptr(hid.Ptr)}
		var k *kern
		p, err := m.enqueueK(c, b, out, 0, 0, nil, &k)
		if err != nil {
			return err
		}
		defer m.release(c, p)
		if err := c.EventSync(p.evOut); err != nil {
			return err
		}
		e0, e1, release, err := timingEvents(c)
		if err != nil {
			return err
		}
		defer release()
		run := func(launch func() error) (dev, host []float64, err error) {
			for r := 0; r < reps; r++ {
				if err := c.RecordEvent(e0, c.Compute()); err != nil {
					return nil, nil, err
				}
				t0 := time.Now()
				if err := launch(); err != nil {
					return nil, nil, err
				}
				host = append(host, float64(time.Since(t0).Microseconds())/1e3)
				if err := c.RecordEvent(e1, c.Compute()); err != nil {
					return nil, nil, err
				}
				if err := c.EventSync(e1); err != nil {
					return nil, nil, err
				}
				ms, err := c.Elapsed(e0, e1)
				if err != nil {
					return nil, nil, err
				}
				dev = append(dev, float64(ms))
			}
			return dev, host, nil
		}
		stream := func(launch func() error) (float64, error) {
			if err := c.RecordEvent(e0, c.Compute()); err != nil {
				return 0, err
			}
			for r := 0; r < reps; r++ {
				if err := launch(); err != nil {
					return 0, err
				}
			}
			if err := c.RecordEvent(e1, c.Compute()); err != nil {
				return 0, err
			}
			if err := c.EventSync(e1); err != nil {
				return 0, err
			}
			ms, err := c.Elapsed(e0, e1)
			return float64(ms) / float64(reps), err
		}
		eager := func() error { return m.kernels(c, k, nil) }
		d, h, err := run(eager)
		if err != nil {
			return err
		}
		g.EagerMs, g.EagerHostMs = median(d), median(h)
		if g.EagerStreamMs, err = stream(eager); err != nil {
			return err
		}
		want := make([]float32, T*H)
		if err := cuda.DownloadSlice(c, want, hid.Ptr); err != nil {
			return err
		}
		if err := c.Memset32(hid.Ptr, 0x7fc00000, int64(T*H)); err != nil { // NaN
			return err
		}
		t0 := time.Now()
		gr, err := c.Capture(eager)
		if err != nil {
			return err
		}
		defer c.DestroyGraph(gr)
		g.CaptureMs = float64(time.Since(t0).Microseconds()) / 1e3
		g.Kernels = c.GraphNodes(gr)
		launch := func() error { return c.LaunchGraph(gr) }
		if d, h, err = run(launch); err != nil {
			return err
		}
		g.GraphMs, g.GraphHostMs = median(d), median(h)
		if g.GraphStreamMs, err = stream(launch); err != nil {
			return err
		}
		got := make([]float32, T*H)
		if err := cuda.DownloadSlice(c, got, hid.Ptr); err != nil {
			return err
		}
		g.Identical = true
		for i := range got {
			if got[i] != want[i] && !(got[i] != got[i] && want[i] != want[i]) {
				g.Identical = false
				break
			}
		}
		return nil
	})
	return g, err
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// timingEvents creates two timing events on c; release destroys both.
func timingEvents(c *cuda.Ctx) (e0, e1 cuda.Event, release func(), err error) {
	if e0, err = c.NewEvent(true); err != nil {
		return 0, 0, nil, err
	}
	if e1, err = c.NewEvent(true); err != nil {
		c.DestroyEvent(e0)
		return 0, 0, nil, err
	}
	return e0, e1, func() { c.DestroyEvent(e0); c.DestroyEvent(e1) }, nil
}
