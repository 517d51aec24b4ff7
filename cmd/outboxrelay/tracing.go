package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/outboxrelay/outboxrelay/cmd/internal/pipeline"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// tracingFlushTimeout bounds the export of the last spans at exit.
const tracingFlushTimeout = 5 * time.Second

// tracingWanted reads the standard OpenTelemetry variables: spans are
// recorded when an OTLP endpoint is set for traces, the SDK is not disabled
// and the traces exporter is otlp (or unset). Only OTLP over HTTP with
// protobuf is built in; another protocol is refused rather than exported to
// nowhere.
func tracingWanted(env lookupFunc) (bool, error) {
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := get("OTEL_TRACES_EXPORTER"); exp {
	case "", "otlp":
	case "none":
		return false, nil
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: outboxrelay exports spans with otlp only (or none)", exp)
	}
	if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && get("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return false, nil
	}
	// Every span has the stored context as its parent, whose sampled flag
	// the record's traceparent carries: a sampler that decided otherwise
	// would leave consumers' spans under a parent nobody recorded.
	if s := get("OTEL_TRACES_SAMPLER"); s != "" && !strings.HasPrefix(s, "parentbased_") {
		return false, fmt.Errorf("OTEL_TRACES_SAMPLER=%s: outboxrelay's spans follow the sampling decision stored with each event; unset it or use a parentbased_ sampler, and sample in the application", s)
	}
	// The traces variable wins over the general one, as in the SDK.
	k := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if get(k) == "" {
		k = "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	if p := get(k); p != "" && p != "http/protobuf" {
		return false, fmt.Errorf("%s=%s: outboxrelay exports OTLP over http/protobuf only; point the endpoint at the collector's OTLP/HTTP port (4318 by default) and unset %s", k, p, k)
	}
	return true, nil
}

// The batch span processor's queue and batch sizes unless OTEL_BSP_* set
// them. The SDK's defaults (2,048 and 512) drop spans as soon as a backlog
// drains faster than one exporter request of 512 spans at a time carries
// them; these hold a backlog's spans at the cost of memory (a span is about
// 1 KB while it waits).
const (
	defaultSpanQueue = 16384
	defaultSpanBatch = 2048
)

func batchDefaults(env lookupFunc) []sdktrace.BatchSpanProcessorOption {
	// Blocking: the relay's own span queue (pipeline's tracing) is where a
	// span the exporter cannot take is dropped, counted and reported.
	opts := []sdktrace.BatchSpanProcessorOption{sdktrace.WithBlocking()}
	if _, set := env("OTEL_BSP_MAX_QUEUE_SIZE"); !set {
		opts = append(opts, sdktrace.WithMaxQueueSize(defaultSpanQueue))
	}
	if _, set := env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"); !set {
		opts = append(opts, sdktrace.WithMaxExportBatchSize(defaultSpanBatch))
	}
	return opts
}

// startTracing returns the tracer the sessions record producer spans with,
// and the function that flushes and stops it; a nil tracer and a no-op
// when OpenTelemetry is not configured, which costs nothing per event. The
// exporter, the sampler, the batch processor and the resource follow the
// standard OTEL_* variables through the SDK's own handling; service.name
// defaults to outboxrelay.
func startTracing(ctx context.Context, env lookupFunc, log *slog.Logger) (trace.Tracer, func(), error) {
	wanted, err := tracingWanted(env)
	if err != nil || !wanted {
		return nil, func() {}, err
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("starting the OTLP trace exporter: %w", err)
	}
	version, _, _ := readBuildInfo()
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("outboxrelay"), semconv.ServiceVersion(version)),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, nil, fmt.Errorf("reading OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("exporting spans", "err", err.Error())
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, batchDefaults(env)...), sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(pipeline.NewSpanIDs()))
	log.Info("recording a producer span for each event that carries a trace context", "exporter", "otlp/http")
	stop := func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tracingFlushTimeout)
		defer cancel()
		if err := tp.Shutdown(flushCtx); err != nil {
			log.Warn("flushing the last spans", "err", err.Error())
		}
	}
	return tp.Tracer("github.com/outboxrelay/outboxrelay"), stop, nil
}
