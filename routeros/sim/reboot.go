package sim

import (
	"context"
	"errors"
	"time"
)

// Reboot simulates an RDS restart: every SSH connection drops and new ones are refused,
// every export disappears (NVMe/TCP hosts lose their controllers), and after down both come
// back with the same disks. It returns when the RDS is up again, or early with the
// context's error (the RDS then comes back at once).
func (s *Sim) Reboot(ctx context.Context, down time.Duration) error {
	s.srv.dropAll(true)
	defer s.srv.dropAll(false)
	s.mu.Lock()
	var errs []error
	for _, d := range s.disks {
		if d.export {
			errs = append(errs, s.unexport(d))
		}
	}
	s.mu.Unlock()
	t := time.NewTimer(down)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		errs = append(errs, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.disks {
		if d.export {
			errs = append(errs, s.export(d))
		}
	}
	return errors.Join(errs...)
}
