package replication

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// A connection's failed attempts are reported with the one that tells the
// cause first: the server's answer (a wrong password) ahead of sslmode=prefer's
// refused TLS attempt, and otherwise the last attempt.
func TestLeadWithCause(t *testing.T) {
	tlsRefused := errors.New("127.0.0.1:5432 (127.0.0.1): tls error: server refused TLS connection")
	auth := fmt.Errorf("127.0.0.1:5432 (127.0.0.1): server error: %w", &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "app"`})
	refused1 := errors.New("10.0.0.1:5432 (db): dial error: connection refused")
	refused2 := errors.New("10.0.0.2:5432 (db): dial error: connection refused")
	tests := map[string]struct {
		err       error
		lead      string // the message starts with it
		mentions  []string
		unchanged bool
	}{
		"wrong password after refused TLS": {err: errors.Join(tlsRefused, auth), lead: "127.0.0.1:5432 (127.0.0.1): server error: FATAL: password authentication failed",
			mentions: []string{"also tried: 127.0.0.1:5432 (127.0.0.1): tls error"}},
		"wrapped join": {err: fmt.Errorf("hostname resolving error: %w", errors.Join(tlsRefused, auth)), lead: "127.0.0.1:5432 (127.0.0.1): server error",
			mentions: []string{"tls error"}},
		"no server answer: the last attempt": {err: errors.Join(refused1, refused2), lead: "10.0.0.2:5432", mentions: []string{"also tried: 10.0.0.1:5432"}},
		"one attempt":                        {err: auth, unchanged: true},
		"nothing joined":                     {err: errors.New("boom"), unchanged: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := leadWithCause(tc.err)
			if tc.unchanged {
				if got != tc.err {
					t.Fatalf("leadWithCause changed a single error: %v", got)
				}
				return
			}
			if !strings.HasPrefix(got.Error(), tc.lead) {
				t.Errorf("message %q does not start with %q", got, tc.lead)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(got.Error(), m) {
					t.Errorf("message %q does not mention %q", got, m)
				}
			}
			if !errors.Is(got, tc.err) && got.(*attemptsError).err != tc.err {
				t.Errorf("the original error is lost")
			}
			var pgErr *pgconn.PgError
			if errors.As(tc.err, &pgErr) && !errors.As(got, &pgErr) {
				t.Errorf("the server's error no longer unwraps")
			}
		})
	}
}
