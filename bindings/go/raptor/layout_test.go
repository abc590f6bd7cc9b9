package raptor

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// TestStructLayout compiles bindings/layout/abi_layout.c against
// include/raptor.h with the system C compiler and checks that every Go mirror
// struct has the C struct's size and field offsets, field by field in order.
func TestStructLayout(t *testing.T) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%s) to compile the layout probe: %v", cc, err)
	}
	root := repoRoot(t)
	exe := filepath.Join(t.TempDir(), "abi_layout")
	out, err := exec.Command(cc, "-std=c99", "-Wall", "-Werror", "-I", filepath.Join(root, "include"),
		filepath.Join(root, "bindings", "layout", "abi_layout.c"), "-o", exe).CombinedOutput()
	if err != nil {
		t.Fatalf("compiling the layout probe: %v\n%s", err, out)
	}
	out, err = exec.Command(exe).Output()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]uintptr{}
	offsets := map[string][]uintptr{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[1] == "sizeof" {
			n, _ := strconv.ParseUint(f[2], 10, 64)
			sizes[f[0]] = uintptr(n)
		} else if len(f) == 2 {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			s := f[0][:strings.IndexByte(f[0], '.')]
			offsets[s] = append(offsets[s], uintptr(n))
		}
	}
	mirrors := map[string]reflect.Type{
		"raptor_engine_options_t": reflect.TypeFor[cEngineOptions](),
		"raptor_engine_stats_t":   reflect.TypeFor[cEngineStats](),
		"raptor_model_info_t":     reflect.TypeFor[cModelInfo](),
		"raptor_batch_t":          reflect.TypeFor[cBatch](),
		"raptor_output_t":         reflect.TypeFor[cOutput](),
		"raptor_submit_options_t": reflect.TypeFor[cSubmitOptions](),
		"raptor_device_stats_t":   reflect.TypeFor[cDeviceStats](),
		"raptor_warmup_params_t":  reflect.TypeFor[cWarmupParams](),
	}
	if len(sizes) != len(mirrors) {
		t.Fatalf("probe printed %d structs, the binding mirrors %d", len(sizes), len(mirrors))
	}
	for name, ty := range mirrors {
		if ty.Size() != sizes[name] {
			t.Errorf("%s: Go size %d, C size %d", name, ty.Size(), sizes[name])
		}
		if ty.NumField() != len(offsets[name]) {
			t.Errorf("%s: Go has %d fields, C %d", name, ty.NumField(), len(offsets[name]))
			continue
		}
		for i := range ty.NumField() {
			if got, want := ty.Field(i).Offset, offsets[name][i]; got != want {
				t.Errorf("%s field %d (%s): Go offset %d, C offset %d", name, i, ty.Field(i).Name, got, want)
			}
		}
	}
}

// repoRoot is the repository root: this package is bindings/go/raptor.
func repoRoot(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", "..", ".."))
}
