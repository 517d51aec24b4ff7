package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// health exits 0 on a 200, 1 with the answer on anything else or when
// nothing answers, and 2 on a usage error.
func TestHealthProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			_, _ = w.Write([]byte("ok\n"))
		case "/readyz":
			http.Error(w, "not ready: connecting to PostgreSQL", http.StatusServiceUnavailable)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	closed := closedAddr(t)
	tests := []struct {
		name string
		args []string
		code int
		want string // in the output or the error
	}{
		{"200", []string{"--http-addr", addr}, 0, "ok"},
		{"wildcard host is this host", []string{"--http-addr", ":" + port}, 0, "ok"},
		{"503", []string{"--http-addr", addr, "--endpoint", "readyz"}, exitFailure, "/readyz answered 503: not ready: connecting to PostgreSQL"},
		{"404", []string{"--http-addr", addr, "--endpoint", "streaming"}, exitFailure, "/streaming answered 404"},
		{"unreachable", []string{"--http-addr", closed}, exitFailure, "probing http://" + closed + "/healthz"},
		{"unknown endpoint", []string{"--http-addr", addr, "--endpoint", "metrics"}, exitUsage, `--endpoint "metrics": want healthz, readyz, streaming`},
		{"no port", []string{"--http-addr", "localhost"}, exitUsage, `--http-addr "localhost"`},
		{"zero timeout", []string{"--http-addr", addr, "--timeout", "0s"}, exitUsage, "--timeout 0s must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, append([]string{"health"}, tc.args...)...)
			if code := exitStatus(err); code != tc.code {
				t.Fatalf("exit %d (%v), want %d; output:\n%s", code, err, tc.code, out)
			}
			got := out
			if err != nil {
				got = err.Error()
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("%q lacks %q", got, tc.want)
			}
		})
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
