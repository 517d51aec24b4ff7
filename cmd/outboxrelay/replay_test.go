package main

import (
	"strings"
	"testing"
	"time"
)

// replay refuses contradictory or empty filters before connecting to
// anything, with exit code 2.
func TestReplayFlagValidation(t *testing.T) {
	base := []string{"replay", "--pg-url", "postgres://u@127.0.0.1:1/db", "--brokers", "127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"where and since", []string{"--where", "true", "--since", "1h"}, nil, []string{"--where and --since select rows in different ways"}},
		{"all three", []string{"--where", "true", "--since", "1h", "--ids", "a"}, nil, []string{"--where and --since and --ids"}},
		{"ids from the environment and where", []string{"--where", "true"}, map[string]string{"OUTBOXRELAY_IDS": "a,b"}, []string{"--where and --ids"}},
		{"empty where", []string{"--where", " "}, nil, []string{"--where is empty"}},
		{"empty ids", []string{"--ids", ","}, nil, []string{"--ids names no id"}},
		{"bad since", []string{"--since", "yesterday"}, nil, []string{`--since "yesterday": want a date`}},
		{"every problem at once", []string{"--ids", "", "--since", "x", "--progress-interval", "0s", "--since-column", ""},
			nil, []string{"--since and --ids", "--ids names no id", `--since "x"`, "--progress-interval 0s", "--since-column is empty"}},
		{"run's settings too", []string{"--kafka-retries", "0", "--key-format", "xml"}, nil, []string{"invalid configuration", "kafka-retries", "xml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			out, err := runCLI(t, append(append([]string{}, base...), tt.args...)...)
			if code := exitStatus(err); code != exitUsage {
				t.Fatalf("exit code %d (%v), want %d\n%s", code, err, exitUsage, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026-03-01", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), true},
		{"2026-03-01T12:30:00Z", time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), true},
		{"2026-03-01T12:30:00+02:00", time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC), true},
		{"2026-03-01T12:30:00.25Z", time.Date(2026, 3, 1, 12, 30, 0, 250e6, time.UTC), true},
		{"2026-03-01 12:30:00", time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), true},
		{"2026-03-01T12:30:00", time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), true},
		{"36h", now.Add(-36 * time.Hour), true},
		{"-1h", time.Time{}, false},
		{"0s", time.Time{}, false},
		{"yesterday", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := parseSince(tt.in, now)
		if (err == nil) != tt.ok || !got.Equal(tt.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
