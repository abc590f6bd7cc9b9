package cuda

import (
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"time"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
)

// LinearArgs describe Y = epilogue(X W^T + b), torch.nn.functional.linear's
// layout: X is [M, K] row-major, W is [N, K] row-major (a Linear layer's
// weight), b is [N], Y is [M, N] row-major, all of DType. cuBLASLt computes
// in fp32 (CUBLAS_COMPUTE_32F, fp32 scale) and rounds once at the end.
type LinearArgs struct {
	DType    DType
	M, N, K  int
	X, W     DevPtr
	Bias     DevPtr // required by EpilogueBias and EpilogueGELUBias
	Y        DevPtr // must not overlap X or W
	Epilogue Epilogue
}

type gemmKey struct {
	dt      DType
	m, n, k int // m: the M class (mClass), or M itself when exact
	epi     Epilogue
	align   int  // common alignment of the four pointers, up to 256 bytes
	exact   bool // a plan of this M alone (RAPTOR_GEMM_EXACT, or the class's algorithm refused it)
}

// gemmPlan is everything cuBLASLt needs for one shape, made once.
type gemmPlan struct {
	op, a, b, cd uintptr // matmul and layout descriptors
	algo         heuristicResult
	candidates   int
	tuned        bool
	m            int // M of the b and cd layouts now (set per call)
}

// gemmExact (RAPTOR_GEMM_EXACT=1) makes a plan for every distinct M, as
// before M classes, for comparison. A packed batch's M is its token count,
// different in nearly every merged batch: one plan per M meant four
// cuBLASLt heuristic queries in the enqueue of nearly every batch (H100,
// all-MiniLM-L6-v2 under load: 3-4 plan misses per batch, 0.1-1.2 ms of a
// 1-2 ms enqueue, bench/RESULTS.md issue 8).
var gemmExact = os.Getenv("RAPTOR_GEMM_EXACT") == "1"

// mClass is the M a plan is chosen for: M up to 64, else M rounded up to
// a multiple of 2^(k-2) (2^k < M <= 2^(k+1): four classes per power of
// two). The algorithm cuBLASLt's heuristic picks for the class's largest M
// serves every M of the class (the layouts' column count is set to the
// call's M); if cublasLtMatmul refuses it for an M, that M gets a plan of
// its own.
func mClass(m int) int {
	if m <= 64 {
		return m
	}
	k := bits.Len(uint(m-1)) - 1
	step := 1 << (k - 2)
	return (m + step - 1) &^ (step - 1)
}

// GEMMClass is the M class whose plan serves a GEMM of M rows (mClass).
func GEMMClass(m int) int { return mClass(m) }

func (p *gemmPlan) destroy(lt *cublasLtAPI) {
	if p.op != 0 {
		lt.cublasLtMatmulDescDestroy(p.op)
	}
	for _, l := range []uintptr{p.a, p.b, p.cd} {
		if l != 0 {
			lt.cublasLtMatrixLayoutDestroy(l)
		}
	}
	*p = gemmPlan{}
}

// maxPlans bounds the plan cache; batches of many different token counts
// would otherwise grow it without end.
const maxPlans = 512

func alignOf(ptrs ...DevPtr) int {
	a := 256
	for _, p := range ptrs {
		if p == 0 {
			continue
		}
		if z := 1 << bits.TrailingZeros64(uint64(p)); z < a {
			a = z
		}
	}
	return a
}

// PlanStats counts the GEMM plan cache's lookups: a miss makes a plan
// (descriptors and cuBLASLt's heuristic) on the device worker, in the
// enqueue of the batch that needs it.
type PlanStats struct {
	Hits, Misses int64
	MissTime     time.Duration // spent making plans
}

// PlanStats returns the GEMM plan cache's counters.
func (c *Ctx) PlanStats() PlanStats { return c.planStats }

// plan returns the cached plan of a shape (of its M class unless exact),
// making it on first use, with its layouts set to a.M.
func (c *Ctx) plan(a LinearArgs, exact bool) (*gemmPlan, gemmKey, error) {
	exact = exact || gemmExact
	m := a.M
	if !exact {
		m = mClass(a.M)
	}
	key := gemmKey{a.DType, m, a.N, a.K, a.Epilogue, alignOf(a.X, a.W, a.Bias, a.Y), exact}
	if p := c.plans[key]; p != nil {
		if err := c.setM(p, a.M); err != nil {
			return nil, key, err
		}
		c.planStats.Hits++
		return p, key, nil
	}
	t0 := time.Now()
	c.planStats.Misses++
	defer func() { c.planStats.MissTime += time.Since(t0) }()
	if len(c.plans) >= maxPlans {
		for k, p := range c.plans {
			p.destroy(c.lt)
			delete(c.plans, k)
			break
		}
	}
	lt := c.lt
	p := &gemmPlan{}
	ok := false
	defer func() {
		if !ok {
			p.destroy(lt)
		}
	}()
	dt := a.DType.cudaType()
	if err := lt.check("cublasLtMatmulDescCreate", lt.cublasLtMatmulDescCreate(&p.op, cublasCompute32F, cudaR32F)); err != nil {
		return nil, key, err
	}
	setOp := func(attr int32, v uint32) error {
		return lt.check(fmt.Sprintf("cublasLtMatmulDescSetAttribute(%d)", attr),
			lt.cublasLtMatmulDescSetAttribute(p.op, attr, unsafe.Pointer(&v), 4))
	}
	// Column-major view: C[N, M] = op(A) op(B) with A = W seen as [K, N]
	// (transposed), B = X seen as [K, M], C = Y seen as [N, M]; the bias
	// runs along C's rows, i.e. Y's columns.
	if err := setOp(descTransA, cublasOpT); err != nil {
		return nil, key, err
	}
	if err := setOp(descTransB, cublasOpN); err != nil {
		return nil, key, err
	}
	if err := setOp(descEpilogue, a.Epilogue.lt()); err != nil {
		return nil, key, err
	}
	if a.Epilogue != EpilogueNone {
		if err := setOp(descBiasDType, uint32(dt)); err != nil {
			return nil, key, err
		}
	}
	layout := func(l *uintptr, rows, cols int) error {
		return lt.check(fmt.Sprintf("cublasLtMatrixLayoutCreate(%dx%d)", rows, cols),
			lt.cublasLtMatrixLayoutCreate(l, dt, uint64(rows), uint64(cols), int64(rows)))
	}
	if err := layout(&p.a, a.K, a.N); err != nil {
		return nil, key, err
	}
	if err := layout(&p.b, a.K, m); err != nil {
		return nil, key, err
	}
	if err := layout(&p.cd, a.N, m); err != nil {
		return nil, key, err
	}
	p.m = m
	var pref uintptr
	if err := lt.check("cublasLtMatmulPreferenceCreate", lt.cublasLtMatmulPreferenceCreate(&pref)); err != nil {
		return nil, key, err
	}
	defer lt.cublasLtMatmulPreferenceDestroy(pref)
	ws := uint64(c.workspace.Size)
	if err := lt.check("cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)",
		lt.cublasLtMatmulPreferenceSetAttribute(pref, prefMaxWorkspace, unsafe.Pointer(&ws), 8)); err != nil {
		return nil, key, err
	}
	al := uint32(key.align)
	for _, attr := range []int32{prefMinAlignA, prefMinAlignB, prefMinAlignC, prefMinAlignD} {
		if err := lt.check("cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)",
			lt.cublasLtMatmulPreferenceSetAttribute(pref, attr, unsafe.Pointer(&al), 4)); err != nil {
			return nil, key, err
		}
	}
	var res [8]heuristicResult
	var n int32
	requested := int32(1)
	if c.cfg.GemmAutotune {
		requested = int32(len(res))
	}
	if err := lt.check(fmt.Sprintf("cublasLtMatmulAlgoGetHeuristic(%s %dx%dx%d %s)", a.DType, a.M, a.N, a.K, a.Epilogue),
		lt.cublasLtMatmulAlgoGetHeuristic(c.ltHandle, p.op, p.a, p.b, p.cd, p.cd, pref, requested, unsafe.Pointer(&res[0]), &n)); err != nil {
		return nil, key, err
	}
	var cands []heuristicResult
	for _, r := range res[:n] {
		if r.state == 0 && r.workspace <= ws {
			cands = append(cands, r)
		}
	}
	if len(cands) == 0 {
		return nil, key, status.Errorf(status.Unsupported, "cuda: cuBLASLt has no algorithm for %s GEMM %dx%dx%d with epilogue %s",
			a.DType, m, a.N, a.K, a.Epilogue)
	}
	p.algo = cands[0]
	p.candidates = len(cands)
	if err := c.setM(p, a.M); err != nil { // autotune times the call's own M
		return nil, key, err
	}
	if c.cfg.GemmAutotune && len(cands) > 1 {
		best, err := c.autotune(p, a, cands)
		if err != nil {
			return nil, key, err
		}
		p.algo = best
		p.tuned = true
	}
	ok = true
	c.plans[key] = p
	return p, key, nil
}

// autotune times each candidate (3 warm-up runs, median of 15) on the
// caller's buffers and returns the fastest; the heuristic's first choice is
// kept unless another beats it by more than 3%, so timing noise cannot make
// autotuning worse than the heuristic.
func (c *Ctx) autotune(p *gemmPlan, a LinearArgs, cands []heuristicResult) (heuristicResult, error) {
	start, err := c.NewEvent(true)
	if err != nil {
		return cands[0], err
	}
	defer c.DestroyEvent(start)
	end, err := c.NewEvent(true)
	if err != nil {
		return cands[0], err
	}
	defer c.DestroyEvent(end)
	const warm, reps = 3, 15
	best, bestMs := cands[0], float32(-1)
	for ci, cand := range cands {
		var times []float32
		failed := false
		for r := 0; r < warm+reps && !failed; r++ {
			if err := c.RecordEvent(start, c.compute); err != nil {
				return cands[0], err
			}
			if err := c.matmul(p, &cand, a); err != nil {
				failed = true // some candidates refuse a shape: skip them
				break
			}
			if err := c.RecordEvent(end, c.compute); err != nil {
				return cands[0], err
			}
			if err := c.EventSync(end); err != nil {
				return cands[0], err
			}
			ms, err := c.Elapsed(start, end)
			if err != nil {
				return cands[0], err
			}
			if r >= warm {
				times = append(times, ms)
			}
		}
		if failed || len(times) == 0 {
			if ci == 0 {
				bestMs = float32(math.Inf(1)) // the heuristic's choice failed: any other wins
			}
			continue
		}
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		med := times[len(times)/2]
		switch {
		case ci == 0:
			bestMs = med
		case med < 0.97*bestMs:
			best, bestMs = cand, med
		}
	}
	return best, nil
}

// setM sets the column count (M) of p's b and cd layouts.
func (c *Ctx) setM(p *gemmPlan, m int) error {
	if p.m == m {
		return nil
	}
	v := uint64(m)
	for _, l := range []uintptr{p.b, p.cd} {
		if err := c.lt.check("cublasLtMatrixLayoutSetAttribute(COLS)",
			c.lt.cublasLtMatrixLayoutSetAttribute(l, layoutCols, unsafe.Pointer(&v), 8)); err != nil {
			p.m = -1
			return err
		}
	}
	p.m = m
	return nil
}

// layoutCols is CUBLASLT_MATRIX_LAYOUT_COLS.
const layoutCols = 3

func (c *Ctx) matmul(p *gemmPlan, algo *heuristicResult, a LinearArgs) error {
	lt := c.lt
	if a.Epilogue != EpilogueNone {
		bias := uint64(a.Bias)
		if err := lt.check("cublasLtMatmulDescSetAttribute(BIAS_POINTER)",
			lt.cublasLtMatmulDescSetAttribute(p.op, descBiasPtr, unsafe.Pointer(&bias), 8)); err != nil {
			return err
		}
	}
	alpha, beta := float32(1), float32(0)
	rc := lt.cublasLtMatmul(c.ltHandle, p.op, unsafe.Pointer(&alpha),
		uintptr(a.W), p.a, uintptr(a.X), p.b, unsafe.Pointer(&beta),
		uintptr(a.Y), p.cd, uintptr(a.Y), p.cd,
		unsafe.Pointer(&algo.algo), uintptr(c.workspace.Ptr), uint64(c.workspace.Size), uintptr(c.compute))
	if rc != 0 { // the message is formatted on failure only, as for kernel launches
		return lt.check(fmt.Sprintf("cublasLtMatmul(%s %dx%dx%d %s)", a.DType, a.M, a.N, a.K, a.Epilogue), rc)
	}
	return nil
}

// Linear enqueues Y = epilogue(X W^T + b) on the compute stream through
// cuBLASLt (see LinearArgs). The descriptors and the algorithm of each shape
// are chosen once (cuBLASLt's heuristic, or the fastest of its candidates
// with Config.GemmAutotune) and reused.
func (c *Ctx) Linear(a LinearArgs) error {
	if a.DType != F16 && a.DType != BF16 {
		return status.Errorf(status.InvalidArgument, "cuda: Linear needs f16 or bf16, got %s", a.DType)
	}
	if a.M <= 0 || a.N <= 0 || a.K <= 0 {
		if a.M == 0 {
			return nil
		}
		return status.Errorf(status.InvalidArgument, "cuda: Linear shape %dx%dx%d", a.M, a.N, a.K)
	}
	if a.X == 0 || a.W == 0 || a.Y == 0 || (a.Epilogue != EpilogueNone && a.Bias == 0) {
		return status.Errorf(status.InvalidArgument, "cuda: Linear with a null operand (epilogue %s)", a.Epilogue)
	}
	p, key, err := c.plan(a, false)
	if err != nil {
		return err
	}
	err = c.matmul(p, &p.algo, a)
	if err != nil && !key.exact && status.CodeOf(err) != status.DeviceFailed {
		// The class's algorithm does not take this M: a plan of its own.
		if p, _, err = c.plan(a, true); err != nil {
			return err
		}
		return c.matmul(p, &p.algo, a)
	}
	return err
}

// GemmPlanInfo describes the plan Linear uses for a shape: how many
// algorithms cuBLASLt offered, whether one was chosen by timing, and the
// workspace the chosen one needs.
type GemmPlanInfo struct {
	Candidates int
	Tuned      bool
	Workspace  uint64
}

// LinearPlan returns the plan of a's shape (making it if needed).
func (c *Ctx) LinearPlan(a LinearArgs) (GemmPlanInfo, error) {
	p, _, err := c.plan(a, false)
	if err != nil {
		return GemmPlanInfo{}, err
	}
	return GemmPlanInfo{Candidates: p.candidates, Tuned: p.tuned, Workspace: p.algo.workspace}, nil
}
