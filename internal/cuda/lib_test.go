package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
)

func TestCandidatesOrder(t *testing.T) {
	env := discoveryEnv{
		libDirs:   []string{"/override"},
		disabled:  map[libKind]bool{},
		sitePaths: func() []string { return []string{"/site"} },
	}
	paths, skip := env.candidates(specNVRTC)
	want := []string{
		"/override/libnvrtc.so.13", "/override/libnvrtc.so.12",
		"libnvrtc.so.13", "libnvrtc.so.12",
		"/usr/local/cuda/lib64/libnvrtc.so.13",
	}
	for i, w := range want {
		if paths[i] != w {
			t.Fatalf("candidate %d = %q, want %q (all: %q)", i, paths[i], w, paths)
		}
	}
	for _, w := range []string{"/site/nvidia/cu13/lib/libnvrtc.so.13", "/site/nvidia/cuda_nvrtc/lib/libnvrtc.so.12"} {
		found := false
		for _, p := range paths {
			found = found || p == w
		}
		if !found {
			t.Errorf("wheel candidate %s missing", w)
		}
	}
	for i, s := range skip {
		if s != "" {
			t.Errorf("candidate %s skipped without the hook: %s", paths[i], s)
		}
	}
	// libcuda never comes from a wheel.
	paths, _ = env.candidates(specCUDA)
	for _, p := range paths {
		if strings.HasPrefix(p, "/site") {
			t.Errorf("libcuda candidate in site-packages: %s", p)
		}
	}
}

func TestLoadErrorListsEverythingTried(t *testing.T) {
	dir := t.TempDir()
	env := discoveryEnv{
		libDirs:   []string{dir},
		disabled:  map[libKind]bool{libCublasLt: true},
		sitePaths: func() []string { return []string{"/site"} },
		open: func(p string) (uintptr, error) {
			return 0, errors.New(p + ": cannot open shared object file")
		},
	}
	_, err := env.load(specCublasLt)
	if status.CodeOf(err) != status.BackendUnavailable {
		t.Fatalf("code %v: %v", status.CodeOf(err), err)
	}
	msg := err.Error()
	paths, _ := env.candidates(specCublasLt)
	for _, p := range paths {
		if !strings.Contains(msg, p) {
			t.Errorf("error does not list %s:\n%s", p, msg)
		}
	}
	for _, want := range []string{
		filepath.Join(dir, "libcublasLt.so.13") + ": not found",
		"libcublasLt.so.13: disabled by " + EnvDisableLibs,
		EnvLibDir,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestLoadOverrideDirWins(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libcublasLt.so.13")
	os.WriteFile(lib, []byte("not really"), 0o644)
	var opened []string
	env := discoveryEnv{
		libDirs:  []string{dir},
		disabled: map[libKind]bool{libCublasLt: true},
		open: func(p string) (uintptr, error) {
			opened = append(opened, p)
			return 42, nil
		},
	}
	l, err := env.load(specCublasLt)
	if err != nil {
		t.Fatal(err)
	}
	if l.path != lib || len(opened) != 1 {
		t.Fatalf("loaded %s after %q", l.path, opened)
	}
}

func TestCurrentEnvParsesHooks(t *testing.T) {
	t.Setenv(EnvLibDir, "/a:/b")
	t.Setenv(EnvDisableLibs, "cublaslt, nvrtc,bogus")
	env := currentEnv()
	if len(env.libDirs) != 2 || env.libDirs[1] != "/b" {
		t.Fatalf("libDirs %q", env.libDirs)
	}
	if !env.disabled[libCublasLt] || !env.disabled[libNVRTC] || env.disabled[libCUDA] {
		t.Fatalf("disabled %v", env.disabled)
	}
}

func TestParsePtxasReport(t *testing.T) {
	log := `ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1' for 'sm_90a'
ptxas info    : Function properties for k1
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem
ptxas info    : Compiling entry function 'k2' for 'sm_90a'
ptxas info    : Function properties for k2
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers
`
	got := ParsePtxasReport(log)
	want := []KernelResources{
		{Name: "k1", Registers: 40, SpillSt: 8, SpillLd: 4, Stack: 16, Smem: 2048},
		{Name: "k2", Registers: 12},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("kernel %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestErrorMapping(t *testing.T) {
	cases := map[int]status.Code{
		errOutOfMemory: status.OutOfMemory, errIllegalAddress: status.DeviceFailed,
		errLaunchFailed: status.DeviceFailed, errNoDevice: status.BackendUnavailable,
		errInvalidValue: status.Internal, errInvalidImage: status.Internal,
	}
	for code, want := range cases {
		if got := driverStatus(code); got != want {
			t.Errorf("driverStatus(%d) = %v, want %v", code, got, want)
		}
	}
	err := callFailed(status.DeviceFailed, &CallError{Lib: "driver", Call: "cuStreamSynchronize", Code: 700,
		Name: "CUDA_ERROR_ILLEGAL_ADDRESS", Desc: "an illegal memory access was encountered"})
	if !IsSticky(err) {
		t.Error("700 not sticky")
	}
	if s := err.Error(); !strings.Contains(s, "cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS (700): an illegal memory access") {
		t.Errorf("message %q", s)
	}
}

func TestArchFor(t *testing.T) {
	for _, c := range []struct {
		ma, mi int
		want   string
	}{{8, 0, "sm_80"}, {8, 6, "sm_86"}, {8, 9, "sm_89"}, {9, 0, "sm_90a"}, {10, 0, "sm_100a"}} {
		if got := archFor(c.ma, c.mi); got != c.want {
			t.Errorf("archFor(%d,%d) = %s, want %s", c.ma, c.mi, got, c.want)
		}
	}
}
