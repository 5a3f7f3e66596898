package rpc

import "sync"

// Pool is a fixed set of worker goroutines running queued jobs: control
// messages and the dials they start. It bounds how many run at once.
type Pool struct {
	jobs chan func()
	wg   sync.WaitGroup

	mu     sync.RWMutex // guards closed against Go's send
	closed bool
}

// NewPool starts workers goroutines with a queue of queue jobs.
func NewPool(workers, queue int) *Pool {
	p := &Pool{jobs: make(chan func(), queue)}
	p.wg.Add(workers)
	for range workers {
		go func() {
			defer p.wg.Done()
			for f := range p.jobs {
				f()
			}
		}()
	}
	return p
}

// Go queues f. It returns false when the queue is full or the pool is
// closed; f then does not run.
func (p *Pool) Go(f func()) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return false
	}
	select {
	case p.jobs <- f:
		return true
	default:
		return false
	}
}

// Close lets the queued jobs finish and waits for the workers to exit.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.jobs)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
