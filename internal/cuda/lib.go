package cuda

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ebitengine/purego"

	"github.com/raptor-infer/raptor/internal/status"
)

// Environment variables read by library discovery.
const (
	// EnvLibDir is a colon-separated list of directories searched first for
	// every CUDA library (libcuda, libnvrtc, libcublasLt).
	EnvLibDir = "RAPTOR_CUDA_LIB_DIR"
	// EnvDisableLibs is a test hook: a comma-separated list of library kinds
	// ("cuda", "nvrtc", "cublasLt") that discovery may take only from
	// EnvLibDir. Their standard sonames, well-known directories and Python
	// wheel directories are skipped, as if the library were not installed.
	EnvDisableLibs = "RAPTOR_CUDA_DISABLE_LIBS"
)

// libKind names one of the three run-time libraries.
type libKind string

const (
	libCUDA     libKind = "cuda"
	libNVRTC    libKind = "nvrtc"
	libCublasLt libKind = "cublasLt"
)

// libSpec says where a library may be found.
type libSpec struct {
	kind     libKind
	what     string   // human name, for errors
	sonames  []string // tried in order
	wheelSub []string // sub-directories of site-packages holding the wheel's copy
	sysDirs  []string // well-known directories outside the loader's default path
}

var (
	specCUDA = libSpec{
		kind:    libCUDA,
		what:    "CUDA driver (libcuda.so.1)",
		sonames: []string{"libcuda.so.1"},
		sysDirs: []string{"/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib"},
	}
	specNVRTC = libSpec{
		kind:     libNVRTC,
		what:     "NVRTC 13 or 12 (libnvrtc.so.13|.12)",
		sonames:  []string{"libnvrtc.so.13", "libnvrtc.so.12"},
		wheelSub: []string{"nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu12/lib"},
		sysDirs:  []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"},
	}
	specCublasLt = libSpec{
		kind:     libCublasLt,
		what:     "cuBLASLt 13 or 12 (libcublasLt.so.13|.12)",
		sonames:  []string{"libcublasLt.so.13", "libcublasLt.so.12"},
		wheelSub: []string{"nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/cu12/lib"},
		sysDirs:  []string{"/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"},
	}
)

// attempt records one candidate that discovery tried.
type attempt struct {
	path string
	err  string // "" on success
}

// library is an opened shared library.
type library struct {
	handle uintptr
	path   string // the candidate that opened
}

// discoveryEnv is the environment discovery reads; a struct so tests can fake it.
type discoveryEnv struct {
	libDirs   []string
	disabled  map[libKind]bool
	sitePaths func() []string // site-packages directories, computed lazily
	open      func(path string) (uintptr, error)
}

func currentEnv() discoveryEnv {
	env := discoveryEnv{disabled: map[libKind]bool{}, sitePaths: sitePackages, open: dlopen}
	for _, d := range filepath.SplitList(os.Getenv(EnvLibDir)) {
		if d != "" {
			env.libDirs = append(env.libDirs, d)
		}
	}
	for _, k := range strings.Split(os.Getenv(EnvDisableLibs), ",") {
		k = strings.TrimSpace(k)
		for _, kind := range []libKind{libCUDA, libNVRTC, libCublasLt} {
			if strings.EqualFold(k, string(kind)) {
				env.disabled[kind] = true
			}
		}
	}
	return env
}

func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// candidates lists, in order, every path or soname discovery tries for spec.
// Those that the test hook disables come back with a non-empty skip reason.
func (env discoveryEnv) candidates(spec libSpec) (paths []string, skip []string) {
	add := func(p, why string) {
		for _, q := range paths {
			if q == p {
				return
			}
		}
		paths = append(paths, p)
		skip = append(skip, why)
	}
	for _, d := range env.libDirs {
		for _, s := range spec.sonames {
			add(filepath.Join(d, s), "")
		}
	}
	why := ""
	if env.disabled[spec.kind] {
		why = "disabled by " + EnvDisableLibs
	}
	for _, s := range spec.sonames {
		add(s, why)
	}
	for _, d := range spec.sysDirs {
		for _, s := range spec.sonames {
			add(filepath.Join(d, s), why)
		}
	}
	if len(spec.wheelSub) > 0 && env.sitePaths != nil {
		for _, sp := range env.sitePaths() {
			for _, sub := range spec.wheelSub {
				for _, s := range spec.sonames {
					add(filepath.Join(sp, sub, s), why)
				}
			}
		}
	}
	return paths, skip
}

// load opens the first candidate of spec that dlopen accepts. On failure the
// error is a BackendUnavailable *status.Error listing every candidate and why
// it failed.
func (env discoveryEnv) load(spec libSpec) (*library, error) {
	paths, skip := env.candidates(spec)
	var tried []attempt
	for i, p := range paths {
		if skip[i] != "" {
			tried = append(tried, attempt{p, skip[i]})
			continue
		}
		// A path with a slash that does not exist needs no dlopen (and its
		// error message is short).
		if strings.Contains(p, "/") {
			if _, err := os.Stat(p); err != nil {
				tried = append(tried, attempt{p, "not found"})
				continue
			}
		}
		h, err := env.open(p)
		if err == nil {
			return &library{handle: h, path: p}, nil
		}
		tried = append(tried, attempt{p, err.Error()})
	}
	return nil, notFound(spec, tried)
}

func notFound(spec libSpec, tried []attempt) error {
	var b strings.Builder
	fmt.Fprintf(&b, "cuda: cannot load %s; tried:", spec.what)
	for _, a := range tried {
		fmt.Fprintf(&b, "\n  %s: %s", a.path, a.err)
	}
	fmt.Fprintf(&b, "\n(set %s to a directory holding it)", EnvLibDir)
	return status.Errorf(status.BackendUnavailable, "%s", b.String())
}

var (
	siteOnce  sync.Once
	siteCache []string
)

// sitePackages returns directories that may hold NVIDIA's PyPI wheels: the
// active virtualenv, python3's own sys.path (asked once, with a short
// timeout), and common install prefixes. Only existing directories are kept.
func sitePackages() []string {
	siteOnce.Do(func() { siteCache = findSitePackages() })
	return siteCache
}

func findSitePackages() []string {
	var out []string
	seen := map[string]bool{}
	add := func(d string) {
		d = filepath.Clean(d)
		if seen[d] {
			return
		}
		seen[d] = true
		if st, err := os.Stat(filepath.Join(d, "nvidia")); err == nil && st.IsDir() {
			out = append(out, d)
		}
	}
	globs := func(pattern string) {
		m, _ := filepath.Glob(pattern)
		for _, d := range m {
			add(d)
		}
	}
	if v := os.Getenv("VIRTUAL_ENV"); v != "" {
		globs(filepath.Join(v, "lib", "python3*", "site-packages"))
	}
	if py, err := exec.LookPath("python3"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		b, err := exec.CommandContext(ctx, py, "-c", "import sys\nfor p in sys.path: print(p)").Output()
		cancel()
		if err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					add(l)
				}
			}
		}
	}
	home, _ := os.UserHomeDir()
	for _, pat := range []string{
		"/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
		"/usr/lib/python3*/dist-packages", "/usr/lib/python3/dist-packages",
		"/opt/*/.venv/lib/python3*/site-packages", "/opt/conda/lib/python3*/site-packages",
		filepath.Join(home, ".local/lib/python3*/site-packages"),
		filepath.Join(home, ".pyenv/versions/*/lib/python3*/site-packages"),
	} {
		globs(pat)
	}
	return out
}

// bind resolves each symbol of lib into the function pointer beside it. A
// missing symbol is an error naming it (purego.RegisterLibFunc would panic).
func bind(lib *library, syms []symbol) error {
	for _, s := range syms {
		p, err := purego.Dlsym(lib.handle, s.name)
		if err != nil || p == 0 {
			if s.optional {
				continue
			}
			return status.Errorf(status.BackendUnavailable, "cuda: %s lacks symbol %s (too old?)", lib.path, s.name)
		}
		purego.RegisterFunc(s.fn, p)
	}
	return nil
}

// symbol pairs a C symbol name with the Go function variable bound to it.
type symbol struct {
	name     string
	fn       any
	optional bool
}
