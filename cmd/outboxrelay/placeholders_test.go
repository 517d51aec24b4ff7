package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func envOf(vars map[string]string) lookupFunc {
	return func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
}

// The expected values are what SmallRye Config 3.16 (the one Quarkus 3.33
// uses) returns for the same file and environment.
func TestExpandServer(t *testing.T) {
	env := envOf(map[string]string{"MY_VAR": "val", "A_ENV_KEY": "mapped", "MY_SUFFIX": "VAR", "lower.dotted": "exact", "B_PLAIN": "fromenv", "INDIRECT": "${MY_VAR}!"})
	tests := []struct{ in, want string }{
		{"x", "x"},
		{"${MY_VAR}", "val"},
		{"pre-${MY_VAR}-post", "pre-val-post"},
		{"${MY_VAR}${MY_VAR}", "valval"},
		{"${MY_UNSET:def}", "def"},
		{"12${MY_UNSET:}34", "1234"},
		{"${MY_VAR:def}", "val"},
		{"${MY_VAR:}", "val"},
		{"${MY_UNSET:a:b}", "a:b"},
		{"${MY_UNSET:${MY_VAR}}", "val"},
		{"${MY_UNSET:${MY_UNSET2:z}}", "z"},
		{"${MY_VAR:${MY_UNSET2}}", "val"}, // a default not needed is not evaluated
		{"${MY_${MY_SUFFIX}}", "val"},
		{"${a.env.key}", "mapped"},
		{"${a.env-key}", "mapped"},
		{"${my_var}", "val"},
		{"${my-var}", "val"},
		{"${lower.dotted}", "exact"},
		{"${a.plain}", "x"},
		{"${b.plain}", "fromenv"},
		{"${INDIRECT}", "val!"},
		{"$${routedByValue}", "${routedByValue}"},
		{"outbox.$${routedByValue}.events", "outbox.${routedByValue}.events"},
		{"pre$$post", "pre$post"},
		{"$$", "$"},
		{"$$$", "$$"},
		{"$$$$", "$$"},
		{"$$$${MY_VAR}", "$${MY_VAR}"},
		{`\${MY_VAR}`, "${MY_VAR}"},
		{`\\${MY_VAR}`, `\${MY_VAR}`},
		{`\$$`, "$$"},
		{`$\${MY_VAR}`, "$val"},
		{`C:\\x\\${MY_VAR}`, `C:\\x\${MY_VAR}`},
		{`\t${MY_VAR}\q`, `\tval\q`},
		{"${MY_UNSET:$$}", "$"},
		{`${MY_UNSET:\${x}}`, "${x}"},
		{"${MY_UNSET:a$$b}", "a$b"},
		{"${MY_UNSET:x{y}z}", "x{yz}"},
		{"${MY_UNSET:a}b}", "ab}"},
		{"${MY_VAR}}", "val}"},
		{"{${MY_VAR}", "{val"},
		{"${MY_VAR", "val"},
		{"cost $5", "cost $5"},
		{"x$", "x$"},
		{"$", "$"},
		{`x\`, `x\`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			props := map[string]string{"a.plain": "x", "b.plain": "from-file", "debezium.k": tc.in}
			got, err := expandServer(props, nil, env)
			if err != nil {
				t.Fatalf("expandServer(%q): %v", tc.in, err)
			}
			if got["debezium.k"] != tc.want {
				t.Errorf("expandServer(%q) = %q, want %q", tc.in, got["debezium.k"], tc.want)
			}
		})
	}
}

func TestExpandServerErrors(t *testing.T) {
	env := envOf(map[string]string{"MY_VAR": "hunter2"})
	tests := []struct {
		value string
		want  []string
	}{
		{"${DB_PASSWORD}", []string{`line 7: "debezium.source.database.password": ${DB_PASSWORD} is not set: no environment variable DB_PASSWORD`, "(${DB_PASSWORD:default})"}},
		{"${db.password}", []string{"no environment variable db.password or DB_PASSWORD, and no property db.password"}},
		{"x${MY_VAR}${OTHER}", []string{"${OTHER} is not set"}},
		{"${MY_UNSET:${DEEPER}}", []string{"${DEEPER} is not set"}},
		{"${ MY_VAR }", []string{"(a name not shown"}},
		{"p4ss${w0rd#x", []string{"(a name not shown"}},
		{"${}", []string{"${} has no name"}},
		{"${", []string{"${} has no name"}},
		{"${aes::c2VjcmV0}", []string{"secret key handler"}},
		{"${debezium.source.database.password}", []string{"more than 32 deep"}},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			props := map[string]string{"debezium.source.database.password": tc.value, "debezium.source.database.user": "${MY_VAR}"}
			_, err := expandServer(props, map[string]int{"debezium.source.database.password": 7}, env)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, secret := range []string{"hunter2", "p4ss", "w0rd", "c2VjcmV0"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a value", err)
				}
			}
		})
	}
	// Every problem at once.
	_, err := expandServer(map[string]string{"debezium.a": "${A1}", "debezium.b": "${B1}"}, nil, env)
	if err == nil || !strings.Contains(err.Error(), "${A1}") || !strings.Contains(err.Error(), "${B1}") {
		t.Errorf("err = %v, want both unset variables", err)
	}
	// Properties that double each other stop at a size bound.
	props := map[string]string{"debezium.p0": strings.Repeat("x", 1024)}
	for i := 1; i < 30; i++ {
		props["debezium.p"+itoa(i)] = "${debezium.p" + itoa(i-1) + "}${debezium.p" + itoa(i-1) + "}"
	}
	if _, err := expandServer(props, nil, env); err == nil || !strings.Contains(err.Error(), "more than 1048576 bytes") {
		t.Errorf("err = %v, want the size bound", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// An environment variable named as a property overrides the file, as in
// Debezium Server.
func TestExpandServerEnvironmentOverrides(t *testing.T) {
	env := envOf(map[string]string{"DEBEZIUM_SOURCE_DATABASE_PASSWORD": "from-env"})
	got, err := expandServer(map[string]string{"debezium.source.database.password": "in-file", "debezium.source.database.user": "u"}, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if got["debezium.source.database.password"] != "from-env" || got["debezium.source.database.user"] != "u" {
		t.Errorf("got %v", got)
	}
}

func TestExpandConnect(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.properties")
	if err := os.WriteFile(secrets, []byte("pg.password=s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user"), []byte("relay"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envOf(map[string]string{"PGHOST": "db.internal"})
	props := map[string]string{
		"database.hostname":                         "${env:PGHOST}",
		"database.password":                         "${file:" + secrets + ":pg.password}",
		"database.user":                             "${directory:" + dir + ":user}",
		"transforms.outbox.route.topic.replacement": "outbox.$${routedByValue}.${routedByValue}",
		"slot.name":                                 "plain",
	}
	got, err := expandConnect(props, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"database.hostname": "db.internal", "database.password": "s3cret", "database.user": "relay",
		"transforms.outbox.route.topic.replacement": "outbox.$${routedByValue}.${routedByValue}", "slot.name": "plain"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	bad := map[string]string{
		"database.hostname": "${env:UNSET_HOST}",
		"database.password": "${vault:secret/db:password}",
		"database.user":     "${file:" + secrets + ":pg.user}",
		"database.dbname":   "${file:/nonexistent.properties:x}",
	}
	_, err = expandConnect(bad, map[string]int{"database.hostname": 3}, env)
	for _, w := range []string{`line 3: "database.hostname": ${env:UNSET_HOST}: environment variable UNSET_HOST is not set`,
		"config provider vault is not supported", "the file has no key pg.user", "/nonexistent.properties"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want %q", err, w)
		}
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Errorf("err %q shows a value", err)
	}
}

// The expander never panics, never returns more than its bound, and leaves
// a value without '$' as it is.
func FuzzExpandServer(f *testing.F) {
	for _, s := range []string{"${A}", "${A:b}", "$${x}", `\${x}`, "${A:${B:${C}}}", "${${A}}", "${a::b}", "${", "$$$", "${debezium.k}", "${debezium.j}${debezium.j}"} {
		f.Add(s)
	}
	env := envOf(map[string]string{"A": "1", "B": "${A}", "C": "$$"})
	f.Fuzz(func(t *testing.T, s string) {
		props := map[string]string{"debezium.k": s, "debezium.j": "${debezium.k}${debezium.k}"}
		got, err := expandServer(props, nil, env)
		if err != nil {
			return
		}
		if len(got["debezium.k"]) > maxExpandedBytes {
			t.Fatalf("%d bytes", len(got["debezium.k"]))
		}
		if !strings.Contains(s, "$") && got["debezium.k"] != s {
			t.Fatalf("%q became %q", s, got["debezium.k"])
		}
	})
}

func FuzzExpandConnect(f *testing.F) {
	for _, s := range []string{"${env:A}", "${env:UNSET}", "${x:y:z}", "${routedByValue}", "${a:b}c}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := expandConnect(map[string]string{"k.k": s}, nil, envOf(map[string]string{"A": "1"}))
		if err == nil && !strings.Contains(s, "${") && got["k.k"] != s {
			t.Fatalf("%q became %q", s, got["k.k"])
		}
	})
}
