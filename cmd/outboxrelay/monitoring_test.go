package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/outboxrelay/outboxrelay/test/promtool"
)

// monitoringDir holds the alerting rules, their tests, Prometheus's
// configuration and the Grafana dashboard (docs/operations.md, Dashboards
// and alerts).
const monitoringDir = "../../deploy/monitoring"

// The rules are valid, their unit tests pass, and prometheus.yml loads them.
func TestMonitoringRules(t *testing.T) {
	rules := filepath.Join(monitoringDir, "outboxrelay.rules.yml")
	promtool.Run(t, "", "check", "rules", rules)
	promtool.Run(t, "", "test", "rules", filepath.Join(monitoringDir, "outboxrelay.rules.test.yml"))
	promtool.Run(t, "", "check", "config", filepath.Join(monitoringDir, "prometheus.yml"))
}

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// ruleTests is the part of a promtool unit test file the tests read.
type ruleTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readMonitoringYAML(t *testing.T, name string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir, name))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("parsing %s: %v", name, err)
	}
}

// Every alert says what happened and what to do, reads only the relay's
// series (and Prometheus's up), and has a unit test where it fires and one
// where it does not.
func TestMonitoringAlerts(t *testing.T) {
	var rules ruleFile
	readMonitoringYAML(t, "outboxrelay.rules.yml", &rules)
	var tests ruleTests
	readMonitoringYAML(t, "outboxrelay.rules.test.yml", &tests)
	firing, quiet := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname]++
			} else {
				quiet[a.Alertname]++
			}
		}
	}
	known := relayMetricNames(t)
	alerts := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts++
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a summary or a description", r.Alert)
			}
			if firing[r.Alert] == 0 || quiet[r.Alert] == 0 {
				t.Errorf("alert %s: %d firing and %d not-firing test cases, want at least one of each", r.Alert, firing[r.Alert], quiet[r.Alert])
			}
			checkMetricNames(t, "alert "+r.Alert, r.Expr, known, "up")
		}
	}
	if alerts == 0 {
		t.Fatal("no alerting rules read")
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Templating struct {
		List []struct {
			Name string `json:"name"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardVariables are the dashboard's variables and Grafana's interval,
// with values that make its queries plain PromQL.
var dashboardVariables = strings.NewReplacer("$__rate_interval", "5m", "$job", "outboxrelay", "$slot", "outboxrelay")

// Every query of the dashboard reads only series the relay exports, and is
// valid PromQL: promtool checks each, its variables substituted, as a
// recording rule.
func TestMonitoringDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(monitoringDir, "grafana", "outboxrelay.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("parsing the dashboard: %v", err)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	if want := []string{"datasource", "job", "slot"}; !slices.Equal(vars, want) {
		t.Errorf("dashboard variables = %q, want %q", vars, want)
	}
	known := relayMetricNames(t)
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var recorded []rule
	for i, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for j, q := range p.Targets {
			checkMetricNames(t, fmt.Sprintf("panel %q", p.Title), q.Expr, known)
			recorded = append(recorded, rule{Record: fmt.Sprintf("dashboard:panel%d:query%d", i+1, j+1), Expr: dashboardVariables.Replace(q.Expr)})
		}
	}
	// JSON is YAML: promtool reads the rule file as is.
	file, err := json.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recorded}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard.rules.yml")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	out := promtool.Run(t, "", "check", "rules", path)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(recorded)); !strings.Contains(out, want) {
		t.Errorf("promtool check rules on the dashboard's queries: want %q in\n%s", want, out)
	}
}

// relayMetricNames are the metric families a relay exports (TestMetricNames
// pins them).
func relayMetricNames(t *testing.T) []string {
	t.Helper()
	return exportedNames(t, populated(t))
}

var (
	relaySeries = regexp.MustCompile(`\boutboxrelay_[a-z0-9_]+`)
	// selector is a name followed by label matchers or a range: a series.
	selector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)
)

// checkMetricNames fails the test when expr reads a series that is neither
// one of known (a histogram's through its _bucket, _sum, _count) nor one of
// external.
func checkMetricNames(t *testing.T, what, expr string, known []string, external ...string) {
	t.Helper()
	family := func(name string) string {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && slices.Contains(known, base) {
				return base
			}
		}
		return name
	}
	names := relaySeries.FindAllString(expr, -1)
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		names = append(names, m[1])
	}
	if len(names) == 0 {
		t.Errorf("%s reads no series: %s", what, expr)
	}
	slices.Sort(names)
	for _, n := range slices.Compact(names) {
		if !slices.Contains(known, family(n)) && !slices.Contains(external, n) {
			t.Errorf("%s reads %s, which the relay does not export: %s", what, n, expr)
		}
	}
}

// docker-compose.yaml's monitoring profile runs Prometheus and Grafana on
// deploy/monitoring's files: each file it mounts exists, and they stay out
// of a plain `docker compose up`.
func TestComposeMonitoringProfile(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Profiles []string `yaml:"profiles"`
			Volumes  []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("parsing docker-compose.yaml: %v", err)
	}
	for _, name := range []string{"prometheus", "grafana"} {
		svc, ok := compose.Services[name]
		if !ok {
			t.Errorf("docker-compose.yaml has no %s service", name)
			continue
		}
		if !slices.Equal(svc.Profiles, []string{"monitoring"}) {
			t.Errorf("%s: profiles %q, want [monitoring]", name, svc.Profiles)
		}
		if len(svc.Volumes) == 0 {
			t.Errorf("%s mounts nothing", name)
		}
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
				t.Errorf("%s mounts %s: %v", name, src, err)
			}
		}
	}
}
