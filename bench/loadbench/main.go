// Command loadbench measures how fast raptor weight files are made ready,
// against HuggingFace from_pretrained of the same checkpoint, in one run on
// one machine.
//
// It saves a random-weight BigBird-base (~128M parameters) with
// transformers to a temporary directory (or takes -hf DIR), converts it with
// the converter into raw and zstd files in f32, f16 and bf16, and times
// loader.Open on each from a warm page cache (the file is read once first):
// raw files are memory-mapped (with and without checksum verification);
// zstd files are decompressed in parallel and verified. Throughput is raw
// weight bytes made ready per second of wall time, and per second of CPU
// time (user + system, all threads): the second is robust to other load on
// the machine, and with W free cores wall time approaches CPU time / W. Then hf_load.py times
// BigBirdModel.from_pretrained on the same safetensors. Output: a Markdown
// table on stdout.
//
//	go run ./bench/loadbench [-reps 5] [-hf DIR] [-keep]
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/raptor-infer/raptor/loader"
	"github.com/raptor-infer/raptor/loader/hf"
)

type variant struct {
	name  string
	dtype loader.DType
	codec loader.Codec
}

var variants = []variant{
	{"f32 raw", loader.F32, loader.CodecNone},
	{"f32 zstd+shuffle", loader.F32, loader.CodecZstdShuffle},
	{"f16 raw", loader.F16, loader.CodecNone},
	{"f16 zstd (no shuffle)", loader.F16, loader.CodecZstd},
	{"f16 zstd+shuffle", loader.F16, loader.CodecZstdShuffle},
	{"bf16 zstd+shuffle", loader.BF16, loader.CodecZstdShuffle},
}

func main() {
	reps := flag.Int("reps", 5, "timed loads of each file (median reported)")
	hfDir := flag.String("hf", "", "HuggingFace checkpoint to use (default: save a random BigBird-base to a temp dir)")
	keep := flag.Bool("keep", false, "keep the temporary directory")
	py := flag.String("python", "python3", "python with torch and transformers")
	skipHF := flag.Bool("skip-hf", false, "do not time from_pretrained")
	flag.Parse()
	script := filepath.Join(sourceDir(), "hf_load.py")

	tmp, err := os.MkdirTemp("", "loadbench")
	check(err)
	if !*keep {
		cleanup = func() { os.RemoveAll(tmp) }
		defer cleanup()
	} else {
		fmt.Fprintln(os.Stderr, "keeping", tmp)
	}
	dir := *hfDir
	if dir == "" {
		dir = filepath.Join(tmp, "hf")
		fmt.Fprintln(os.Stderr, "saving a random BigBird-base with transformers...")
		run(*py, script, "make", dir)
	}
	st, err := os.Stat(filepath.Join(dir, "model.safetensors"))
	check(err)

	fmt.Printf("| file | size | ratio | open, median of %d | min | GB/s ready (median) | CPU time per open (median) | GB/s per CPU-second |\n|---|---|---|---|---|---|---|---|\n", *reps)
	var rawBytes int64
	for _, v := range variants {
		path := filepath.Join(tmp, strings.ReplaceAll(v.name, " ", "_")+".raptor")
		t0 := time.Now()
		res, err := hf.Convert(dir, hf.Options{DType: v.dtype, Writer: loader.WriterOptions{Codec: v.codec}})
		check(err)
		f, err := os.Create(path)
		check(err)
		_, err = res.Writer.WriteTo(f)
		check(err)
		check(f.Close())
		convert := time.Since(t0)
		res = nil
		debug.FreeOSMemory()

		size := warm(path)
		opts := [][]loader.Option{nil}
		labels := []string{v.name}
		if v.codec == loader.CodecNone {
			opts = append(opts, []loader.Option{loader.SkipVerify()})
			labels = []string{v.name + " (mmap + verify CRC)", v.name + " (mmap only)"}
		}
		for k, o := range opts {
			times := make([]time.Duration, *reps)
			var raw int64
			cpus := make([]time.Duration, *reps)
			for i := range times {
				runtime.GC()
				t, c := time.Now(), cpuTime()
				lf, err := loader.Open(path, o...)
				check(err)
				times[i] = time.Since(t)
				cpus[i] = cpuTime() - c
				raw = 0
				for _, n := range lf.Names() {
					ti, _ := lf.Tensor(n)
					raw += ti.RawSize
				}
				check(lf.Close())
			}
			if v.dtype == loader.F32 {
				rawBytes = raw
			}
			med, min := median(times), slices.Min(times)
			cpu := median(cpus)
			fmt.Printf("| %s | %.1f MB | %.3f | %s | %s | %.2f | %s | %.2f |\n", labels[k], float64(size)/1e6, float64(raw)/float64(size),
				ms(med), ms(min), float64(raw)/med.Seconds()/1e9, ms(cpu), float64(raw)/cpu.Seconds()/1e9)
		}
		fmt.Fprintf(os.Stderr, "%s: converted in %.1fs\n", v.name, convert.Seconds())
		debug.FreeOSMemory()
	}
	fmt.Printf("\nsafetensors (float32): %.1f MB, %.1fM parameters\n", float64(st.Size())/1e6, float64(rawBytes)/4e6)
	if !*skipHF {
		warm(filepath.Join(dir, "model.safetensors"))
		out := run(*py, script, "time", dir, fmt.Sprint(*reps))
		var r struct {
			Torch, Transformers string
			Median              float64 `json:"median_s"`
			Min                 float64 `json:"min_s"`
			CPU                 float64 `json:"cpu_s"`
			Touched             float64 `json:"touched_median_s"`
		}
		check(json.Unmarshal(out, &r))
		fmt.Printf("\n| HF BigBirdModel.from_pretrained (torch %s, transformers %s, 2 threads) | %.1f MB | | %s | %s | %.2f | %s | |\n",
			r.Torch, r.Transformers, float64(st.Size())/1e6, ms(time.Duration(r.Median*1e9)), ms(time.Duration(r.Min*1e9)), float64(rawBytes)/r.Median/1e9,
			ms(time.Duration(r.CPU*1e9)))
		fmt.Printf("| HF from_pretrained + read every weight once (p.sum()) | | | %s | | %.2f | | |\n",
			ms(time.Duration(r.Touched*1e9)), float64(rawBytes)/r.Touched/1e9)
	}
}

// warm reads the file once so that it sits in the page cache, and returns its size.
func warm(path string) int64 {
	f, err := os.Open(path)
	check(err)
	defer f.Close()
	n, err := io.Copy(io.Discard, f)
	check(err)
	return n
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	check(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func run(name string, args ...string) []byte {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	check(err)
	return out
}

// sourceDir is this program's directory, where hf_load.py lives.
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "bench/loadbench"
	}
	return filepath.Dir(file)
}

// cleanup removes the temporary directory; check runs it before exiting.
var cleanup = func() {}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		cleanup()
		os.Exit(1)
	}
}
