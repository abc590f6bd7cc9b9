package cpu

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Pool is a fixed set of worker goroutines. Run hands them a list of
// independent tasks; tasks are taken in index order, each by one worker, and
// a worker runs one task at a time, so per-worker scratch needs no locking.
type Pool struct {
	n    int
	jobs chan *job
	wg   sync.WaitGroup
	once sync.Once
}

type job struct {
	fn    func(worker, task int)
	n     int64
	next  atomic.Int64
	done  sync.WaitGroup
	pmu   sync.Mutex
	panic any
}

// NewPool starts n >= 1 workers.
func NewPool(n int) *Pool {
	n = max(n, 1)
	p := &Pool{n: n, jobs: make(chan *job, 4*n)}
	p.wg.Add(n)
	for w := 0; w < n; w++ {
		go p.work(w)
	}
	return p
}

// Workers is the number of workers.
func (p *Pool) Workers() int { return p.n }

func (p *Pool) work(w int) {
	defer p.wg.Done()
	for j := range p.jobs {
		j.run(w)
	}
}

func (j *job) run(w int) {
	defer j.done.Done()
	defer func() {
		if r := recover(); r != nil {
			j.pmu.Lock()
			if j.panic == nil {
				j.panic = r
			}
			j.pmu.Unlock()
			j.next.Store(j.n) // stop handing out tasks
		}
	}()
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.fn(w, int(i))
	}
}

// Run calls fn(worker, task) for every task in [0, n) on the workers and
// returns when all have returned. A panic in fn is re-raised in the caller.
// Run must not be called from inside a task.
func (p *Pool) Run(n int, fn func(worker, task int)) {
	if n <= 0 {
		return
	}
	j := &job{fn: fn, n: int64(n)}
	helpers := min(n, p.n)
	j.done.Add(helpers)
	for h := 0; h < helpers; h++ {
		p.jobs <- j
	}
	j.done.Wait()
	if j.panic != nil {
		panic(fmt.Sprintf("raptor cpu worker: %v", j.panic))
	}
}

// Close stops the workers after the queued jobs. The pool must not be used
// afterwards.
func (p *Pool) Close() {
	p.once.Do(func() {
		close(p.jobs)
		p.wg.Wait()
	})
}
