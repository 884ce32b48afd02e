package main

import (
	"fmt"
	"path/filepath"
	"time"
)

// startRuns is how many starts each mode's median is taken over.
const startRuns = 11

// managedPrefix is the --managed-nqn-prefix of every node process; the volumes' NQNs are
// the controller's default, nqn.2000-02.com.mikrotik:<volume ID>.
const managedPrefix = "nqn.2000-02.com.mikrotik:pvc-"

// startupFigure measures exec → first successful GetPluginInfo on the socket for the
// production binary as a node plugin and as a controller (against the simulator), and
// reports the slower mode's median.
func startupFigure(bins binaries, work string) figure {
	if bins.driverErr != nil {
		return figStart.na("build failed: %v", bins.driverErr)
	}
	r, err := startRDS(filepath.Join(work, "rds-start"), 0)
	if err != nil {
		return figStart.na("simulator: %v", err)
	}
	defer r.close()
	modes := []struct {
		mode string
		args []string
	}{
		{"node", []string{"--managed-nqn-prefix=" + managedPrefix}},
		{"controller", r.driverArgs()},
	}
	worst, detail := time.Duration(0), ""
	for _, m := range modes {
		d, err := newDriver("start-"+m.mode, filepath.Join(work, "start-"+m.mode))
		if err != nil {
			return figStart.na("%v", err)
		}
		var runs []time.Duration
		for range startRuns {
			if err := d.start(bins.driver, append(d.commonArgs(m.mode), m.args...)); err != nil {
				return figStart.na("%v", err)
			}
			took, err := d.firstIdentity(10 * time.Second)
			stopErr := d.stop()
			if err != nil {
				return figStart.na("--mode=%s: %v", m.mode, err)
			}
			if stopErr != nil {
				return figStart.na("--mode=%s: %v", m.mode, stopErr)
			}
			runs = append(runs, took)
		}
		med := pct(runs, 50)
		worst = max(worst, med)
		detail += fmt.Sprintf("--mode=%s median %s (min %s, max %s); ", m.mode, ms(med), ms(pct(runs, 0)), ms(pct(runs, 100)))
	}
	return figStart.measured(msf(worst), "%sexec → first GetPluginInfo answered over the unix socket, %d starts per mode, production build; the slower mode is shown", detail, startRuns)
}
