package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthEndpoints are what health can probe, as run serves them.
func healthEndpoints() []string { return []string{"healthz", "readyz", "streaming"} }

// healthOptions are the health command's flags.
type healthOptions struct {
	httpAddr string
	endpoint string
	timeout  time.Duration
}

func newHealthCmd() *cobra.Command {
	opts := healthOptions{httpAddr: fmt.Sprintf(":%d", defaultHTTPPort), endpoint: "healthz", timeout: 3 * time.Second}
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Probe a running relay's /healthz, /readyz or /streaming; exit 0 when it answers 200",
		Long: `Asks the relay serving --http-addr on this host for one of its endpoints and
exits 0 when it answers 200, 1 otherwise, printing the answer. It takes the same
--http-addr (and OUTBOXRELAY_HTTP_ADDR) as run, so in the relay's own container
it finds the relay without further configuration: the image is distroless and has
no shell, curl or wget, so this is its container health check.

  healthz    the process serves HTTP (liveness)
  readyz     healthy and able to stream or take over (a standby is ready)
  streaming  this instance holds the slot`,
		Example: `  # Docker or docker-compose health check of the relay's container
  outboxrelay health --endpoint readyz
  # which instance holds the slot, with run's --http-addr=:9000
  outboxrelay health --http-addr :9000 --endpoint streaming`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := opts.url()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), opts.timeout)
			defer cancel()
			return probe(ctx, url, cmd.OutOrStdout())
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&opts.httpAddr, "http-addr", opts.httpAddr, "the address run serves on (its --http-addr); a missing or wildcard host is this host")
	fs.StringVar(&opts.endpoint, "endpoint", opts.endpoint, "what to probe: healthz, readyz or streaming")
	fs.DurationVar(&opts.timeout, "timeout", opts.timeout, "how long to wait for the answer")
	return cmd
}

// url is the endpoint's URL on this host, or a usage error.
func (o healthOptions) url() (string, error) {
	var errs []error
	if !slices.Contains(healthEndpoints(), o.endpoint) {
		errs = append(errs, fmt.Errorf("--endpoint %q: want %s", o.endpoint, strings.Join(healthEndpoints(), ", ")))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("--timeout %v must be positive", o.timeout))
	}
	host, port, err := net.SplitHostPort(o.httpAddr)
	if err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: want host:port or :port (%v)", o.httpAddr, err))
	}
	if err := errors.Join(errs...); err != nil {
		return "", usageError(err)
	}
	switch host {
	case "", "0.0.0.0", "::":
		host = "localhost"
	}
	return fmt.Sprintf("http://%s/%s", net.JoinHostPort(host, port), o.endpoint), nil
}

// probe gets url and writes its answer; an answer other than 200 is an
// error carrying it.
func probe(ctx context.Context, url string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError(fmt.Errorf("probing %s: %w", url, err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probing %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return fmt.Errorf("reading the answer of %s: %w", url, err)
	}
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d: %s", url, resp.StatusCode, answer)
	}
	fmt.Fprintln(w, answer)
	return nil
}
