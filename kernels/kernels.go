// Package kernels holds raptor's CUDA C++ kernels. The sources are embedded in
// the binary and compiled at run time by NVRTC for the device's exact
// architecture (ARCHITECTURE.md, decision 2); internal/cuda compiles, caches
// and launches them.
//
// Each .cu file is one module (one NVRTC program); .cuh files are headers
// every module may include by bare name. Kernels are written once as
// templates over the 16-bit storage types and instantiated under extern "C"
// names ending in _f16 and _bf16.
package kernels

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.cu *.cuh
var files embed.FS

// Module is one compilation unit: a .cu file and its name without extension.
type Module struct {
	Name   string // e.g. "layernorm"
	File   string // e.g. "layernorm.cu"
	Source string
}

// Modules returns every module, sorted by name.
func Modules() []Module {
	var mods []Module
	ents, _ := fs.ReadDir(files, ".")
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".cu") {
			continue
		}
		b, _ := files.ReadFile(e.Name())
		mods = append(mods, Module{Name: strings.TrimSuffix(e.Name(), ".cu"), File: e.Name(), Source: string(b)})
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name < mods[j].Name })
	return mods
}

// Lookup returns the module with the given name.
func Lookup(name string) (Module, bool) {
	for _, m := range Modules() {
		if m.Name == name {
			return m, true
		}
	}
	return Module{}, false
}

// Headers returns the headers (.cuh) as parallel slices of include names and
// contents, sorted by name, ready for nvrtcCreateProgram.
func Headers() (names, contents []string) {
	ents, _ := fs.ReadDir(files, ".")
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".cuh") {
			continue
		}
		b, _ := files.ReadFile(e.Name())
		names = append(names, e.Name())
		contents = append(contents, string(b))
	}
	return names, contents
}

// Expand returns m's source with every `#include "name.cuh"` of an embedded
// header replaced by the header's text (each header once, as #pragma once
// would), bracketed by #line directives so that compiler messages name the
// right file and line. The result is self-contained: NVRTC needs no header
// arguments and no include path.
func Expand(m Module) (string, error) {
	names, contents := Headers()
	hdr := map[string]string{}
	for i, n := range names {
		hdr[n] = contents[i]
	}
	done := map[string]bool{}
	var b strings.Builder
	var expand func(file, src string, depth int) error
	expand = func(file, src string, depth int) error {
		if depth > 8 {
			return fmt.Errorf("kernels: includes nested too deeply in %s", file)
		}
		lines := strings.Split(src, "\n")
		for i, l := range lines {
			t := strings.TrimSpace(l)
			if t == "#pragma once" {
				b.WriteString("\n")
				continue
			}
			if !strings.HasPrefix(t, "#include") {
				b.WriteString(l)
				b.WriteString("\n")
				continue
			}
			inc := strings.TrimSpace(strings.TrimPrefix(t, "#include"))
			if len(inc) < 2 || inc[0] != '"' || inc[len(inc)-1] != '"' {
				return fmt.Errorf("kernels: %s:%d: only #include \"name.cuh\" of embedded headers is allowed", file, i+1)
			}
			name := inc[1 : len(inc)-1]
			h, ok := hdr[name]
			if !ok {
				return fmt.Errorf("kernels: %s:%d: no embedded header %q", file, i+1, name)
			}
			if !done[name] {
				done[name] = true
				fmt.Fprintf(&b, "#line 1 %q\n", name)
				if err := expand(name, h, depth+1); err != nil {
					return err
				}
			}
			fmt.Fprintf(&b, "#line %d %q\n", i+2, file)
		}
		return nil
	}
	if err := expand(m.File, m.Source, 0); err != nil {
		return "", err
	}
	return b.String(), nil
}
