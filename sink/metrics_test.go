package sink

import (
	"reflect"
	"testing"

	"github.com/rcrowley/go-metrics"
)

func TestDiscardMetricsHandsOutNoOps(t *testing.T) {
	r := discardMetrics{}
	real := metrics.NewMeter()
	defer real.Stop()
	tests := []struct {
		name string
		get  func() any
		want any
	}{
		{"meter", func() any { return metrics.GetOrRegisterMeter("m", r) }, metrics.NilMeter{}},
		{"counter", func() any { return metrics.GetOrRegisterCounter("c", r) }, metrics.NilCounter{}},
		{"histogram, as sarama registers it", func() any {
			return r.GetOrRegister("h", func() metrics.Histogram {
				return metrics.NewHistogram(metrics.NewExpDecaySample(1028, 0.015))
			})
		}, metrics.NilHistogram{}},
		{"histogram", func() any { return metrics.GetOrRegisterHistogram("h", r, metrics.NewUniformSample(10)) }, metrics.NilHistogram{}},
		{"gauge", func() any { return metrics.GetOrRegisterGauge("g", r) }, metrics.NilGauge{}},
		{"timer", func() any { return metrics.GetOrRegisterTimer("t", r) }, metrics.NilTimer{}},
		{"another constructor", func() any { return r.GetOrRegister("e", func() metrics.EWMA { return metrics.NilEWMA{} }) }, metrics.NilEWMA{}},
		{"a value", func() any { return r.GetOrRegister("v", real) }, real},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.get(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %T %v, want %T", got, got, tt.want)
			}
		})
	}
	n := 0
	r.Each(func(string, any) { n++ })
	if n != 0 || r.Get("m") != nil || len(r.GetAll()) != 0 {
		t.Fatalf("the registry kept metrics: %d, %v, %v", n, r.Get("m"), r.GetAll())
	}
}

func TestProducerUsesDiscardMetrics(t *testing.T) {
	sc, err := DefaultConfig().sarama()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sc.MetricRegistry.(discardMetrics); !ok {
		t.Fatalf("producer metrics registry is %T", sc.MetricRegistry)
	}
}
