package cuda

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/loader"
)

// TestOpenWithoutGPU checks, on machines without a usable GPU, that Open
// fails with BackendUnavailable and says what it tried.
func TestOpenWithoutGPU(t *testing.T) {
	d, err := Open(Config{CacheDir: "off"})
	if err == nil {
		d.Close()
		t.Skip("a GPU is present; this test is for machines without one")
	}
	if status.CodeOf(err) != status.BackendUnavailable {
		t.Fatalf("code %v: %v", status.CodeOf(err), err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "libcuda.so.1") && !strings.Contains(msg, "CUDA_ERROR") {
		t.Fatalf("error names neither the driver library nor a CUDA error:\n%s", msg)
	}
	t.Logf("Open without a GPU: %s", strings.SplitN(msg, "\n", 2)[0])
}

func TestGPUSmokeDriver(t *testing.T) {
	d := gpu(t)
	info := d.Info()
	t.Logf("device: %s", info)
	t.Logf("libraries: driver %s, NVRTC %s, cuBLASLt %s", info.DriverPath, info.NVRTCPath, info.CublasLtPath)
	if info.Major < 8 || info.SMs <= 0 || info.TotalMem <= 0 || info.Arch == "" {
		t.Fatalf("implausible device info %+v", info)
	}
	if _, err := Open(Config{Device: 99, CacheDir: "off"}); status.CodeOf(err) != status.BackendUnavailable || !strings.Contains(err.Error(), "device 99 requested") {
		t.Errorf("Open of device 99: %v", err)
	} else {
		t.Logf("Open of a missing device: %v", err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	do(t, func(c *Ctx) error {
		// A round trip larger than the staging buffer (16 MiB) exercises
		// its double buffering both ways.
		n := 40<<20 + 12345
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		a, err := c.Alloc(int64(n))
		if err != nil {
			return err
		}
		defer c.Free(a)
		b, err := c.Alloc(int64(n))
		if err != nil {
			return err
		}
		defer c.Free(b)
		if err := c.Upload(a.Ptr, src); err != nil {
			return err
		}
		if err := c.Memset8(b.Ptr, 0, int64(n)); err != nil {
			return err
		}
		start, _ := c.NewEvent(true)
		end, _ := c.NewEvent(true)
		defer c.DestroyEvent(start)
		defer c.DestroyEvent(end)
		c.RecordEvent(start, c.Compute())
		if err := c.CopyDtoD(b.Ptr, a.Ptr, int64(n)); err != nil {
			return err
		}
		c.RecordEvent(end, c.Compute())
		got := make([]byte, n)
		if err := c.Download(got, b.Ptr); err != nil {
			return err
		}
		if !bytes.Equal(got, src) {
			t.Errorf("upload / device copy / download round trip differs")
		}
		ms, err := c.Elapsed(start, end)
		if err != nil {
			return err
		}
		t.Logf("driver: %d-byte HtoD+DtoD+DtoH round trip exact; DtoD %.3f ms (%.0f GB/s read+write)", n, ms, 2*float64(n)/float64(ms)/1e6)
		// Pinned buffers and the copy stream, ordered by an event.
		h, err := c.HostAlloc(1 << 20)
		if err != nil {
			return err
		}
		defer c.HostFree(h)
		for i := range h.Bytes() {
			h.Bytes()[i] = byte(i * 7)
		}
		ev, _ := c.NewEvent(false)
		defer c.DestroyEvent(ev)
		if err := c.CopyHtoDAsync(a.Ptr, h, 0, h.Size, c.CopyStream()); err != nil {
			return err
		}
		c.RecordEvent(ev, c.CopyStream())
		c.WaitEvent(c.Compute(), ev)
		back := make([]byte, h.Size)
		if err := c.Download(back, a.Ptr); err != nil {
			return err
		}
		if !bytes.Equal(back, h.Bytes()) {
			t.Errorf("pinned copy on the copy stream differs")
		}
		if err := d.Do(func(*Ctx) error { return nil }); status.CodeOf(err) != status.Internal {
			t.Errorf("nested Do: %v", err)
		}
		free, total, err := c.MemInfo()
		t.Logf("driver: memory %s free of %s; pool %+v", fmtBytes(free), fmtBytes(total), c.MemStats())
		return err
	})
}

// TestGPUSmokeNVRTC compiles the conversion module at run time (NVRTC for
// the device's architecture), runs it, and checks it bit for bit against
// the host conversions (round to nearest even).
func TestGPUSmokeNVRTC(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	in := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65519, 65520, 1e6, -1e6,
		float32(math.Inf(1)), float32(math.Inf(-1)), 5.96e-8, 2.98e-8, 1e-10, 6.1e-5, 3.4e38,
		1 + 1.0/2048, 1 + 3.0/2048, 1 + 1.0/256, 1 + 3.0/256} // overflow, subnormals, ties
	for i := 0; i < 200000; i++ {
		in = append(in, math.Float32frombits(rng.Uint32()&^0x7f800000|uint32(100+rng.IntN(60))<<23))
	}
	do(t, func(c *Ctx) error {
		n := int64(len(in))
		src, err := c.Alloc(4 * n)
		if err != nil {
			return err
		}
		defer c.Free(src)
		if err := UploadSlice(c, src.Ptr, in); err != nil {
			return err
		}
		for _, dt := range []DType{F16, BF16} {
			dst := poisoned(t, c, 2*n)
			if err := c.Convert(dt, dst.Ptr, F32, src.Ptr, n); err != nil {
				return err
			}
			got := downloadHalf(t, c, dst.Ptr, int(n))
			bad := 0
			for i, f := range in {
				if want := toBits(dt, f); got[i] != want {
					if bad++; bad < 5 {
						t.Errorf("f32_to_%s(%g) = %#04x, want %#04x", dt, f, got[i], want)
					}
				}
			}
			t.Logf("nvrtc: module convert (%s) f32_to_%s: %d values, %d mismatches", c.ModuleOutcome("convert"), dt, n, bad)
			c.Free(dst)
		}
		// Every 16-bit pattern back to fp32.
		all := make([]uint16, 65536)
		for i := range all {
			all[i] = uint16(i)
		}
		hb := devHalf(t, c, all)
		defer c.Free(hb)
		out := poisoned(t, c, 4*65536)
		defer c.Free(out)
		for _, dt := range []DType{F16, BF16} {
			if err := c.Convert(F32, out.Ptr, dt, hb.Ptr, 65536); err != nil {
				return err
			}
			got := make([]float32, 65536)
			if err := DownloadSlice(c, got, out.Ptr); err != nil {
				return err
			}
			bad := 0
			for i, g := range got {
				want := fromBits(dt, uint16(i))
				if math.IsNaN(want) != math.IsNaN(float64(g)) || (!math.IsNaN(want) && float64(g) != want) {
					if bad++; bad < 5 {
						t.Errorf("%s_to_f32(%#04x) = %g, want %g", dt, i, g, want)
					}
				}
			}
			t.Logf("nvrtc: %s_to_f32 over all 65536 patterns: %d mismatches", dt, bad)
		}
		f, err := c.Function("layernorm", "add_ln_f16_v3")
		if err != nil {
			return err
		}
		occ, err := c.Occupancy(f, 128, 0)
		t.Logf("nvrtc: %s: %d registers, %d bytes local, %d blocks of 128 per SM", f.Name, f.Registers, f.LocalBytes, occ)
		return err
	})
}

// TestGPUFillUniform checks the counter-based fill against the same
// generator on the host.
func TestGPUFillUniform(t *testing.T) {
	const n = 1 << 20
	const seed = 12345
	do(t, func(c *Ctx) error {
		b := poisoned(t, c, 4*n)
		defer c.Free(b)
		if err := c.FillUniform(F32, b.Ptr, n, seed, -2, 3); err != nil {
			return err
		}
		got := make([]float32, n)
		if err := DownloadSlice(c, got, b.Ptr); err != nil {
			return err
		}
		bad := 0
		for i, g := range got {
			z := mix64(seed + 0x9e3779b97f4a7c15*uint64(i+1))
			u := float64(float32(z>>40) * (1.0 / 16777216.0))
			want := -2 + 5*u
			if math.Abs(float64(g)-want) > 1e-6*5 || g < -2 || g >= 3 {
				if bad++; bad < 5 {
					t.Errorf("fill[%d] = %v, want %v", i, g, want)
				}
			}
		}
		t.Logf("fill_uniform_f32: %d values, %d off the host generator", n, bad)
		return nil
	})
}

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// TestGPUSmokeCublasLt runs one small GEMM of each epilogue and dtype.
func TestGPUSmokeCublasLt(t *testing.T) {
	d := gpu(t)
	t.Logf("cuBLASLt version %d from %s", d.Info().CublasLtVer, d.Info().CublasLtPath)
	rng := rand.New(rand.NewPCG(3, 3))
	for _, dt := range []DType{F16, BF16} {
		for _, epi := range []Epilogue{EpilogueNone, EpilogueBias, EpilogueGELUBias} {
			m, n, k := 100, 72, 264
			xb, xv := randHalf(rng, dt, m*k, -1, 1)
			wb, wv := randHalf(rng, dt, n*k, -0.2, 0.2)
			bb, bv := randHalf(rng, dt, n, -1, 1)
			ref := make([]float64, m*n)
			for i := 0; i < m; i++ {
				for j := 0; j < n; j++ {
					var s float64
					for l := 0; l < k; l++ {
						s += xv[i*k+l] * wv[j*k+l]
					}
					if epi != EpilogueNone {
						s += bv[j]
					}
					if epi == EpilogueGELUBias {
						s = gelu64(s, true)
					}
					ref[i*n+j] = s
				}
			}
			do(t, func(c *Ctx) error {
				x, w, b := devHalf(t, c, xb), devHalf(t, c, wb), devHalf(t, c, bb)
				y := poisoned(t, c, int64(m*n*2))
				defer func() { c.Free(x); c.Free(w); c.Free(b); c.Free(y) }()
				if err := c.Linear(LinearArgs{DType: dt, M: m, N: n, K: k, X: x.Ptr, W: w.Ptr, Bias: b.Ptr, Y: y.Ptr, Epilogue: epi}); err != nil {
					return err
				}
				got := downloadHalf(t, c, y.Ptr, m*n)
				compareHalf(dt, got, ref, 1e-2).check(t, fmt.Sprintf("cublasLt %s %dx%dx%d %s", dt, m, n, k, epi), map[DType]float64{F16: 1e-2, BF16: 2e-2}[dt])
				return nil
			})
		}
	}
}

// modelGemm is one GEMM of an encoder layer: Y[M, N] = X[M, K] W[N, K]^T.
type modelGemm struct {
	name string
	n, k int
	epi  Epilogue
}

func modelGemms(hidden int) []modelGemm {
	return []modelGemm{
		{"qkv", 3 * hidden, hidden, EpilogueBias},
		{"out_proj", hidden, hidden, EpilogueBias},
		{"ffn1", 4 * hidden, hidden, EpilogueGELUBias},
		{"ffn2", hidden, 4 * hidden, EpilogueBias},
	}
}

// TestGPULinearModelShapes runs every GEMM of the model's layers (hidden 768
// and 1024) at M = 4096, 49699 (an odd token count) and 65536, fp16 and
// bf16, with random operands generated on the device. It checks the whole
// output for unwritten (poisoned) or non-finite elements and 64 sampled rows
// (first, last and random) against a float64 CPU reference.
func TestGPULinearModelShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("model-shape GEMMs skipped in -short mode")
	}
	gpu(t)
	rng := rand.New(rand.NewPCG(4, 4))
	seed := uint64(100)
	for _, dt := range []DType{F16, BF16} {
		maxRel := map[DType]float64{F16: 1e-2, BF16: 2e-2}[dt]
		for _, hidden := range []int{768, 1024} {
			for _, g := range modelGemms(hidden) {
				for _, m := range []int{4096, 49699, 65536} {
					seed++
					name := fmt.Sprintf("%s h%d %s M=%d (N=%d K=%d, %s)", dt, hidden, g.name, m, g.n, g.k, g.epi)
					do(t, func(c *Ctx) error {
						return checkModelGemm(t, c, rng, seed, name, dt, m, g, maxRel)
					})
				}
			}
		}
	}
}

func checkModelGemm(t *testing.T, c *Ctx, rng *rand.Rand, seed uint64, name string, dt DType, m int, g modelGemm, maxRel float64) error {
	n, k := g.n, g.k
	x, err := c.Alloc(int64(m) * int64(k) * 2)
	if err != nil {
		return err
	}
	defer c.Free(x)
	w, err := c.Alloc(int64(n) * int64(k) * 2)
	if err != nil {
		return err
	}
	defer c.Free(w)
	b, err := c.Alloc(int64(n) * 2)
	if err != nil {
		return err
	}
	defer c.Free(b)
	y := poisoned(t, c, int64(m)*int64(n)*2)
	defer c.Free(y)
	c.FillUniform(dt, x.Ptr, int64(m)*int64(k), seed*3, -1, 1)
	c.FillUniform(dt, w.Ptr, int64(n)*int64(k), seed*3+1, -1.0/16, 1.0/16)
	c.FillUniform(dt, b.Ptr, int64(n), seed*3+2, -1, 1)
	if err := c.Linear(LinearArgs{DType: dt, M: m, N: n, K: k, X: x.Ptr, W: w.Ptr, Bias: b.Ptr, Y: y.Ptr, Epilogue: g.epi}); err != nil {
		return err
	}
	out := downloadHalf(t, c, y.Ptr, m*n)
	nonFinite := 0
	expMask := uint16(0x7c00) // fp16: exponent all ones is Inf or NaN
	if dt == BF16 {
		expMask = 0x7f80
	}
	for _, h := range out {
		if h&expMask == expMask {
			nonFinite++
		}
	}
	wv := make([]float64, n*k)
	for i, h := range downloadHalf(t, c, w.Ptr, n*k) {
		wv[i] = fromBits(dt, h)
	}
	bv := make([]float64, n)
	for i, h := range downloadHalf(t, c, b.Ptr, n) {
		bv[i] = fromBits(dt, h)
	}
	rows := []int{0, m - 1}
	for len(rows) < 64 {
		rows = append(rows, rng.IntN(m))
	}
	var got []uint16
	ref := make([]float64, 0, len(rows)*n)
	refErf := make([]float64, 0, len(rows)*n)
	xrow := make([]uint16, k)
	for _, r := range rows {
		if err := DownloadSlice(c, xrow, x.Ptr.Add(int64(r)*int64(k)*2)); err != nil {
			return err
		}
		xv := make([]float64, k)
		for i, h := range xrow {
			xv[i] = fromBits(dt, h)
		}
		got = append(got, out[r*n:(r+1)*n]...)
		for j := 0; j < n; j++ {
			s := bv[j]
			wr := wv[j*k : (j+1)*k]
			for l, xl := range xv {
				s += xl * wr[l]
			}
			e := s
			if g.epi == EpilogueGELUBias {
				s, e = gelu64(s, true), gelu64(s, false)
			}
			ref = append(ref, s)
			refErf = append(refErf, e)
		}
	}
	st := compareHalf(dt, got, ref, 5e-2)
	st.bad = 0 // the GEMM criterion is the relative error (accumulation order differs)
	st.nonFinite += nonFinite
	if g.epi == EpilogueGELUBias {
		t.Logf("  (vs exact-erf GELU reference: rel_err=%.2e)", compareHalf(dt, got, refErf, 5e-2).relL2)
	}
	st.check(t, name, maxRel)
	return nil
}

// TestGPUElementwiseKernels checks every elementwise kernel against a
// float64 CPU reference on random inputs, outputs poisoned beforehand.
func TestGPUElementwiseKernels(t *testing.T) {
	gpu(t)
	rng := rand.New(rand.NewPCG(5, 5))
	for _, dt := range []DType{F16, BF16} {
		for _, sh := range [][2]int{{1, 8}, {3, 264}, {1000, 768}, {4097, 1024}, {130, 1536}, {257, 4096}} {
			rows, cols := sh[0], sh[1]
			for _, variant := range []string{"x", "x+res", "x+res+bias", "x+res+bias in place"} {
				testAddLN(t, rng, dt, rows, cols, variant)
			}
		}
		testEmbedLN(t, rng, dt, 777, 768, true)
		testEmbedLN(t, rng, dt, 300, 1024, false)
		testEmbedLNBadIDs(t, rng, dt)
		for _, sh := range [][2]int{{1, 8}, {333, 3072}, {1000, 4096}, {7, 776}} {
			for _, tanh := range []bool{false, true} {
				testBiasGELU(t, rng, dt, sh[0], sh[1], tanh, false, true)
				testBiasGELU(t, rng, dt, sh[0], sh[1], tanh, true, true)
			}
		}
		testBiasGELU(t, rng, dt, 50, 1024, false, false, false)
		testMeanPool(t, rng, dt)
	}
	testPackUnpackGather(t, rng)
}

func testAddLN(t *testing.T, rng *rand.Rand, dt DType, rows, cols int, variant string) {
	const eps = 1e-12
	xb, xv := randHalf(rng, dt, rows*cols, 1, 5) // a mean far from 0 tests the two-pass variance
	rb, rv := randHalf(rng, dt, rows*cols, -2, 2)
	bb, bv := randHalf(rng, dt, cols, -1, 1)
	gb, gv := randHalf(rng, dt, cols, 0.5, 1.5)
	beb, bev := randHalf(rng, dt, cols, -0.5, 0.5)
	useRes := strings.Contains(variant, "res")
	useBias := strings.Contains(variant, "bias")
	inPlace := strings.Contains(variant, "in place")
	ref := make([]float64, rows*cols)
	for r := 0; r < rows; r++ {
		v := ref[r*cols : (r+1)*cols]
		for j := range v {
			v[j] = xv[r*cols+j]
			if useRes {
				v[j] += rv[r*cols+j]
			}
			if useBias {
				v[j] += bv[j]
			}
		}
		layerNorm64(v, gv, bev, eps)
	}
	do(t, func(c *Ctx) error {
		x, res, b, g, be := devHalf(t, c, xb), devHalf(t, c, rb), devHalf(t, c, bb), devHalf(t, c, gb), devHalf(t, c, beb)
		defer func() { c.Free(x); c.Free(res); c.Free(b); c.Free(g); c.Free(be) }()
		var out Buffer
		if inPlace {
			out = res
		} else {
			out = poisoned(t, c, int64(rows*cols*2))
			defer c.Free(out)
		}
		var rp, bp DevPtr
		if useRes {
			rp = res.Ptr
		}
		if useBias {
			bp = b.Ptr
		}
		if err := c.AddLayerNorm(dt, out.Ptr, x.Ptr, rp, bp, g.Ptr, be.Ptr, rows, cols, eps); err != nil {
			return err
		}
		got := downloadHalf(t, c, out.Ptr, rows*cols)
		compareHalf(dt, got, ref, 2e-4).check(t, fmt.Sprintf("add_ln %s %dx%d %s", dt, rows, cols, variant), maxRelFor(dt))
		return nil
	})
}

func testEmbedLN(t *testing.T, rng *rand.Rand, dt DType, rows, cols int, full bool) {
	const vocab, npos, ntype, eps = 1000, 512, 2, 1e-5
	wb, wv := randHalf(rng, dt, vocab*cols, -1, 1)
	pb, pv := randHalf(rng, dt, npos*cols, -0.5, 0.5)
	tb, tv := randHalf(rng, dt, ntype*cols, -0.2, 0.2)
	gb, gv := randHalf(rng, dt, cols, 0.5, 1.5)
	beb, bev := randHalf(rng, dt, cols, -0.5, 0.5)
	ids := make([]int32, rows)
	pos := make([]int32, rows)
	types := make([]int32, rows)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
		pos[i] = int32(rng.IntN(npos))
		types[i] = int32(rng.IntN(ntype))
	}
	ref := make([]float64, rows*cols)
	for r := 0; r < rows; r++ {
		v := ref[r*cols : (r+1)*cols]
		for j := range v {
			v[j] = wv[int(ids[r])*cols+j]
			if full {
				v[j] += pv[int(pos[r])*cols+j] + tv[int(types[r])*cols+j]
			}
		}
		layerNorm64(v, gv, bev, eps)
	}
	do(t, func(c *Ctx) error {
		w, p, ty, g, be := devHalf(t, c, wb), devHalf(t, c, pb), devHalf(t, c, tb), devHalf(t, c, gb), devHalf(t, c, beb)
		di, dp, dtp := devInt32(t, c, ids), devInt32(t, c, pos), devInt32(t, c, types)
		errFlag := devInt32(t, c, []int32{0})
		out := poisoned(t, c, int64(rows*cols*2))
		defer func() {
			for _, b := range []Buffer{w, p, ty, g, be, di, dp, dtp, errFlag, out} {
				c.Free(b)
			}
		}()
		a := EmbedArgs{DType: dt, Out: out.Ptr, IDs: di.Ptr, Word: w.Ptr, Gamma: g.Ptr, Beta: be.Ptr,
			Rows: rows, Cols: cols, Vocab: vocab, NPos: npos, NType: ntype, Eps: eps, Err: errFlag.Ptr}
		if full {
			a.PosIDs, a.Pos, a.TypeIDs, a.Type = dp.Ptr, p.Ptr, dtp.Ptr, ty.Ptr
		}
		if err := c.EmbedLayerNorm(a); err != nil {
			return err
		}
		got := downloadHalf(t, c, out.Ptr, rows*cols)
		flag := make([]int32, 1)
		DownloadSlice(c, flag, errFlag.Ptr)
		if flag[0] != 0 {
			t.Errorf("embed_ln: error flag %d with valid ids", flag[0])
		}
		what := "word"
		if full {
			what = "word+pos+type"
		}
		compareHalf(dt, got, ref, 2e-4).check(t, fmt.Sprintf("embed_ln %s %dx%d %s", dt, rows, cols, what), maxRelFor(dt))
		return nil
	})
}

// testEmbedLNBadIDs checks that out-of-range ids set the error flag, give
// zero rows and leave the other rows right.
func testEmbedLNBadIDs(t *testing.T, rng *rand.Rand, dt DType) {
	const rows, cols, vocab, npos = 64, 256, 50, 16
	wb, wv := randHalf(rng, dt, vocab*cols, -1, 1)
	pb, pv := randHalf(rng, dt, npos*cols, -1, 1)
	gb, gv := randHalf(rng, dt, cols, 0.5, 1.5)
	beb, bev := randHalf(rng, dt, cols, -0.5, 0.5)
	ids := make([]int32, rows)
	pos := make([]int32, rows)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
		pos[i] = int32(rng.IntN(npos))
	}
	ids[5], ids[9], pos[20] = vocab, -1, npos+3
	ref := make([]float64, rows*cols)
	for r := 0; r < rows; r++ {
		if r == 5 || r == 9 || r == 20 {
			continue // zeros
		}
		v := ref[r*cols : (r+1)*cols]
		for j := range v {
			v[j] = wv[int(ids[r])*cols+j] + pv[int(pos[r])*cols+j]
		}
		layerNorm64(v, gv, bev, 1e-5)
	}
	do(t, func(c *Ctx) error {
		w, p, g, be := devHalf(t, c, wb), devHalf(t, c, pb), devHalf(t, c, gb), devHalf(t, c, beb)
		di, dp := devInt32(t, c, ids), devInt32(t, c, pos)
		errFlag := devInt32(t, c, []int32{0})
		out := poisoned(t, c, int64(rows*cols*2))
		defer func() {
			for _, b := range []Buffer{w, p, g, be, di, dp, errFlag, out} {
				c.Free(b)
			}
		}()
		if err := c.EmbedLayerNorm(EmbedArgs{DType: dt, Out: out.Ptr, IDs: di.Ptr, PosIDs: dp.Ptr, Word: w.Ptr, Pos: p.Ptr,
			Gamma: g.Ptr, Beta: be.Ptr, Rows: rows, Cols: cols, Vocab: vocab, NPos: npos, Eps: 1e-5, Err: errFlag.Ptr}); err != nil {
			return err
		}
		got := downloadHalf(t, c, out.Ptr, rows*cols)
		flag := make([]int32, 1)
		DownloadSlice(c, flag, errFlag.Ptr)
		if flag[0] != 3 {
			t.Errorf("embed_ln bad ids: flag %d, want 3 (word|position)", flag[0])
		}
		compareHalf(dt, got, ref, 2e-4).check(t, fmt.Sprintf("embed_ln %s bad ids -> zero rows + flag %d", dt, flag[0]), maxRelFor(dt))
		return nil
	})
}

func testBiasGELU(t *testing.T, rng *rand.Rand, dt DType, rows, cols int, tanh, inPlace, withBias bool) {
	xb, xv := randHalf(rng, dt, rows*cols, -5, 5)
	bb, bv := randHalf(rng, dt, cols, -1, 1)
	ref := make([]float64, rows*cols)
	for i := range ref {
		v := xv[i]
		if withBias {
			v += bv[i%cols]
		}
		ref[i] = gelu64(v, tanh)
	}
	do(t, func(c *Ctx) error {
		x, b := devHalf(t, c, xb), devHalf(t, c, bb)
		defer func() { c.Free(x); c.Free(b) }()
		out := x
		if !inPlace {
			out = poisoned(t, c, int64(rows*cols*2))
			defer c.Free(out)
		}
		var bp DevPtr
		if withBias {
			bp = b.Ptr
		}
		if err := c.BiasGELU(dt, out.Ptr, x.Ptr, bp, rows, cols, tanh); err != nil {
			return err
		}
		got := downloadHalf(t, c, out.Ptr, rows*cols)
		kind := map[bool]string{false: "erf", true: "tanh"}[tanh]
		name := fmt.Sprintf("bias_gelu_%s %s %dx%d", kind, dt, rows, cols)
		if inPlace {
			name += " in place"
		}
		if !withBias {
			name += " no bias"
		}
		compareHalf(dt, got, ref, 1e-5).check(t, name, maxRelFor(dt))
		return nil
	})
}

func testMeanPool(t *testing.T, rng *rand.Rand, dt DType) {
	lens := []int{5, 0, 1, 700, 64, 2049}
	cols := 768
	cu := []int32{0}
	for _, l := range lens {
		cu = append(cu, cu[len(cu)-1]+int32(l))
	}
	total := int(cu[len(cu)-1])
	xb, xv := randHalf(rng, dt, total*cols, -3, 3)
	ref := make([]float64, len(lens)*cols)
	for b, l := range lens {
		for j := 0; j < cols; j++ {
			var s float64
			for r := int(cu[b]); r < int(cu[b+1]); r++ {
				s += xv[r*cols+j]
			}
			if l > 0 {
				ref[b*cols+j] = s / float64(l)
			}
		}
	}
	do(t, func(c *Ctx) error {
		x, dcu := devHalf(t, c, xb), devInt32(t, c, cu)
		out := poisoned(t, c, int64(len(ref)*4))
		defer func() { c.Free(x); c.Free(dcu); c.Free(out) }()
		if err := c.MeanPool(dt, out.Ptr, x.Ptr, dcu.Ptr, len(lens), cols); err != nil {
			return err
		}
		got := make([]float32, len(ref))
		DownloadSlice(c, got, out.Ptr)
		bad, nonFinite := 0, 0
		for i, g := range got {
			if math.IsNaN(float64(g)) {
				nonFinite++
			} else if math.Abs(float64(g)-ref[i]) > 1e-5 {
				bad++
			}
		}
		t.Logf("%-40s n=%d out_of_tol=%d non_finite=%d", fmt.Sprintf("mean_pool %s lens %v", dt, lens), len(ref), bad, nonFinite)
		if bad+nonFinite > 0 {
			t.Errorf("mean_pool %s: %d out of tolerance, %d unwritten", dt, bad, nonFinite)
		}
		return nil
	})
}

// testPackUnpackGather checks the row movers bit for bit.
func testPackUnpackGather(t *testing.T, rng *rand.Rand) {
	const S, cols = 300, 768
	lens := []int{300, 1, 0, 17, 299, 64}
	batch := len(lens)
	cu := []int32{0}
	for _, l := range lens {
		cu = append(cu, cu[len(cu)-1]+int32(l))
	}
	total := int(cu[batch])
	padded, _ := randHalf(rng, F16, batch*S*cols, -4, 4)
	wantPacked := make([]uint16, 0, total*cols)
	for b, l := range lens {
		wantPacked = append(wantPacked, padded[b*S*cols:(b*S+l)*cols]...)
	}
	wantPadded := make([]uint16, batch*S*cols)
	for b, l := range lens {
		copy(wantPadded[b*S*cols:], padded[b*S*cols:(b*S+l)*cols])
	}
	idx := []int32{0, int32(total - 1), 5, -1, int32(total), 17, 17}
	wantGather := make([]uint16, len(idx)*cols)
	for i, j := range idx {
		if j >= 0 && int(j) < total {
			copy(wantGather[i*cols:], wantPacked[int(j)*cols:(int(j)+1)*cols])
		}
	}
	do(t, func(c *Ctx) error {
		src, dcu, didx := devHalf(t, c, padded), devInt32(t, c, cu), devInt32(t, c, idx)
		packed := poisoned(t, c, int64(total*cols*2))
		unpacked := poisoned(t, c, int64(batch*S*cols*2))
		gathered := poisoned(t, c, int64(len(idx)*cols*2))
		defer func() {
			for _, b := range []Buffer{src, dcu, didx, packed, unpacked, gathered} {
				c.Free(b)
			}
		}()
		if err := c.PackRows(packed.Ptr, src.Ptr, dcu.Ptr, batch, S, total, cols*2); err != nil {
			return err
		}
		if err := c.UnpackRows(unpacked.Ptr, packed.Ptr, dcu.Ptr, batch, S, cols*2); err != nil {
			return err
		}
		if err := c.GatherRows(gathered.Ptr, packed.Ptr, didx.Ptr, len(idx), total, cols*2); err != nil {
			return err
		}
		for _, k := range []struct {
			name string
			buf  Buffer
			want []uint16
		}{{"pack_rows", packed, wantPacked}, {"unpack_rows (zero padding)", unpacked, wantPadded}, {"gather_rows (bad index -> zeros)", gathered, wantGather}} {
			got := downloadHalf(t, c, k.buf.Ptr, len(k.want))
			diff := 0
			for i := range got {
				if got[i] != k.want[i] {
					diff++
				}
			}
			t.Logf("%-40s n=%d mismatches=%d", fmt.Sprintf("%s lens %v", k.name, lens), len(got), diff)
			if diff > 0 {
				t.Errorf("%s: %d of %d elements differ", k.name, diff, len(got))
			}
		}
		return nil
	})
}

// TestGPUCaptureGraph replays a captured graph and compares it with the
// same work run directly.
func TestGPUCaptureGraph(t *testing.T) {
	const n = 1 << 16
	do(t, func(c *Ctx) error {
		a, _ := c.Alloc(4 * n)
		b := poisoned(t, c, 2*n)
		ref := poisoned(t, c, 2*n)
		defer func() { c.Free(a); c.Free(b); c.Free(ref) }()
		work := func(dst DevPtr) error {
			if err := c.FillUniform(F32, a.Ptr, n, 99, -1, 1); err != nil {
				return err
			}
			if err := c.Convert(F16, dst, F32, a.Ptr, n); err != nil {
				return err
			}
			return c.BiasGELU(F16, dst, dst, 0, n/64, 64, false)
		}
		if err := work(ref.Ptr); err != nil {
			return err
		}
		if err := c.Sync(); err != nil {
			return err
		}
		g, err := c.Capture(func() error { return work(b.Ptr) })
		if err != nil {
			return err
		}
		defer c.DestroyGraph(g)
		if got := downloadHalf(t, c, b.Ptr, 4); got[0] != 0xffff {
			t.Errorf("capture ran the work instead of recording it")
		}
		for i := 0; i < 3; i++ {
			if err := c.LaunchGraph(g); err != nil {
				return err
			}
		}
		got, want := downloadHalf(t, c, b.Ptr, n), downloadHalf(t, c, ref.Ptr, n)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("graph replay differs at %d: %#x vs %#x", i, got[i], want[i])
			}
		}
		t.Logf("graph: 3 kernels captured and replayed 3 times, output identical to direct launches")
		return nil
	})
}

// TestGPUAllocatorWarm checks that a repeated workload allocates from the
// cache only.
func TestGPUAllocatorWarm(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	sizes := make([]int64, 50)
	for i := range sizes {
		sizes[i] = 1 + rng.Int64N(8<<20)
	}
	work := func(c *Ctx) error {
		var bufs []Buffer
		for _, n := range sizes {
			b, err := c.Alloc(n)
			if err != nil {
				return err
			}
			bufs = append(bufs, b)
		}
		for _, b := range bufs {
			if err := c.Free(b); err != nil {
				return err
			}
		}
		return nil
	}
	var before, after MemStats
	do(t, func(c *Ctx) error {
		if err := work(c); err != nil {
			return err
		}
		before = c.MemStats()
		rng.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
		if err := work(c); err != nil {
			return err
		}
		after = c.MemStats()
		return nil
	})
	t.Logf("allocator: after cold run %+v; warm run adds %d cuMemAlloc calls and %d cache hits", before, after.RawAllocs-before.RawAllocs, after.Hits-before.Hits)
	if after.RawAllocs != before.RawAllocs {
		t.Errorf("warm run called cuMemAlloc %d times", after.RawAllocs-before.RawAllocs)
	}
}

// keep the loader import honest: these tests rely on its conversions.
var _ = loader.F16ToF32
