// Command sim is a discrete-event model of issue 8's p99-at-50%-load question
// on a CPU of few cores, free of the development machine's noisy neighbours:
// is one compute lane (FIFO, requests merged up to the token budget) better
// for the latency tail than two lanes that share the same cores (processor
// sharing, the second lane kept to short batches while the first runs a long
// one)? Service times follow engine.SequenceCost for all-MiniLM-L6-v2 scaled
// to the CPU bench's measured times (a request alone: about 8.5 ms at 60
// tokens, 70 ms at 512): a batch takes alpha + beta * its cost on the whole
// machine; k batches at once each progress at 1/k of that speed.
//
//	go run ./bench/serve/sim [-load 0.5] [-n 200000] [-seed 1]
//	go run ./bench/serve/sim -device gpu [-loads 25,50,90] [-sigma 0.1] [-fixed-scale 1]
//
// With -device gpu it models the CUDA backend instead (stream.go): batches
// in order on one stream, the eager former of today against closing a batch
// just in time for the stream, overlapping streams, and layer-level
// scheduling (requests join at every layer boundary; not built).
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/raptor-infer/raptor/bench/internal/lenmix"
	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/loader"
)

var cfg = loader.Config{Hidden: 384, Intermediate: 1536, Layers: 6}

const (
	alphaMs = 1.9 // per batch
	budget  = 1024
)

var betaMs float64 // per unit of cost

func cost(n int) float64 { return engine.SequenceCost(cfg, n) }

type req struct {
	arr  float64 // ms
	n    int
	done float64
}

// trace: bench/serve's length mix, Poisson arrivals at rate per ms.
func trace(num int, rate float64, seed uint64) []*req {
	rng := rand.New(rand.NewPCG(seed, 42))
	t := 0.0
	rs := make([]*req, num)
	for i := range rs {
		t += rng.ExpFloat64() / rate
		l := lenmix.Draw(rng, 512)
		rs[i] = &req{arr: t, n: l}
	}
	return rs
}

type bat struct {
	reqs []*req
	work float64 // ms left on the whole machine
	long bool
}

// simulate serves rs with `lanes` lanes sharing the machine; merge: requests
// merged up to the budget (else one per batch); shortOnly: while the other
// lanes run long batches, a lane takes only a short batch (the scheduler's
// ShortOnly rule: cost <= a quarter of a full batch).
//
// slack: the queue is served by least slack first (each request's latest
// start for a latency goal of slackMs: arrival + slackMs - its time alone),
// and a request joins a batch only while every member still finishes within
// the goal (when the anchor cannot, it runs alone).
func simulate(rs []*req, lanes int, merge, shortOnly, slack bool) {
	longCost := float64(budget) * cost(1) / 4
	var q []*req
	var run []*bat
	now, next := 0.0, 0
	form := func() {
		for len(run) < lanes && len(q) > 0 {
			othersLong := len(run) > 0
			for _, b := range run {
				othersLong = othersLong && b.long
			}
			so := shortOnly && lanes > 1 && len(run) == lanes-1 && othersLong
			b := &bat{}
			tok, c := 0, 0.0
			var rest []*req
			if slack {
				slices.SortStableFunc(q, func(x, y *req) int {
					return cmpF(x.arr-alphaMs-betaMs*cost(x.n), y.arr-alphaMs-betaMs*cost(y.n))
				})
			}
			goal := math.Inf(1) // the earliest member's goal
			k := float64(len(run) + 1)
			for _, r := range q {
				rc := cost(r.n)
				ok := (len(b.reqs) == 0 || (merge && tok+r.n <= budget)) && (!so || c+rc <= longCost)
				if ok && slack && len(b.reqs) > 0 {
					fin := now + k*(alphaMs+betaMs*(c+rc))
					ok = fin <= min(goal, r.arr+slackMs)
				}
				if ok && slack && now+k*(alphaMs+betaMs*(c+rc)) <= r.arr+slackMs {
					goal = min(goal, r.arr+slackMs)
				}
				if ok {
					b.reqs = append(b.reqs, r)
					tok += r.n
					c += rc
				} else {
					rest = append(rest, r)
				}
			}
			if len(b.reqs) == 0 {
				return
			}
			q = rest
			b.work = alphaMs + betaMs*c
			b.long = c > longCost
			run = append(run, b)
		}
	}
	for next < len(rs) || len(q) > 0 || len(run) > 0 {
		// the next event: an arrival or the first batch to finish
		tFin := math.Inf(1)
		k := float64(len(run))
		for _, b := range run {
			tFin = min(tFin, now+b.work*k)
		}
		tArr := math.Inf(1)
		if next < len(rs) {
			tArr = rs[next].arr
		}
		t := min(tFin, tArr)
		for _, b := range run {
			b.work -= (t - now) / k
		}
		now = t
		if t == tArr {
			q = append(q, rs[next])
			next++
		} else {
			keep := run[:0]
			for _, b := range run {
				if b.work <= 1e-9 {
					for _, r := range b.reqs {
						r.done = now
					}
				} else {
					keep = append(keep, b)
				}
			}
			run = keep
		}
		form()
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

var slackMs float64

func quant(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

func main() {
	load := flag.Float64("load", 0.5, "offered load, share of the offline capacity")
	num := flag.Int("n", 200000, "requests")
	seed := flag.Uint64("seed", 1, "seed")
	device := flag.String("device", "cpu", "cpu: the 2-core CPU model; gpu: the one-stream GPU model (stream.go)")
	loads := flag.String("loads", "25,50,90", "gpu: offered loads in percent of the best offline throughput")
	sigma := flag.Float64("sigma", 0.1, "gpu: log-normal spread of a forward's device time around the model")
	fixedScale := flag.Float64("fixed-scale", 1, "gpu: the forward's fixed device cost, times this (what a smaller fixed cost would give)")
	flag.Float64Var(&hostMs, "host-ms", hostMs, "gpu: the device worker's host time per batch (serial)")
	flag.Parse()
	if *device == "gpu" {
		var ls []float64
		for _, f := range strings.Split(*loads, ",") {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			if err != nil || v <= 0 {
				fmt.Fprintf(os.Stderr, "sim: bad -loads entry %q\n", f)
				os.Exit(2)
			}
			ls = append(ls, v/100)
		}
		gpuMain(ls, *num, *seed, *sigma, *fixedScale)
		return
	}
	betaMs = (70 - 8.5) / (cost(512) - cost(60))
	// alone: each request by itself on the idle machine
	probe := trace(*num, 1, *seed)
	var alone []float64
	for _, r := range probe {
		alone = append(alone, alphaMs+betaMs*cost(r.n))
	}
	// capacity: the trace packed in arrival order into budget-token batches, back to back
	lens := make([]int, len(probe))
	for i, r := range probe {
		lens[i] = r.n
	}
	capPerMs := float64(len(probe)) / backToBack(lens, budget, func(c float64) float64 { return alphaMs + betaMs*c })
	fmt.Printf("model: alpha %.1f ms/batch, beta %.3g ms/unit; alone p50 %.1f ms, p99 %.1f ms, mean %.1f ms; capacity %.1f req/s; load %.0f%%\n\n",
		alphaMs, betaMs, quant(alone, 0.5), quant(alone, 0.99), mean(alone), capPerMs*1000, *load*100)
	slackMs = 2 * quant(alone, 0.99)
	fmt.Println("| policy | p50 ms | p99 ms | p99 / p99 alone | p99 of long (>384) ms | max ms |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, p := range []struct {
		name                    string
		lanes                   int
		merge, shortOnly, slack bool
	}{
		{"1 lane, merged FIFO (dynamic-1lane)", 1, true, false, false},
		{"2 lanes sharing the cores, merged, ShortOnly (dynamic)", 2, true, true, false},
		{"2 lanes sharing the cores, merged, no ShortOnly", 2, true, false, false},
		{"1 lane, one request per batch FIFO (single)", 1, false, false, false},
		{"1 lane, least slack first, one per batch", 1, false, false, true},
		{"1 lane, least slack first, merged within every member's goal", 1, true, false, true},
		{"2 lanes, least slack first, merged within goals, ShortOnly", 2, true, true, true},
	} {
		rs := trace(*num, capPerMs**load, *seed)
		simulate(rs, p.lanes, p.merge, p.shortOnly, p.slack)
		var lat, long []float64
		for _, r := range rs[len(rs)/20:] { // skip the warm-up
			lat = append(lat, r.done-r.arr)
			if r.n > 384 {
				long = append(long, r.done-r.arr)
			}
		}
		fmt.Printf("| %s | %.1f | %.1f | %.2fx | %.1f | %.1f |\n", p.name, quant(lat, 0.5), quant(lat, 0.99),
			quant(lat, 0.99)/quant(alone, 0.99), quant(long, 0.99), slices.Max(lat))
	}
}

// backToBack is the time (ms) of the requests of lengths lens, in that
// order, packed into batches of at most budget tokens and run one after
// another, a batch of cost c taking batchMs(c).
func backToBack(lens []int, budget int, batchMs func(c float64) float64) float64 {
	total, tok, c := 0.0, 0, 0.0
	for _, n := range lens {
		if tok > 0 && tok+n > budget {
			total += batchMs(c)
			tok, c = 0, 0
		}
		tok += n
		c += cost(n)
	}
	return total + batchMs(c)
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
