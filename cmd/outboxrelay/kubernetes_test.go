package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// kubernetesDir holds the Kustomize base (two relays) and the sidecar
// overlay (docs/kubernetes.md).
const kubernetesDir = "../../deploy/kubernetes"

// kustomization is the part of a kustomization.yaml the manifests use;
// decoding it strictly rejects any other field, which the test would not
// check.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	Patches []struct {
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
		Patch string `json:"patch"`
	} `json:"patches"`
}

// manifests are a kustomization's objects by kind and name.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
	services    map[string]*corev1.Service
}

func newManifests() *manifests {
	return &manifests{
		deployments: map[string]*appsv1.Deployment{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		services: map[string]*corev1.Service{},
	}
}

// add decodes one YAML document strictly into the typed object of its kind:
// an unknown or misspelt field, a duplicate key or an unknown kind fails.
func (m *manifests) add(doc []byte) error {
	var head struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return fmt.Errorf("reading the kind: %w", err)
	}
	name := head.Metadata.Name
	var obj any
	switch head.Kind {
	case "Deployment":
		obj = put(m.deployments, name)
	case "ConfigMap":
		obj = put(m.configMaps, name)
	case "Secret":
		obj = put(m.secrets, name)
	case "PodDisruptionBudget":
		obj = put(m.pdbs, name)
	case "Service":
		obj = put(m.services, name)
	default:
		return fmt.Errorf("unexpected kind %q", head.Kind)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("decoding %s %s: %w", head.Kind, name, err)
	}
	return nil
}

// put adds a new object of its type under name.
func put[T any](into map[string]*T, name string) *T {
	v := new(T)
	into[name] = v
	return v
}

// addStream decodes every document of a multi-document YAML stream.
func (m *manifests) addStream(b []byte) error {
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		if err := m.add([]byte(doc)); err != nil {
			return err
		}
	}
	return nil
}

// loadKustomization decodes dir's kustomization.yaml strictly, and every
// manifest it lists; a listed directory (a base) is loaded too. Every YAML
// file in dir must be listed.
func loadKustomization(t *testing.T, dir string) (*kustomization, *manifests) {
	t.Helper()
	var k kustomization
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("%s/kustomization.yaml: apiVersion %q kind %q", dir, k.APIVersion, k.Kind)
	}
	m := newManifests()
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			continue // a base, loaded by its own test
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s lists %s: %v", dir, r, err)
		}
		if err := m.addStream(b); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not in %s/kustomization.yaml's resources", base, dir)
		}
	}
	return &k, m
}

// relaySettings is the part of the ConfigMap's relay.yaml the manifests
// depend on.
type relaySettings struct {
	HTTPAddr         string `json:"http-addr"`
	ShutdownTimeout  string `json:"shutdown-timeout"`
	SASLPasswordFile string `json:"kafka-sasl-password-file"`
}

func relayConfig(t *testing.T, cm *corev1.ConfigMap) relaySettings {
	t.Helper()
	var s relaySettings
	if err := yaml.Unmarshal([]byte(cm.Data["relay.yaml"]), &s); err != nil {
		t.Fatalf("ConfigMap %s relay.yaml: %v", cm.Name, err)
	}
	return s
}

func TestKubernetesBase(t *testing.T) {
	_, m := loadKustomization(t, filepath.Join(kubernetesDir, "base"))
	d := m.deployments["outboxrelay"]
	if d == nil || len(m.deployments) != 1 {
		t.Fatalf("want the Deployment outboxrelay alone, have %v", m.deployments)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2 (a streaming relay and a standby)", d.Spec.Replicas)
	}
	ru := d.Spec.Strategy.RollingUpdate
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxSurge == nil || *ru.MaxSurge != intstr.FromInt32(1) || ru.MaxUnavailable == nil || *ru.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("strategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", d.Spec.Strategy)
	}
	pod := &d.Spec.Template.Spec
	if !spreadsAcrossNodes(pod, d.Spec.Template.Labels) {
		t.Error("the relays are not spread across nodes (topologySpreadConstraints on kubernetes.io/hostname, DoNotSchedule)")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, have %d", len(pod.Containers))
	}
	checkRelayPod(t, m, pod, &pod.Containers[0], false)
	checkPDB(t, m, d)
	for _, s := range m.services {
		if !matches(s.Spec.Selector, d.Spec.Template.Labels) {
			t.Errorf("Service %s selects %v, not the relays", s.Name, s.Spec.Selector)
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort != intstr.FromString("ops") {
				t.Errorf("Service %s port %s targets %v, want the ops port", s.Name, p.Name, p.TargetPort)
			}
		}
	}
}

func TestKubernetesSidecar(t *testing.T) {
	dir := filepath.Join(kubernetesDir, "sidecar")
	k, m := loadKustomization(t, dir)
	if !slices.Contains(k.Resources, "../base") {
		t.Fatalf("%s does not build on ../base", dir)
	}
	// The overlay keeps the base's ConfigMap and Secret.
	_, base := loadKustomization(t, filepath.Join(kubernetesDir, "base"))
	m.configMaps, m.secrets = base.configMaps, base.secrets
	if len(m.deployments) != 1 {
		t.Fatalf("want the application's Deployment alone, have %v", m.deployments)
	}
	for _, d := range m.deployments {
		pod := &d.Spec.Template.Spec
		var relay *corev1.Container
		for i := range pod.InitContainers {
			if pod.InitContainers[i].Image == "outboxrelay" {
				relay = &pod.InitContainers[i]
			}
		}
		if relay == nil {
			t.Fatalf("Deployment %s has no relay init container", d.Name)
		}
		if relay.RestartPolicy == nil || *relay.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Error("the relay is not a native sidecar (an init container with restartPolicy Always)")
		}
		if p := relay.StartupProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" ||
			opsPort(relay, p.HTTPGet.Port) != 9847 {
			t.Errorf("startupProbe %+v, want /readyz on the ops port", p)
		}
		checkRelayPod(t, m, pod, relay, true)
		for i := range pod.Containers {
			if r := pod.Containers[i].Resources; r.Requests.Cpu().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("container %s lacks a CPU request or a memory limit", pod.Containers[i].Name)
			}
		}
	}
}

// checkRelayPod checks a relay container and its pod: the config it reads,
// its probes and port, its references, resources and hardening.
func checkRelayPod(t *testing.T, m *manifests, pod *corev1.PodSpec, c *corev1.Container, sidecar bool) {
	t.Helper()
	cm := configMount(t, m, pod, c)
	settings := relayConfig(t, cm)
	_, port, err := splitPort(settings.HTTPAddr)
	if err != nil {
		t.Errorf("relay.yaml http-addr %q: %v", settings.HTTPAddr, err)
	}
	if got := opsPort(c, intstr.FromString("ops")); got != port {
		t.Errorf("container port ops %d, relay.yaml http-addr %q", got, settings.HTTPAddr)
	}
	probes := map[*corev1.Probe]string{c.LivenessProbe: "/healthz"}
	if sidecar {
		// A sidecar's readiness is its pod's: a Kafka stall must not take
		// the application out of service.
		if c.ReadinessProbe != nil {
			t.Error("the sidecar has a readinessProbe")
		}
	} else {
		probes[c.ReadinessProbe] = "/readyz"
	}
	for probe, want := range probes {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || opsPort(c, probe.HTTPGet.Port) != port {
			t.Errorf("want a probe on %s at port %d, have %+v", want, port, probe)
		}
	}
	grace, err := time.ParseDuration(settings.ShutdownTimeout)
	if err != nil {
		t.Errorf("relay.yaml shutdown-timeout %q: %v", settings.ShutdownTimeout, err)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds (%s) is not above shutdown-timeout %v", ptrString(g), grace)
	}
	if path.Dir(settings.SASLPasswordFile) != secretMount(t, m, pod, c, path.Base(settings.SASLPasswordFile)) {
		t.Errorf("kafka-sasl-password-file %s is not a file of the Secret's volume", settings.SASLPasswordFile)
	}
	checkEnv(t, m, c)
	checkHardening(t, pod, c)
}

// configMount is the ConfigMap holding the file --config names, mounted in c.
func configMount(t *testing.T, m *manifests, pod *corev1.PodSpec, c *corev1.Container) *corev1.ConfigMap {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("container %s args %v lack --config", c.Name, c.Args)
	}
	file := c.Args[i+1]
	for _, vm := range c.VolumeMounts {
		v := volume(pod, vm.Name)
		if vm.MountPath != path.Dir(file) || v == nil || v.ConfigMap == nil {
			continue
		}
		cm := m.configMaps[v.ConfigMap.Name]
		if cm == nil {
			t.Fatalf("volume %s names ConfigMap %s, which the base lacks", v.Name, v.ConfigMap.Name)
		}
		if _, ok := cm.Data[path.Base(file)]; !ok {
			t.Fatalf("ConfigMap %s lacks %s", cm.Name, path.Base(file))
		}
		return cm
	}
	t.Fatalf("no ConfigMap is mounted at %s for --config %s", path.Dir(file), file)
	return nil
}

// secretMount is where c mounts the Secret volume holding key, checking the
// Secret and its keys exist.
func secretMount(t *testing.T, m *manifests, pod *corev1.PodSpec, c *corev1.Container, key string) string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		v := volume(pod, vm.Name)
		if v == nil || v.Secret == nil {
			continue
		}
		s := m.secrets[v.Secret.SecretName]
		if s == nil {
			t.Fatalf("volume %s names Secret %s, which the base lacks", v.Name, v.Secret.SecretName)
		}
		for _, item := range v.Secret.Items {
			if _, ok := s.StringData[item.Key]; !ok {
				t.Errorf("volume %s: Secret %s lacks key %s", v.Name, s.Name, item.Key)
			}
			if item.Path == key {
				return vm.MountPath
			}
		}
	}
	return ""
}

// checkEnv checks every Secret and ConfigMap reference of c's environment,
// and GOMEMLIMIT from the memory limit.
func checkEnv(t *testing.T, m *manifests, c *corev1.Container) {
	t.Helper()
	memLimit := false
	for _, e := range c.Env {
		switch vf := e.ValueFrom; {
		case vf == nil:
		case vf.SecretKeyRef != nil:
			if s := m.secrets[vf.SecretKeyRef.Name]; s == nil || s.StringData[vf.SecretKeyRef.Key] == "" {
				t.Errorf("env %s: Secret %s key %s is not in the base", e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
			}
		case vf.ConfigMapKeyRef != nil:
			if cm := m.configMaps[vf.ConfigMapKeyRef.Name]; cm == nil || cm.Data[vf.ConfigMapKeyRef.Key] == "" {
				t.Errorf("env %s: ConfigMap %s key %s is not in the base", e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
			}
		case vf.ResourceFieldRef != nil:
			memLimit = memLimit || e.Name == "GOMEMLIMIT" && vf.ResourceFieldRef.Resource == "limits.memory"
		}
	}
	if !memLimit {
		t.Error("GOMEMLIMIT does not come from limits.memory")
	}
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", r)
	}
}

func checkHardening(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	psc, sc := pod.SecurityContext, c.SecurityContext
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false")
	}
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and the RuntimeDefault seccomp profile", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v: want a read-only root filesystem, no privilege escalation, every capability dropped", sc)
	}
}

func checkPDB(t *testing.T, m *manifests, d *appsv1.Deployment) {
	t.Helper()
	if len(m.pdbs) != 1 {
		t.Fatalf("want one PodDisruptionBudget, have %d", len(m.pdbs))
	}
	for _, p := range m.pdbs {
		if p.Spec.MinAvailable == nil || *p.Spec.MinAvailable != intstr.FromInt32(1) {
			t.Errorf("PodDisruptionBudget minAvailable %v, want 1", p.Spec.MinAvailable)
		}
		if p.Spec.UnhealthyPodEvictionPolicy == nil || *p.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
			t.Error("PodDisruptionBudget unhealthyPodEvictionPolicy is not AlwaysAllow")
		}
		if p.Spec.Selector == nil || !matches(p.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			t.Errorf("PodDisruptionBudget selects %v, not the relays", p.Spec.Selector)
		}
	}
}

func spreadsAcrossNodes(pod *corev1.PodSpec, labels map[string]string) bool {
	for _, c := range pod.TopologySpreadConstraints {
		if c.TopologyKey == "kubernetes.io/hostname" && c.MaxSkew == 1 && c.WhenUnsatisfiable == corev1.DoNotSchedule &&
			c.LabelSelector != nil && matches(c.LabelSelector.MatchLabels, labels) {
			return true
		}
	}
	return false
}

// matches reports whether a non-empty selector selects labels.
func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func volume(pod *corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

// opsPort resolves a probe's port (a number or a port name) to a number.
func opsPort(c *corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

func ptrString(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}

func splitPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("no port")
	}
	p, err := strconv.Atoi(addr[i+1:])
	return addr[:i], p, err
}

// The ConfigMap's relay.yaml passes the relay's own validation (config print
// validates as run does), with the Secret's placeholders where the pod's
// environment and secret volume supply them.
func TestKubernetesConfigMapIsValidConfig(t *testing.T) {
	_, m := loadKustomization(t, filepath.Join(kubernetesDir, "base"))
	d := m.deployments["outboxrelay"]
	if d == nil {
		t.Fatal("no Deployment outboxrelay")
	}
	c := &d.Spec.Template.Spec.Containers[0]
	cm := configMount(t, m, &d.Spec.Template.Spec, c)
	dir := t.TempDir()
	file := filepath.Join(dir, "relay.yaml")
	if err := os.WriteFile(file, []byte(cm.Data["relay.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Setenv(e.Name, m.secrets[e.ValueFrom.SecretKeyRef.Name].StringData[e.ValueFrom.SecretKeyRef.Key])
		}
	}
	// The secret volume's file, at a path of this machine.
	pw := filepath.Join(dir, "kafka-sasl-password")
	if err := os.WriteFile(pw, []byte(m.secrets["outboxrelay"].StringData["kafka-sasl-password"]), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envName("kafka-sasl-password-file"), pw)
	out, err := runCLI(t, "config", "print", "--config", file)
	if err != nil {
		t.Fatalf("the ConfigMap's relay.yaml does not validate: %v\n%s", err, out)
	}
	for _, want := range []string{"pg-url: postgres://relay:*****@db.internal:5432/app?sslmode=verify-full  # env", "http-addr: :9847  # file", "kafka-sasl-mechanism: SCRAM-SHA-512  # file"} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "CHANGE-ME") {
		t.Errorf("config print shows a secret:\n%s", out)
	}
}

// kustomize builds both kustomizations, and what it builds decodes strictly.
// .ci/run installs kustomize; without it the test skips, or fails in CI.
func TestKustomizeBuild(t *testing.T) {
	if _, err := exec.LookPath("kustomize"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kustomize is not on PATH; .ci/run installs it")
		}
		t.Skip("kustomize is not on PATH (go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.1)")
	}
	want := map[string][]string{
		"base":    {"ConfigMap/outboxrelay", "Deployment/outboxrelay", "PodDisruptionBudget/outboxrelay", "Secret/outboxrelay", "Service/outboxrelay"},
		"sidecar": {"ConfigMap/outboxrelay", "Deployment/orders", "Secret/outboxrelay"},
	}
	for dir, kinds := range want {
		t.Run(dir, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command("kustomize", "build", filepath.Join(kubernetesDir, dir))
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("kustomize build: %v\n%s", err, stderr.String())
			}
			m := newManifests()
			if err := m.addStream(out); err != nil {
				t.Fatalf("decoding kustomize's output: %v", err)
			}
			if got := m.names(); !slices.Equal(got, kinds) {
				t.Errorf("kustomize built %v, want %v", got, kinds)
			}
			for _, d := range m.deployments {
				for _, c := range slices.Concat(d.Spec.Template.Spec.InitContainers, d.Spec.Template.Spec.Containers) {
					if strings.HasPrefix(c.Name, "outboxrelay") && c.Image != "ghcr.io/outboxrelay/outboxrelay:latest" {
						t.Errorf("container %s image %s: the images entry did not apply", c.Name, c.Image)
					}
				}
			}
		})
	}
}

// names are the objects as sorted Kind/name.
func (m *manifests) names() []string {
	var out []string
	for n := range m.deployments {
		out = append(out, "Deployment/"+n)
	}
	for n := range m.configMaps {
		out = append(out, "ConfigMap/"+n)
	}
	for n := range m.secrets {
		out = append(out, "Secret/"+n)
	}
	for n := range m.pdbs {
		out = append(out, "PodDisruptionBudget/"+n)
	}
	for n := range m.services {
		out = append(out, "Service/"+n)
	}
	slices.Sort(out)
	return out
}
