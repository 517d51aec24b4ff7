package router

import "testing"

// Envelope fields as Debezium 3.6.1 was seen to write them (test/reference,
// set-up envelope), and the precisions it derives from the column type.
func TestAppendEnvelopeField(t *testing.T) {
	tests := []struct {
		name   string
		v      string
		oid    uint32
		typmod int32
		want   string
	}{
		{"timestamptz, default precision 6", "2026-01-02 03:04:05.25+00", oidTimestamptz, -1, `"2026-01-02T03:04:05.250000Z"`},
		{"timestamptz without fraction", "2026-01-02 03:04:05+00", oidTimestamptz, -1, `"2026-01-02T03:04:05.000000Z"`},
		{"timestamptz(3)", "2026-01-02 03:04:05.5+00", oidTimestamptz, 3, `"2026-01-02T03:04:05.500Z"`},
		{"timestamptz(0)", "2026-01-02 03:04:05+00", oidTimestamptz, 0, `"2026-01-02T03:04:05Z"`},
		{"timestamptz in another zone is UTC", "2026-01-02 05:04:05.000001+02", oidTimestamptz, -1, `"2026-01-02T03:04:05.000001Z"`},
		{"timestamp: epoch microseconds", "1999-12-31 23:59:59.250002", oidTimestamp, -1, "946684799250002"},
		{"timestamp(3): epoch milliseconds", "1999-12-31 23:59:59.25", oidTimestamp, 3, "946684799250"},
		{"jsonb is a string", `{"a": 1}`, oidJSONB, -1, `"{\"a\": 1}"`},
		{"uuid is a string", "6f1c0a6e-0000-4000-8000-000000000001", oidUUID, -1, `"6f1c0a6e-0000-4000-8000-000000000001"`},
		{"bigint beyond 2^53 stays exact", "9007199254740993", oidInt8, -1, "9007199254740993"},
		{"boolean", "f", oidBool, -1, "false"},
		{"double", "1e+21", oidFloat8, -1, "1.0E21"},
		{"bytea is base64", `\x00ff80`, oidBytea, -1, `"AP+A"`},
		{"numeric stays a number", "12.50", oidNumeric, -1, "12.50"},
		{"numeric NaN is a string", "NaN", oidNumeric, -1, `"NaN"`},
		{"infinity is its text", "infinity", oidTimestamptz, -1, `"infinity"`},
	}
	for _, tc := range tests {
		got := string(appendEnvelopeField(nil, []byte(tc.v), field{oid: tc.oid, typmod: tc.typmod}))
		if got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
	if got := string(appendEnvelopeField(nil, nil, field{oid: oidText})); got != "null" {
		t.Errorf("NULL: %s, want null", got)
	}
}
