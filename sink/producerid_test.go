package sink

import (
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Apache Kafka answers InitProducerId with COORDINATOR_LOAD_IN_PROGRESS
// until its broker has a block of producer IDs from the controller (seen on
// every freshly started KRaft cluster). That passing state is retried
// within Open; an error that does not pass is returned at once.
func TestInitProducerIDRetriesWhileTheBrokerLoads(t *testing.T) {
	for _, tc := range []struct {
		name      string
		code      int16
		failures  int64
		wantCalls int64
		wantErr   error
	}{
		{"loading", kerr.CoordinatorLoadInProgress.Code, 3, 4, nil},
		{"coordinator not available", kerr.CoordinatorNotAvailable.Code, 1, 2, nil},
		{"loading for too long", kerr.CoordinatorLoadInProgress.Code, 100, initProducerIDAttempts, sarama.ErrOffsetsLoadInProgress},
		{"forbidden", kerr.ClusterAuthorizationFailed.Code, 100, 1, sarama.ErrClusterAuthorizationFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := startKafka(t)
			var calls atomic.Int64
			kc.ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
				kc.KeepControl()
				if calls.Add(1) > tc.failures {
					return nil, nil, false
				}
				resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
				resp.ErrorCode = tc.code
				return resp, nil, true
			})
			cfg := DefaultConfig()
			cfg.Brokers = kc.ListenAddrs()
			sc, err := cfg.sarama()
			if err != nil {
				t.Fatal(err)
			}
			client, err := sarama.NewClient(cfg.Brokers, sc)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			var slept time.Duration
			resp, err := initProducerID(client, func(d time.Duration) { slept += d })
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if err == nil && resp.ProducerID < 0 {
				t.Fatalf("producer ID %d", resp.ProducerID)
			}
			if n := calls.Load(); n != tc.wantCalls {
				t.Errorf("%d InitProducerId requests, want %d", n, tc.wantCalls)
			}
			if slept > 4*time.Second {
				t.Errorf("waited %v in all, want at most about 3.5 s", slept)
			}
		})
	}
}

// Open itself rides out a broker that is still loading.
func TestOpenWaitsForTheProducerIDBlock(t *testing.T) {
	kc := startKafka(t)
	var calls atomic.Int64
	kc.ControlKey(int16(kmsg.InitProducerID), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if calls.Add(1) > 2 {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ErrorCode = kerr.CoordinatorLoadInProgress.Code
		return resp, nil, true
	})
	cfg := DefaultConfig()
	cfg.Brokers = kc.ListenAddrs()
	s, err := Open(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), func(any) {})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	s.Close()
	if n := calls.Load(); n != 3 {
		t.Errorf("%d InitProducerId requests, want 3", n)
	}
}
