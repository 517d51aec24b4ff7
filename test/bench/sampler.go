package main

import (
	"time"
)

// usage is what a process's resources were while a steady load ran: the
// figures a Kubernetes resource request is sized from.
type usage struct {
	// MeanCores is CPU seconds per wall-clock second over the window.
	MeanCores float64
	// PeakCores is the highest one-interval CPU rate in the window.
	PeakCores float64
	// MeanRSSMiB and MaxRSSMiB are the resident set sampled every interval.
	MeanRSSMiB, MaxRSSMiB float64
	Samples               int
}

// sampler reads a process's CPU time and resident set every interval until
// stopped. Where the platform cannot read another process's figures
// (procSample reports false), the result stays zero.
type sampler struct {
	stop chan struct{}
	done chan usage
}

func startSampler(pid int, interval time.Duration) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan usage, 1)}
	go func() { s.done <- sample(pid, interval, s.stop) }()
	return s
}

// finish stops sampling and returns the figures of the window.
func (s *sampler) finish() usage {
	close(s.stop)
	return <-s.done
}

func sample(pid int, interval time.Duration, stop <-chan struct{}) usage {
	var u usage
	cpu0, _, ok := procSample(pid)
	if !ok {
		return u
	}
	start, prevT, prevCPU := time.Now(), time.Now(), cpu0
	var rssSum float64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			if elapsed := prevT.Sub(start).Seconds(); elapsed > 0 {
				u.MeanCores = (prevCPU - cpu0) / elapsed
			}
			if u.Samples > 0 {
				u.MeanRSSMiB = rssSum / float64(u.Samples)
			}
			return u
		case now := <-t.C:
			cpu, rss, ok := procSample(pid)
			if !ok {
				continue
			}
			u.PeakCores = max(u.PeakCores, (cpu-prevCPU)/now.Sub(prevT).Seconds())
			u.MaxRSSMiB = max(u.MaxRSSMiB, rss)
			rssSum += rss
			u.Samples++
			prevT, prevCPU = now, cpu
		}
	}
}
