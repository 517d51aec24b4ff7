package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// listenError explains a failure to listen on --http-addr.
func listenError(addr string, err error) error {
	hint := ""
	if errors.Is(err, syscall.EADDRINUSE) {
		hint = " (another process on this host listens on it: the application beside this relay, or a second relay)"
	}
	return fmt.Errorf("listening on --http-addr %s: %w%s; set --http-addr (or %s) to a free address such as :%d, or to \"\" to serve no HTTP",
		addr, err, hint, envName("http-addr"), defaultHTTPPort+1)
}

// handler serves /healthz, /readyz and /metrics, and the profiler when asked.
func (m *metrics) handler(profile bool) http.Handler {
	mux := http.NewServeMux()
	if profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, detail := m.readiness()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", detail)
			return
		}
		fmt.Fprintf(w, "ready: %s\n", detail)
	})
	// /streaming tells which instance holds the slot; /readyz whether an
	// instance is healthy. A standby is ready and not streaming.
	mux.HandleFunc("GET /streaming", func(w http.ResponseWriter, _ *http.Request) {
		_, detail := m.readiness()
		if !m.slotHeld.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not streaming: %s\n", detail)
			return
		}
		fmt.Fprintf(w, "streaming: %s\n", detail)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}

// serveHTTP listens on addr and serves until ctx ends. Listening errors are
// usage errors, returned at once, so that a taken port is reported before
// anything is created, with the flag that changes it.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usageError(listenError(addr, err))
	}
	log.Info("serving health and metrics", "addr", ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	return func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving HTTP: %w", err)
		}
		return nil
	}, nil
}
