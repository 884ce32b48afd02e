package main

import "sync"

// volumeLocks serialises operations per volume without ever waiting: a second concurrent
// call on the same volume gets "busy" and the RPC answers Aborted, which the sidecars retry.
// Waiting instead would let a stuck call for one volume pile up callers behind it.
type volumeLocks struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func newVolumeLocks() *volumeLocks { return &volumeLocks{held: map[string]struct{}{}} }

// tryLock takes the lock for id and returns its release function, or ok=false when another
// operation holds it.
func (l *volumeLocks) tryLock(id string) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, busy := l.held[id]; busy {
		return nil, false
	}
	l.held[id] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			delete(l.held, id)
			l.mu.Unlock()
		})
	}, true
}
