package cuda

import (
	"fmt"
	"unsafe"

	"github.com/raptor-infer/raptor/internal/status"
)

// cublasLtAPI holds the cuBLASLt entry points, bound with purego.
// cublasLtMatmul takes 16 arguments: purego >= v0.11 is required
// (ARCHITECTURE.md, decision 1).
type cublasLtAPI struct {
	lib *library

	cublasLtCreate                       func(h *uintptr) int32
	cublasLtDestroy                      func(h uintptr) int32
	cublasLtGetVersion                   func() uint64
	cublasLtGetStatusName                func(rc int32) string
	cublasLtGetStatusString              func(rc int32) string
	cublasLtMatmulDescCreate             func(d *uintptr, compute int32, scale int32) int32
	cublasLtMatmulDescDestroy            func(d uintptr) int32
	cublasLtMatmulDescSetAttribute       func(d uintptr, attr int32, buf unsafe.Pointer, size uint64) int32
	cublasLtMatrixLayoutCreate           func(l *uintptr, dtype int32, rows, cols uint64, ld int64) int32
	cublasLtMatrixLayoutDestroy          func(l uintptr) int32
	cublasLtMatrixLayoutSetAttribute     func(l uintptr, attr int32, buf unsafe.Pointer, size uint64) int32
	cublasLtMatmulPreferenceCreate       func(p *uintptr) int32
	cublasLtMatmulPreferenceDestroy      func(p uintptr) int32
	cublasLtMatmulPreferenceSetAttribute func(p uintptr, attr int32, buf unsafe.Pointer, size uint64) int32
	cublasLtMatmulAlgoGetHeuristic       func(h, op, a, b, c, d, pref uintptr, requested int32, results unsafe.Pointer, returned *int32) int32
	cublasLtMatmul                       func(h, op uintptr, alpha unsafe.Pointer, A, Adesc, B, Bdesc uintptr, beta unsafe.Pointer, C, Cdesc, D, Ddesc uintptr, algo unsafe.Pointer, ws uintptr, wsSize uint64, stream uintptr) int32
}

func loadCublasLt(env discoveryEnv) (*cublasLtAPI, error) {
	lib, err := env.load(specCublasLt)
	if err != nil {
		return nil, err
	}
	a := &cublasLtAPI{lib: lib}
	if err := bind(lib, []symbol{
		{name: "cublasLtCreate", fn: &a.cublasLtCreate},
		{name: "cublasLtDestroy", fn: &a.cublasLtDestroy},
		{name: "cublasLtGetVersion", fn: &a.cublasLtGetVersion},
		{name: "cublasLtGetStatusName", fn: &a.cublasLtGetStatusName},
		{name: "cublasLtGetStatusString", fn: &a.cublasLtGetStatusString},
		{name: "cublasLtMatmulDescCreate", fn: &a.cublasLtMatmulDescCreate},
		{name: "cublasLtMatmulDescDestroy", fn: &a.cublasLtMatmulDescDestroy},
		{name: "cublasLtMatmulDescSetAttribute", fn: &a.cublasLtMatmulDescSetAttribute},
		{name: "cublasLtMatrixLayoutCreate", fn: &a.cublasLtMatrixLayoutCreate},
		{name: "cublasLtMatrixLayoutDestroy", fn: &a.cublasLtMatrixLayoutDestroy},
		{name: "cublasLtMatrixLayoutSetAttribute", fn: &a.cublasLtMatrixLayoutSetAttribute},
		{name: "cublasLtMatmulPreferenceCreate", fn: &a.cublasLtMatmulPreferenceCreate},
		{name: "cublasLtMatmulPreferenceDestroy", fn: &a.cublasLtMatmulPreferenceDestroy},
		{name: "cublasLtMatmulPreferenceSetAttribute", fn: &a.cublasLtMatmulPreferenceSetAttribute},
		{name: "cublasLtMatmulAlgoGetHeuristic", fn: &a.cublasLtMatmulAlgoGetHeuristic},
		{name: "cublasLtMatmul", fn: &a.cublasLtMatmul},
	}); err != nil {
		return nil, err
	}
	return a, nil
}

// check turns a cublasStatus_t into nil or an error naming call. Allocation
// failures map to OutOfMemory, an execution failure to DeviceFailed (the
// driver's sticky error shows up at the next synchronisation too), anything
// else to Internal.
func (a *cublasLtAPI) check(call string, rc int32) error {
	if rc == 0 {
		return nil
	}
	ce := &CallError{Lib: "cublasLt", Call: call, Code: int(rc), Name: a.cublasLtGetStatusName(rc), Desc: a.cublasLtGetStatusString(rc)}
	c := status.Internal
	switch rc {
	case 3: // CUBLAS_STATUS_ALLOC_FAILED
		c = status.OutOfMemory
	case 13: // CUBLAS_STATUS_EXECUTION_FAILED
		c = status.DeviceFailed
	case 15: // CUBLAS_STATUS_NOT_SUPPORTED
		c = status.Unsupported
	}
	return callFailed(c, ce)
}

// cuBLASLt and CUDA enum values used here (cublasLt.h, cublas_api.h,
// library_types.h).
const (
	cudaR16F  = 2
	cudaR32F  = 0
	cudaR16BF = 14

	cublasCompute32F = 68
	cublasOpN        = 0
	cublasOpT        = 1

	descTransA    = 3
	descTransB    = 4
	descEpilogue  = 7
	descBiasPtr   = 8
	descBiasDType = 26

	epilogueDefault  = 1
	epilogueBias     = 4
	epilogueGELUBias = 32 | 4

	prefMaxWorkspace = 1
	prefMinAlignA    = 5
	prefMinAlignB    = 6
	prefMinAlignC    = 7
	prefMinAlignD    = 8
)

// heuristicResult mirrors cublasLtMatmulHeuristicResult_t (96 bytes).
type heuristicResult struct {
	algo      [8]uint64 // cublasLtMatmulAlgo_t
	workspace uint64
	state     int32
	waves     float32
	reserved  [4]int32
}

func init() {
	if unsafe.Sizeof(heuristicResult{}) != 96 {
		panic(fmt.Sprintf("cuda: heuristicResult is %d bytes, cublasLtMatmulHeuristicResult_t is 96", unsafe.Sizeof(heuristicResult{})))
	}
}

// DType is a device storage type of GEMM operands and kernel tensors.
type DType int

const (
	F16  DType = 1 // IEEE binary16
	BF16 DType = 2 // bfloat16
	F32  DType = 3 // float32 (conversion kernels only)
)

func (t DType) String() string {
	switch t {
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	case F32:
		return "f32"
	}
	return fmt.Sprintf("DType(%d)", int(t))
}

// Size is the element size in bytes.
func (t DType) Size() int64 {
	if t == F32 {
		return 4
	}
	return 2
}

func (t DType) cudaType() int32 {
	if t == BF16 {
		return cudaR16BF
	}
	return cudaR16F
}

// Epilogue is what a GEMM applies to its fp32 result before rounding.
type Epilogue int

const (
	EpilogueNone     Epilogue = iota // Y = X W^T
	EpilogueBias                     // Y = X W^T + b
	EpilogueGELUBias                 // Y = gelu_tanh(X W^T + b), cuBLASLt's GELU (the tanh approximation)
)

func (e Epilogue) String() string {
	switch e {
	case EpilogueNone:
		return "none"
	case EpilogueBias:
		return "bias"
	case EpilogueGELUBias:
		return "gelu_bias"
	}
	return fmt.Sprintf("Epilogue(%d)", int(e))
}

func (e Epilogue) lt() uint32 {
	switch e {
	case EpilogueBias:
		return epilogueBias
	case EpilogueGELUBias:
		return epilogueGELUBias
	}
	return epilogueDefault
}
