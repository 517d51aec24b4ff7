package sink

import (
	"reflect"

	"github.com/rcrowley/go-metrics"
)

// discardMetrics is the producer's metrics registry: it registers nothing
// and hands sarama no-op meters, counters and histograms. sarama updates
// several of them on every request and batch (each update takes a lock,
// and a histogram sample is a heap operation); outboxrelay exports its own
// metrics and never reads sarama's, so they would be pure cost. Unlike
// sarama's documented switch, metrics.UseNilMetrics, it is not a
// process-wide variable.
type discardMetrics struct{}

// GetOrRegister returns the no-op form of the metric m would create. A
// constructor of a kind without a no-op form is called and its metric
// returned unregistered; a metric passed as a value is returned as is.
func (discardMetrics) GetOrRegister(_ string, m any) any {
	switch m.(type) {
	case func() metrics.Meter:
		return metrics.NilMeter{}
	case func() metrics.Counter:
		return metrics.NilCounter{}
	case func() metrics.Histogram:
		return metrics.NilHistogram{}
	case func() metrics.Gauge:
		return metrics.NilGauge{}
	case func() metrics.Timer:
		return metrics.NilTimer{}
	}
	if v := reflect.ValueOf(m); v.Kind() == reflect.Func && v.Type().NumIn() == 0 && v.Type().NumOut() == 1 {
		return v.Call(nil)[0].Interface()
	}
	return m
}

func (discardMetrics) Each(func(string, any))            {}
func (discardMetrics) Get(string) any                    { return nil }
func (discardMetrics) GetAll() map[string]map[string]any { return nil }
func (discardMetrics) Register(string, any) error        { return nil }
func (discardMetrics) RunHealthchecks()                  {}
func (discardMetrics) Unregister(string)                 {}
func (discardMetrics) UnregisterAll()                    {}
