package cuda

import (
	"strings"
	"testing"
	"unsafe"
)

// TestCublasLtHostSide checks the cuBLASLt bindings that need no GPU:
// version and status strings, matmul descriptors and their attributes,
// matrix layouts and preferences. It skips where libcublasLt is missing.
func TestCublasLtHostSide(t *testing.T) {
	lt, err := loadCublasLt(currentEnv())
	if err != nil {
		t.Skipf("no cuBLASLt on this machine: %s", strings.SplitN(err.Error(), "\n", 2)[0])
	}
	t.Logf("cuBLASLt %d from %s", lt.cublasLtGetVersion(), lt.lib.path)
	if lt.cublasLtGetVersion() < 120000 {
		t.Errorf("cuBLASLt version %d", lt.cublasLtGetVersion())
	}
	if n := lt.cublasLtGetStatusName(3); n != "CUBLAS_STATUS_ALLOC_FAILED" {
		t.Errorf("status name of 3: %q", n)
	}
	err = lt.check("cublasLtX", 15)
	if err == nil || !strings.Contains(err.Error(), "cublasLtX: CUBLAS_STATUS_NOT_SUPPORTED (15)") {
		t.Errorf("check: %v", err)
	}
	var desc uintptr
	if err := lt.check("create", lt.cublasLtMatmulDescCreate(&desc, cublasCompute32F, cudaR32F)); err != nil {
		t.Fatal(err)
	}
	defer lt.cublasLtMatmulDescDestroy(desc)
	for _, a := range []struct {
		attr int32
		v    uint32
	}{{descTransA, cublasOpT}, {descTransB, cublasOpN}, {descEpilogue, epilogueGELUBias}, {descBiasDType, cudaR16BF}} {
		v := a.v
		if err := lt.check("set", lt.cublasLtMatmulDescSetAttribute(desc, a.attr, unsafe.Pointer(&v), 4)); err != nil {
			t.Errorf("attribute %d: %v", a.attr, err)
		}
	}
	bias := uint64(0xdead00)
	if err := lt.check("set bias", lt.cublasLtMatmulDescSetAttribute(desc, descBiasPtr, unsafe.Pointer(&bias), 8)); err != nil {
		t.Error(err)
	}
	// A wrong size is refused: the binding passes sizes through.
	v := uint32(1)
	if rc := lt.cublasLtMatmulDescSetAttribute(desc, descBiasPtr, unsafe.Pointer(&v), 4); rc == 0 {
		t.Error("4-byte bias pointer accepted")
	}
	var l uintptr
	if err := lt.check("layout", lt.cublasLtMatrixLayoutCreate(&l, cudaR16F, 768, 65536, 768)); err != nil {
		t.Fatal(err)
	}
	lt.cublasLtMatrixLayoutDestroy(l)
	var p uintptr
	if err := lt.check("pref", lt.cublasLtMatmulPreferenceCreate(&p)); err != nil {
		t.Fatal(err)
	}
	ws := uint64(32 << 20)
	if err := lt.check("pref ws", lt.cublasLtMatmulPreferenceSetAttribute(p, prefMaxWorkspace, unsafe.Pointer(&ws), 8)); err != nil {
		t.Error(err)
	}
	lt.cublasLtMatmulPreferenceDestroy(p)
}
