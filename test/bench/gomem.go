package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// goMemory is the Go runtime's view of a driver process's memory, from the go_memstats_*
// gauges on its /metrics: what the anonymous part of its RSS is made of.
type goMemory struct {
	heapInuse, heapIdle, heapReleased, stackInuse, sys, gcSys, otherSys, mspan float64
}

func scrapeGoMemory(url string) (goMemory, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return goMemory{}, err
	}
	defer resp.Body.Close()
	var g goMemory
	fields := map[string]*float64{
		"go_memstats_heap_inuse_bytes": &g.heapInuse, "go_memstats_heap_idle_bytes": &g.heapIdle,
		"go_memstats_heap_released_bytes": &g.heapReleased, "go_memstats_stack_inuse_bytes": &g.stackInuse,
		"go_memstats_sys_bytes": &g.sys, "go_memstats_gc_sys_bytes": &g.gcSys, "go_memstats_other_sys_bytes": &g.otherSys,
		"go_memstats_mspan_inuse_bytes": &g.mspan,
	}
	seen := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := fields[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(value, 64); err != nil {
				return g, fmt.Errorf("%s: %v", sc.Text(), err)
			}
			seen++
		}
	}
	if seen != len(fields) {
		return g, fmt.Errorf("only %d of the %d go_memstats gauges on %s", seen, len(fields), url)
	}
	return g, sc.Err()
}

func (g goMemory) String() string {
	m := func(b float64) string { return fmt.Sprintf("%.1f", b/(1<<20)) }
	return fmt.Sprintf("Go runtime (go_memstats): heap in use %s MiB, heap free but not yet returned to the OS %s MiB, stacks %s MiB, GC and runtime metadata %s MiB; obtained from the OS %s MiB",
		m(g.heapInuse), m(g.heapIdle-g.heapReleased), m(g.stackInuse), m(g.gcSys+g.otherSys+g.mspan), m(g.sys))
}
