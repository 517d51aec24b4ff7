package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
)

const pw = "s3cr3t-pw"

// Every form a PostgreSQL connection string can carry a password in is
// masked; the rest of a readable string stays as it was.
func TestMaskConnString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"URL user and password", "postgres://u:" + pw + "@h:5432/db?sslmode=require", "postgres://u:*****@h:5432/db?sslmode=require"},
		{"postgresql scheme", "postgresql://u:" + pw + "@h/db", "postgresql://u:*****@h/db"},
		{"URL password query without a user part", "postgres://h/db?user=u&password=" + pw, "postgres://h/db?user=u&password=*****"},
		{"URL sslpassword query", "postgres://u@h/db?sslkey=/k.pem&sslpassword=" + pw, "postgres://u@h/db?sslkey=/k.pem&sslpassword=*****"},
		{"URL password key in another case", "postgres://h/db?PassWord=" + pw, "postgres://h/db?PassWord=*****"},
		{"URL percent-encoded key", "postgres://h/db?pass%77ord=" + pw, "postgres://h/db?pass%77ord=*****"},
		{"URL encoded password", "postgres://u:p%40ss%2F" + pw + "@h/db", "postgres://u:*****@h/db"},
		{"URL unencoded @ in the password", "postgres://u:p@" + pw + "@h/db", "postgres://u:*****@h/db"},
		{"URL unencoded ? in the password", "postgres://u:12?" + pw + "@h/db", "postgres://u:*****@h/db"},
		{"URL @ in a query value", "postgres://h/db?user=me@srv&password=" + pw, "postgres://h/db?user=me@srv&password=*****"},
		{"URL several hosts", "postgres://u:" + pw + "@h1:5432,h2:5433/db", "postgres://u:*****@h1:5432,h2:5433/db"},
		{"URL without secrets", "postgres://u@h/db?sslmode=verify-full", "postgres://u@h/db?sslmode=verify-full"},
		{"URL unparseable: bad escape", "postgres://u:" + pw + "%zz@h/db", "postgres://*****"},
		{"URL unparseable: / in the password", "postgres://u:" + pw + "/x@h/db", "postgres://*****"},
		{"URL ambiguous: # in the password", "postgres://u:1#" + pw + "@h/db", "postgres://*****"},
		{"URL ambiguous: / after a numeric prefix", "postgres://u:1/" + pw + "@h/db", "postgres://*****"},
		{"URL ambiguous: text port", "postgres://h1:" + pw + ",h2:5432/db", "postgres://*****"},
		{"key=value", "host=h user=u password=" + pw + " dbname=db", "host=h user=u password=***** dbname=db"},
		{"key=value quoted", "host=h password='" + pw + " with \\' quote' dbname=db", "host=h password='*****' dbname=db"},
		{"key=value spaces around =", "host=h password = " + pw + " dbname=db", "host=h password = ***** dbname=db"},
		{"key=value escaped space", `host=h password=a\ ` + pw + " dbname=db", "host=h password=***** dbname=db"},
		{"key=value sslpassword", "host=h sslkey=/k.pem sslpassword=" + pw, "host=h sslkey=/k.pem sslpassword=*****"},
		{"key=value upper case key", "host=h PASSWORD=" + pw, "host=h PASSWORD=*****"},
		{"key=value without secrets", "host=h user=u", "host=h user=u"},
		{"key=value unterminated quote", "host=h password='" + pw, "*****"},
		{"key=value missing =", "host=h " + pw, "*****"},
		{"neither form", "postgres:/u:" + pw + "@h/db", "*****"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := maskConnString(tc.in)
			if got != tc.want {
				t.Errorf("maskConnString(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, pw) {
				t.Errorf("maskConnString(%q) shows the password", tc.in)
			}
		})
	}
}

// config print masks the password of every form, from every source.
func TestConfigPrintMasksPasswords(t *testing.T) {
	for _, in := range []string{
		"host=db user=u password=" + pw + " dbname=app",
		"postgres://db/app?user=u&password=" + pw,
		"postgres://u@db/app?sslcert=/c.pem&sslkey=/k.pem&sslpassword=" + pw,
		"postgres://u:" + pw + "@db:port/app",
		"postgres://u:" + pw + "@db/app",
	} {
		out, _ := runCLI(t, "config", "print", "--pg-url", in, "--brokers", "k:9092")
		if strings.Contains(out, pw) || !strings.Contains(out, "pg-url: ") {
			t.Errorf("config print --pg-url %q:\n%s", in, out)
		}
		t.Setenv("OUTBOXRELAY_PG_URL", in)
		out, _ = runCLI(t, "config", "print", "--brokers", "k:9092")
		if strings.Contains(out, pw) {
			t.Errorf("config print with OUTBOXRELAY_PG_URL=%q:\n%s", in, out)
		}
	}
}

// Validation errors never quote a password, whatever form it was in; pgx's
// own messages miss some (password = x with spaces).
func TestValidationErrorsHidePasswords(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"key=value with spaces", []string{"--pg-url", "host=h password = " + pw + " sslmode=bogus"}},
		{"URL query", []string{"--pg-url", "postgres://h/db?password=" + pw + "&sslmode=bogus"}},
		{"URL sslpassword", []string{"--pg-url", "postgres://h/db?sslpassword=" + pw + "&sslmode=bogus"}},
		{"unparseable URL", []string{"--pg-url", "postgres://u:" + pw + "@h:port/db"}},
		{"password file", []string{"--pg-url", "postgres://h/db?sslmode=bogus", "--pg-password-file", file}},
		{"password file and a password in the URL", []string{"--pg-url", "postgres://u:other@h/db", "--pg-password-file", file}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, append([]string{"config", "print", "--brokers", "k:9092"}, tc.args...)...)
			if err == nil {
				t.Fatalf("no error; output:\n%s", out)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(out, pw) {
				t.Errorf("the password shows:\n%v\n%s", err, out)
			}
		})
	}
}

// --pg-password-file adds the password to the connection string in its own
// form, so that pgx uses it, whatever characters it holds.
func TestPasswordFile(t *testing.T) {
	secret := `p@ss w'o\rd&x=%20?#+`
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte(secret+"\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{
		"postgres://relay@db/app", "postgres://relay@db/app?sslmode=disable", "postgres://relay@db/app?",
		"host=db user=relay dbname=app", "postgresql:///app?host=/run/postgresql",
	} {
		t.Run(url, func(t *testing.T) {
			opts := defaultRunOptions()
			opts.repl.ConnString, opts.pgPassFile, opts.kafka.Brokers = url, file, []string{"k:9092"}
			if err := opts.finish(); err != nil {
				t.Fatal(err)
			}
			cfg, err := pgconn.ParseConfig(opts.repl.ConnString)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Password != secret || cfg.User != "relay" && !strings.Contains(url, "///") {
				t.Errorf("pgx reads user %q, password %q; want relay, %q", cfg.User, cfg.Password, secret)
			}
		})
	}
	for _, bad := range []struct{ url, file, want string }{
		{"postgres://relay:x@db/app", file, "give one"},
		{"host=db password=x", file, "give one"},
		{"postgres://db/app", filepath.Join(t.TempDir(), "missing"), "reading pg-password-file"},
		{"postgres://db/app", emptyFile(t), "is empty"},
	} {
		opts := defaultRunOptions()
		opts.repl.ConnString, opts.pgPassFile, opts.kafka.Brokers = bad.url, bad.file, []string{"k:9092"}
		var ee *exitError
		if err := opts.finish(); !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s with %s: err = %v, want a usage error mentioning %q", bad.url, bad.file, err, bad.want)
		}
	}
	// The operator commands take it too.
	var db dbOptions
	db.repl.ConnString, db.repl.Tables, db.passFile = "postgres://relay@db/app", []string{"public.outbox"}, file
	if err := db.validate(); err != nil {
		t.Fatal(err)
	}
	if cfg, err := pgconn.ParseConfig(db.repl.ConnString); err != nil || cfg.Password != secret {
		t.Errorf("operator command: pgx reads password %v, %v", cfg, err)
	}
}

func emptyFile(t *testing.T) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// The help shows the safe ways to give passwords.
func TestHelpShowsSafePasswordForms(t *testing.T) {
	out, err := runCLI(t, "run", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--pg-password-file", "PGPASSFILE", "OUTBOXRELAY_KAFKA_SASL_PASSWORD", "visible in ps"} {
		if !strings.Contains(out, want) {
			t.Errorf("run --help does not mention %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "user:pass@") {
		t.Errorf("run --help shows a password in a URL:\n%s", out)
	}
}

// Configuration files given by mistake, or with a malformed entry, are
// reported by line and key; no value reaches the message.
func TestConfigFileErrorsHideValues(t *testing.T) {
	const key = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
	pem := "-----BEGIN PRIVATE KEY-----\n" + key + "\n" + key + "AB\n-----END PRIVATE KEY-----\n"
	tests := []struct {
		name, flag, content string
		want                []string
	}{
		{"--config on a PEM key", "--config", pem, []string{"line 1", "want a mapping"}},
		{"--config not YAML", "--config", "pg-url: [" + pw + "\n", []string{"not valid YAML", "line"}},
		{"--config unknown key", "--config", "pg-password: " + pw + "\n", []string{`line 1: unknown key "pg-password"`}},
		{"--config key that is no flag name", "--config", pw + " x: y\n", []string{"line 1: unknown key (not shown"}},
		{"--config bad value of a secret flag", "--config", "pg-url: [" + pw + ", b]\nkafka-retries: x\n", []string{"kafka-retries"}},
		{"--debezium-config on a PEM key", "--debezium-config", pem, []string{"none of its", "keys maps"}},
		{"--debezium-config bad \\u escape", "--debezium-config", "debezium.source.database.hostname=h\ndebezium.source.database.password=" + pw + `\u00zz` + "\n",
			[]string{`line 2: the value of "debezium.source.database.password": bad \u escape`}},
		{"--debezium-config truncated \\u escape", "--debezium-config", "debezium.source.database.password=" + pw + `\u00` + "\n", []string{"line 1", "truncated"}},
		{"--debezium-config JAAS without a password", "--debezium-config", "bootstrap.servers=k:9092\nproducer.override.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" pass=\"" + pw + "\";\n",
			[]string{`sasl.jaas.config: found no password="..."`}},
		{"--debezium-config JAAS unknown module", "--debezium-config", "bootstrap.servers=k:9092\nproducer.override.sasl.jaas.config=com.example.Login required password=\"" + pw + "\";\n",
			[]string{"login module com.example.Login is not supported"}},
		{"--debezium-config JAAS garbled", "--debezium-config", "bootstrap.servers=k:9092\nproducer.override.sasl.jaas.config=" + pw + "\n", []string{"sasl.jaas.config: want"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "conf")
			if err := os.WriteFile(file, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := runCLI(t, "config", "print", "--pg-url", "postgres://h/db", "--brokers", "k:9092", tc.flag, file)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exitUsage {
				t.Fatalf("err = %v, want a usage error; output:\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			for _, secret := range []string{pw, key[:20], "BEGIN"} {
				if strings.Contains(err.Error(), secret) || strings.Contains(out, secret) {
					t.Errorf("%q shows:\n%v\n%s", secret, err, out)
				}
			}
		})
	}
}

// A Debezium file whose lines are not all properties lists those by line
// number only, in the log and in config print.
func TestDebeziumKeysThatAreNoPropertiesAreNotShown(t *testing.T) {
	file := filepath.Join(t.TempDir(), "application.properties")
	content := "debezium.source.slot.name=s\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSj\nmy.own.setting=x\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "print", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--debezium-config", file)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"slot: s  # debezium-config", "# not supported, ignored: line 2 (not a property name; not shown)", "my.own.setting (no outboxrelay equivalent)"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "MIIE") {
		t.Errorf("config print shows the line:\n%s", out)
	}
}

// ssl.endpoint.identification.algorithm= (empty) turns off only the hostname
// check in Java clients: it maps to hostname-only, never to insecure.
func TestDebeziumEndpointIdentification(t *testing.T) {
	tests := []struct {
		value, flag, unsupported string
	}{
		{"", "kafka-tls-skip-hostname-verification", ""},
		{"https", "", ""},
		{"HTTPS", "", ""},
		{"ldap", "", "ssl.endpoint.identification.algorithm"},
	}
	for _, tc := range tests {
		props := map[string]string{
			"debezium.sink.kafka.producer.security.protocol":                     "SSL",
			"debezium.sink.kafka.producer.ssl.endpoint.identification.algorithm": tc.value,
		}
		flags, unsupported, err := mapDebezium(props, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, insecure := flags["kafka-tls-insecure"]; insecure {
			t.Errorf("%q maps to kafka-tls-insecure: %v", tc.value, flags)
		}
		if tc.flag != "" && flags[tc.flag] != "true" {
			t.Errorf("%q: flags %v, want %s", tc.value, flags, tc.flag)
		}
		if tc.flag == "" && flags["kafka-tls-skip-hostname-verification"] != "" {
			t.Errorf("%q: flags %v skip the hostname check", tc.value, flags)
		}
		if got := strings.Join(unsupported, ","); tc.unsupported != "" && !strings.Contains(got, tc.unsupported) {
			t.Errorf("%q: unsupported %v", tc.value, unsupported)
		}
	}
	file := filepath.Join(t.TempDir(), "application.properties")
	if err := os.WriteFile(file, []byte("debezium.sink.kafka.producer.bootstrap.servers=k:9092\n"+
		"debezium.sink.kafka.producer.security.protocol=SSL\ndebezium.sink.kafka.producer.ssl.endpoint.identification.algorithm=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "print", "--pg-url", "postgres://h/db", "--debezium-config", file)
	if err != nil || !strings.Contains(out, `kafka-tls-skip-hostname-verification: "true"  # debezium-config`) || !strings.Contains(out, `kafka-tls-insecure: "false"  # default`) {
		t.Errorf("config print: %v\n%s", err, out)
	}
}

// run logs a warning at start for each unsafe Kafka setting, and none for a
// safe configuration.
func TestUnsafeSettingsAreLogged(t *testing.T) {
	unreachable := []string{"run", "--pg-url", "postgres://u@127.0.0.1:1/db?connect_timeout=2", "--brokers", "127.0.0.1:1", "--http-addr", ""}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"verified TLS and SCRAM", []string{"--kafka-tls", "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"}, nil},
		{"no TLS, no SASL", nil, nil},
		{"insecure TLS", []string{"--kafka-tls", "--kafka-tls-insecure"}, []string{"certificates are not verified"}},
		{"hostname-only", []string{"--kafka-tls", "--kafka-tls-skip-hostname-verification"}, []string{"not their names"}},
		{"PLAIN over plaintext", []string{"--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"}, []string{"clear text"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, append(unreachable, tc.args...)...)
			if err == nil {
				t.Fatalf("run against nothing succeeded:\n%s", out)
			}
			warnings := strings.Count(out, `level=WARN msg="unsafe Kafka connection setting"`)
			if warnings != len(tc.want) {
				t.Errorf("%d warnings, want %d:\n%s", warnings, len(tc.want), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("the log does not mention %q:\n%s", w, out)
				}
			}
		})
	}
}

// A replacement naming a group the regex lacks is a usage error at start
// (exit 2), before anything is connected to; so is an invalid topic guard.
func TestRoutingUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown group", []string{"--route-topic-replacement", "outbox.${nosuchgroup}"}, "${nosuchgroup} names no group"},
		{"unknown number", []string{"--route-topic-regex", "(.*)", "--route-topic-replacement", "evt.$2"}, "$2 names no group"},
		{"invalid topic guard", []string{"--route-topic-allow", "outbox.(("}, "RouteTopicAllow"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"run", "--pg-url", "postgres://u@127.0.0.1:1/db?connect_timeout=2", "--brokers", "127.0.0.1:1", "--http-addr", ""}, tc.args...)
			out, err := runCLI(t, args...)
			var ee *exitError
			if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a usage error mentioning %q; output:\n%s", err, tc.want, out)
			}
		})
	}
	if out, err := runCLI(t, "config", "print", "--pg-url", "postgres://h/db", "--brokers", "k:9092", "--route-topic-allow", `outbox\.event\.(Order|Customer)`); err != nil {
		t.Fatalf("a valid topic guard: %v\n%s", err, out)
	}
}

// schema's output runs in psql as it is: everything but the DDL is an SQL
// comment.
func TestSchemaIsRunnableSQL(t *testing.T) {
	out, err := runCLI(t, "schema")
	if err != nil {
		t.Fatal(err)
	}
	var statements []string
	for _, line := range strings.Split(out, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "--") && !strings.HasPrefix(line, " ") && !strings.HasPrefix(l, ")") {
			statements = append(statements, l)
		}
	}
	if len(statements) != 2 || !strings.HasPrefix(statements[0], "CREATE TABLE") || !strings.HasPrefix(statements[1], "CREATE PUBLICATION") {
		t.Errorf("statements outside comments: %q\n%s", statements, out)
	}
	if !strings.Contains(out, "-- INSERT INTO") {
		t.Errorf("the writer example is missing:\n%s", out)
	}
}

// Whatever the password, pgx reads back what --pg-password-file added, and
// config print does not show it.
func FuzzPasswordRoundTrip(f *testing.F) {
	f.Add(pw)
	f.Add(`p@ss w'o\rd&x=%20?#+`)
	f.Fuzz(func(t *testing.T, secret string) {
		if strings.ContainsAny(secret, "\x00\r\n") || !utf8.ValidString(secret) || len(secret) < 4 || strings.Contains(mask, secret) {
			return
		}
		for _, base := range []string{"postgres://relay@db:5432/app?sslmode=disable", "postgres://relay@db/app", "host=db user=relay dbname=app sslmode=disable"} {
			if strings.Contains(base, secret) {
				continue
			}
			cs, err := withPassword(base, secret)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := pgconn.ParseConfig(cs)
			if err != nil {
				t.Fatalf("%q: %v", cs, err)
			}
			if cfg.Password != secret {
				t.Fatalf("pgx reads %q from %q, want %q", cfg.Password, cs, secret)
			}
			if masked := maskConnString(cs); strings.Contains(masked, secret) {
				t.Fatalf("maskConnString(%q) = %q", cs, masked)
			}
		}
	})
}

// connSecrets' spans are in order, apart and inside the string, for any
// input.
func FuzzConnSecrets(f *testing.F) {
	for _, s := range []string{"postgres://u:p@h/db?password=x&sslpassword=y", "host=h password='a b' sslpassword=c", "postgres://u:1?x@h/db?pass%77ord=z", "password='"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		spans, ok := connSecrets(s)
		last := 0
		for _, sp := range spans {
			if !ok || sp[0] < last || sp[1] < sp[0] || sp[1] > len(s) {
				t.Fatalf("connSecrets(%q) = %v, %v", s, spans, ok)
			}
			last = sp[1]
		}
		_ = maskConnString(s)
		_ = connPasswords(s)
	})
}
