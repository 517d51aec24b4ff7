package replication

import (
	"strings"
	"testing"
)

func TestRowsQueryValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		q    RowsQuery
		want []string // substrings of the error; none: valid
	}{
		{"valid", RowsQuery{Table: "public.outbox", Columns: []string{"id"}}, nil},
		{"valid with where", RowsQuery{Table: "outbox", Columns: []string{"id"}, Where: "id = $1", Args: []any{"x"}, Batch: 10}, nil},
		{"everything wrong", RowsQuery{Table: "a.b.c", Args: []any{1}, Batch: -1},
			[]string{"RowsQuery.Table", "RowsQuery.Columns", "RowsQuery.Args", "RowsQuery.Batch"}},
		{"empty column", RowsQuery{Table: "outbox", Columns: []string{"id", ""}}, []string{"RowsQuery.Columns: a column name is empty"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.q.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %v", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestCloneValues(t *testing.T) {
	in := [][]byte{[]byte("ab"), nil, {}, []byte("c")}
	out := CloneValues(in)
	in[0][0] = 'x'
	if string(out[0]) != "ab" || out[1] != nil || out[2] == nil || len(out[2]) != 0 || string(out[3]) != "c" {
		t.Fatalf("CloneValues = %q", out)
	}
	if grown := append(out[0], 'z'); string(grown) != "abz" || string(out[3]) != "c" {
		t.Fatalf("appending to a cloned value overwrote the next one: %q", out)
	}
}
