package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Broker is a Kafka cluster a test runs against: kfake's in-process one
// (*kfake.Cluster, from StartKafka) or Apache Kafka (*RealKafka, from
// StartRealKafka).
type Broker interface {
	// ListenAddrs returns the host:port of every broker.
	ListenAddrs() []string
	// Close stops the brokers and removes what they stored.
	Close()
}

// KafkaKindEnv names the environment variable that chooses the broker kind
// of a whole test package: "real" runs it against Apache Kafka; empty or
// "kfake" against kfake.
const KafkaKindEnv = "OUTBOXRELAY_KAFKA"

// RealKafkaRequested reports whether OUTBOXRELAY_KAFKA=real.
func RealKafkaRequested() bool { return os.Getenv(KafkaKindEnv) == "real" }

// RealKafkaOptions tunes an Apache Kafka cluster.
type RealKafkaOptions struct {
	// Nodes is the number of KRaft nodes, each a broker and a controller;
	// 1 by default. With 3 or more, topics are replicated to 3 nodes with
	// min.insync.replicas=2.
	Nodes int
	// Config holds extra server.properties lines for every node, name to
	// value; they override the harness's settings.
	Config map[string]string
	// Secure adds a client listener with TLS, SASL/SCRAM, ACLs or all three.
	Secure *KafkaSecurity
	// JVMOptions replace the defaults (a 384 MiB heap, the serial collector,
	// the client compiler only: quick to start and light on 2 cores).
	JVMOptions []string
}

// KafkaSecurity is the SECURE listener of a RealKafka (SecureAddrs). The
// PLAINTEXT listener (ListenAddrs) stays open for the harness and the
// tests' own clients, whose principal, User:ANONYMOUS, is a super user.
type KafkaSecurity struct {
	// TLS serves the listener with a certificate for 127.0.0.1 signed by a
	// throwaway CA (RealKafka.CAFile).
	TLS bool
	// SCRAM turns on SASL with SCRAM-SHA-256 and SCRAM-SHA-512 for these
	// users, name to password, created when the storage is formatted.
	SCRAM map[string]string
	// ACLs turns on the StandardAuthorizer: other principals get only what
	// ACLs grant them.
	ACLs bool
}

// protocol is the listener's security protocol.
func (s *KafkaSecurity) protocol() string {
	switch {
	case s.TLS && s.SCRAM != nil:
		return "SASL_SSL"
	case s.SCRAM != nil:
		return "SASL_PLAINTEXT"
	case s.TLS:
		return "SSL"
	}
	return "PLAINTEXT"
}

// RealKafka is an Apache Kafka cluster in KRaft combined mode: one JVM per
// node, every node a broker and a controller, listening on free loopback
// ports, storing in a temporary directory. Nodes are numbered from 0; node i
// has node.id i+1.
type RealKafka struct {
	Dir string
	// CAFile is the PEM CA certificate that signs the SECURE listener's
	// certificate (KafkaSecurity.TLS).
	CAFile string
	lib    string
	jvm    []string
	secure *KafkaSecurity
	nodes  []*kafkaNode
}

type kafkaNode struct {
	id         int32 // node.id
	port, ctrl int   // client and controller listener ports
	securePort int   // the SECURE listener's port, when there is one
	dir        string
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{} // closed when cmd has exited
}

var (
	libOnce sync.Once
	libDir  string
	libErr  error
)

// KafkaLib returns the folder of the Kafka broker's jars:
// $OUTBOXRELAY_KAFKA_LIB, or what test/kafka/fetch.sh prints (it fetches
// them from Maven Central into a cache folder the first time).
func KafkaLib() (string, error) {
	libOnce.Do(func() {
		if libDir = os.Getenv("OUTBOXRELAY_KAFKA_LIB"); libDir != "" {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "kafka", "fetch.sh")
		var stderr strings.Builder
		cmd := exec.Command("bash", script)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			libErr = fmt.Errorf("fetching the Kafka broker with %s: %w\n%s", script, err, stderr.String())
			return
		}
		libDir = strings.TrimSpace(string(out))
	})
	if libErr != nil {
		return "", libErr
	}
	if jars, _ := filepath.Glob(filepath.Join(libDir, "kafka_2.13-*.jar")); len(jars) == 0 {
		return "", fmt.Errorf("no Kafka broker (kafka_2.13-*.jar) in %s", libDir)
	}
	return libDir, nil
}

// StartRealKafka formats and starts an Apache Kafka cluster and waits until
// every broker answers metadata requests. Close stops it.
func StartRealKafka(ctx context.Context, opts RealKafkaOptions) (*RealKafka, error) {
	if _, err := exec.LookPath("java"); err != nil {
		return nil, errors.New("java not found: Apache Kafka needs a JDK 17 or newer")
	}
	lib, err := KafkaLib()
	if err != nil {
		return nil, err
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	dir, err := os.MkdirTemp("", "outboxrelay-kafka-")
	if err != nil {
		return nil, fmt.Errorf("creating the Kafka directory: %w", err)
	}
	k := &RealKafka{Dir: dir, lib: lib, jvm: opts.JVMOptions, secure: opts.Secure}
	if k.jvm == nil {
		k.jvm = []string{"-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"}
	}
	if err := k.configure(opts); err != nil {
		k.Close()
		return nil, err
	}
	if err := k.format(ctx); err != nil {
		k.Close()
		return nil, err
	}
	for i := range k.nodes {
		if err := k.launch(i); err != nil {
			k.Close()
			return nil, err
		}
	}
	if err := k.waitBrokers(ctx, 90*time.Second, k.nodeIDs()...); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// configure picks the ports and writes each node's server.properties and
// the log4j2 configuration.
func (k *RealKafka) configure(opts RealKafkaOptions) error {
	perNode := 2 // client and controller listeners
	if k.secure != nil {
		perNode = 3
	}
	ports, err := freePorts(perNode * opts.Nodes)
	if err != nil {
		return err
	}
	for i := range opts.Nodes {
		p := ports[perNode*i:]
		n := &kafkaNode{id: int32(i + 1), port: p[0], ctrl: p[1], dir: filepath.Join(k.Dir, fmt.Sprintf("node%d", i))}
		if k.secure != nil {
			n.securePort = p[2]
		}
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return err
		}
		k.nodes = append(k.nodes, n)
	}
	var voters []string
	for _, n := range k.nodes {
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", n.id, n.ctrl))
	}
	rf, isr := 1, 1
	if len(k.nodes) >= 3 {
		rf, isr = 3, 2
	}
	if k.secure != nil && k.secure.TLS {
		if err := k.writeCerts(); err != nil {
			return err
		}
	}
	for _, n := range k.nodes {
		props := map[string]string{
			"process.roles":                                    "broker,controller",
			"node.id":                                          strconv.Itoa(int(n.id)),
			"controller.quorum.voters":                         strings.Join(voters, ","),
			"listeners":                                        fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", n.port, n.ctrl),
			"advertised.listeners":                             fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", n.port),
			"controller.listener.names":                        "CONTROLLER",
			"inter.broker.listener.name":                       "PLAINTEXT",
			"listener.security.protocol.map":                   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"log.dirs":                                         filepath.Join(n.dir, "data"),
			"num.partitions":                                   "3", // as kfake's default in StartKafka
			"default.replication.factor":                       strconv.Itoa(rf),
			"min.insync.replicas":                              strconv.Itoa(isr),
			"offsets.topic.replication.factor":                 strconv.Itoa(rf),
			"offsets.topic.num.partitions":                     "3",
			"transaction.state.log.replication.factor":         strconv.Itoa(rf),
			"transaction.state.log.min.isr":                    strconv.Itoa(isr),
			"transaction.state.log.num.partitions":             "3",
			"share.coordinator.state.topic.replication.factor": strconv.Itoa(rf),
			"share.coordinator.state.topic.min.isr":            strconv.Itoa(isr),
			"group.initial.rebalance.delay.ms":                 "0",
			"num.network.threads":                              "2",
			"num.io.threads":                                   "2",
			"num.recovery.threads.per.data.dir":                "1",
			"background.threads":                               "2",
			// A killed node is fenced, and its partitions led elsewhere,
			// within seconds rather than the default 9.
			"broker.heartbeat.interval.ms": "500",
			"broker.session.timeout.ms":    "3000",
		}
		if k.secure != nil {
			maps.Copy(props, k.secureProps(n))
		}
		maps.Copy(props, opts.Config)
		if err := writeProperties(filepath.Join(n.dir, "server.properties"), props); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(k.Dir, "log4j2.properties"), []byte(log4j2Config), 0o644)
}

// freePorts returns n distinct free loopback ports: every one is held until
// all are found, so that none is handed out twice.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// log4j2Config sends the broker's log to standard output (the node's
// kafka.log), without the per-request and per-partition chatter.
const log4j2Config = `status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.log.name = kafka.log
logger.log.level = warn
logger.storage.name = org.apache.kafka.storage
logger.storage.level = warn
`

func writeProperties(path string, props map[string]string) error {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(props)) {
		fmt.Fprintf(&b, "%s=%s\n", name, props[name])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// format writes every node's storage metadata with one new cluster ID
// (kafka-storage.sh format), the nodes in parallel.
func (k *RealKafka) format(ctx context.Context) error {
	id, err := clusterID()
	if err != nil {
		return err
	}
	errs := make([]error, len(k.nodes))
	var wg sync.WaitGroup
	for i, n := range k.nodes {
		wg.Go(func() {
			args := append(slices.Clone(k.jvm), "-cp", filepath.Join(k.lib, "*"),
				"-Dlog4j2.configurationFile="+filepath.Join(k.Dir, "log4j2.properties"),
				"kafka.tools.StorageTool", "format", "--cluster-id", id,
				"--config", filepath.Join(n.dir, "server.properties"), "--ignore-formatted")
			if k.secure != nil {
				for _, user := range slices.Sorted(maps.Keys(k.secure.SCRAM)) {
					for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512"} {
						args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", mech, user, k.secure.SCRAM[user]))
					}
				}
			}
			out, err := exec.CommandContext(ctx, "java", args...).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("formatting Kafka node %d's storage: %w\n%s", n.id, err, lastLines(string(out), 15))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clusterID returns a random Kafka cluster ID: 16 bytes, URL-safe base64.
func clusterID() (string, error) {
	for {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		if id := base64.RawURLEncoding.EncodeToString(b); !strings.HasPrefix(id, "-") {
			return id, nil
		}
	}
}

// launch starts node i's JVM, its output appended to the node's kafka.log.
func (k *RealKafka) launch(i int) error {
	n := k.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("kafka node %d is running", n.id)
	}
	logf, err := os.OpenFile(filepath.Join(n.dir, "kafka.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append(slices.Clone(k.jvm), "-cp", filepath.Join(k.lib, "*"),
		"-Dlog4j2.configurationFile="+filepath.Join(k.Dir, "log4j2.properties"),
		"kafka.Kafka", filepath.Join(n.dir, "server.properties"))
	cmd := exec.Command("java", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The JVM dies with the test process, even when that is killed.
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting Kafka node %d: %w", n.id, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	n.cmd, n.done = cmd, done
	return nil
}

func (k *RealKafka) nodeIDs() []int32 {
	var ids []int32
	for _, n := range k.nodes {
		ids = append(ids, n.id)
	}
	return ids
}

// waitBrokers waits until a metadata request lists every broker of ids,
// through any running node.
func (k *RealKafka) waitBrokers(ctx context.Context, timeout time.Duration, ids ...int32) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = k.checkBrokers(ctx, ids); last == nil {
			return nil
		}
		for i, n := range k.nodes {
			if slices.Contains(ids, n.id) && !k.Running(i) {
				return fmt.Errorf("kafka node %d exited while starting; its log ends:\n%s", n.id, k.LogTail(i, 40))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka brokers %v did not come up within %v (%v); node logs in %s", ids, timeout, last, k.Dir)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (k *RealKafka) checkBrokers(ctx context.Context, ids []int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...), kgo.DialTimeout(time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := kadm.NewClient(cl).BrokerMetadata(rctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !slices.ContainsFunc(m.Brokers, func(b kadm.BrokerDetail) bool { return b.NodeID == id }) {
			return fmt.Errorf("broker %d is not in the metadata yet", id)
		}
	}
	return nil
}

// SecureAddrs returns every node's SECURE listener address
// (RealKafkaOptions.Secure).
func (k *RealKafka) SecureAddrs() []string {
	var out []string
	for _, n := range k.nodes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", n.securePort))
	}
	return out
}

// ListenAddrs returns every node's client address, stopped ones included.
func (k *RealKafka) ListenAddrs() []string {
	var out []string
	for _, n := range k.nodes {
		out = append(out, fmt.Sprintf("127.0.0.1:%d", n.port))
	}
	return out
}

// Nodes returns the number of nodes.
func (k *RealKafka) Nodes() int { return len(k.nodes) }

// NodeID returns node i's node.id, its broker ID in metadata.
func (k *RealKafka) NodeID(i int) int32 { return k.nodes[i].id }

// Index returns the index of the node whose node.id is id, or -1.
func (k *RealKafka) Index(id int32) int {
	return slices.IndexFunc(k.nodes, func(n *kafkaNode) bool { return n.id == id })
}

// Running reports whether node i's JVM is running.
func (k *RealKafka) Running(i int) bool {
	n := k.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Kill ends node i with SIGKILL, as a crash would, and waits for it.
func (k *RealKafka) Kill(i int) error { return k.halt(i, syscall.SIGKILL, 10*time.Second) }

// Stop shuts node i down cleanly (SIGTERM: controlled shutdown, leadership
// moved first) and waits for it, killing it after 60 s.
func (k *RealKafka) Stop(i int) error { return k.halt(i, syscall.SIGTERM, 60*time.Second) }

func (k *RealKafka) halt(i int, sig syscall.Signal, timeout time.Duration) error {
	n := k.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(timeout):
		_ = n.cmd.Process.Kill()
		<-n.done
		if sig != syscall.SIGKILL {
			return fmt.Errorf("kafka node %d did not stop within %v: killed", n.id, timeout)
		}
	}
	n.cmd = nil
	return nil
}

// Restart starts nodes again, after Kill or Stop, on the same ports and
// storage, and waits until metadata lists them. Nodes that together are a
// majority of the controllers must be restarted in one call.
func (k *RealKafka) Restart(ctx context.Context, nodes ...int) error {
	var ids []int32
	for _, i := range nodes {
		if err := k.halt(i, syscall.SIGKILL, 10*time.Second); err != nil {
			return err
		}
		if err := k.launch(i); err != nil {
			return err
		}
		ids = append(ids, k.nodes[i].id)
	}
	return k.waitBrokers(ctx, 90*time.Second, ids...)
}

// Close kills every node and removes the cluster's directory.
func (k *RealKafka) Close() {
	for i := range k.nodes {
		_ = k.Kill(i)
	}
	os.RemoveAll(k.Dir)
}

// LogTail returns the last lines of node i's log.
func (k *RealKafka) LogTail(i, lines int) string {
	f, err := os.Open(filepath.Join(k.nodes[i].dir, "kafka.log"))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var ring []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		ring = append(ring, sc.Text())
		if len(ring) > lines {
			ring = ring[1:]
		}
	}
	return strings.Join(ring, "\n")
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// CopyLogs writes every node's log to w, for a failed test.
func (k *RealKafka) CopyLogs(w io.Writer) {
	for i, n := range k.nodes {
		fmt.Fprintf(w, "==== kafka node %d (index %d) ====\n", n.id, i)
		f, err := os.Open(filepath.Join(n.dir, "kafka.log"))
		if err != nil {
			fmt.Fprintln(w, err)
			continue
		}
		_, _ = io.Copy(w, f)
		f.Close()
	}
}

// Leader returns the index of the node leading topic's partition, with the
// partition's in-sync replicas (node IDs), from a fresh metadata request.
func (k *RealKafka) Leader(ctx context.Context, topic string, partition int32) (int, []int32, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.ListenAddrs()...), kgo.DialTimeout(time.Second))
	if err != nil {
		return -1, nil, err
	}
	defer cl.Close()
	m, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return -1, nil, err
	}
	td, ok := m.Topics[topic]
	if !ok || td.Err != nil {
		return -1, nil, fmt.Errorf("topic %s: not in the metadata (%v)", topic, td.Err)
	}
	p, ok := td.Partitions[partition]
	if !ok || p.Err != nil {
		return -1, nil, fmt.Errorf("partition %s/%d: not in the metadata (%v)", topic, partition, p.Err)
	}
	return k.Index(p.Leader), p.ISR, nil
}

// secureProps are the settings of node n's SECURE listener.
func (k *RealKafka) secureProps(n *kafkaNode) map[string]string {
	sec := k.secure
	props := map[string]string{
		"listeners":                      fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d,SECURE://127.0.0.1:%d", n.port, n.ctrl, n.securePort),
		"advertised.listeners":           fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,SECURE://127.0.0.1:%d", n.port, n.securePort),
		"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SECURE:" + sec.protocol(),
	}
	if sec.SCRAM != nil {
		props["listener.name.secure.sasl.enabled.mechanisms"] = "SCRAM-SHA-256,SCRAM-SHA-512"
		for _, mech := range []string{"scram-sha-256", "scram-sha-512"} {
			props["listener.name.secure."+mech+".sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
		}
	}
	if sec.TLS {
		props["listener.name.secure.ssl.keystore.type"] = "PEM"
		props["listener.name.secure.ssl.keystore.location"] = filepath.Join(k.Dir, "keystore.pem")
	}
	if sec.ACLs {
		props["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
		props["super.users"] = "User:ANONYMOUS"
	}
	return props
}

// writeCerts writes a throwaway CA (CAFile) and, signed by it, the SECURE
// listener's key and certificate for 127.0.0.1 (keystore.pem, the PEM
// keystore Kafka reads: a PKCS #8 key, then the certificate).
func (k *RealKafka) writeCerts() error {
	ca, caCert, err := newCA()
	if err != nil {
		return err
	}
	leaf, err := newServerCert(2, ca, caCert)
	if err != nil {
		return err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(leaf.key)
	if err != nil {
		return err
	}
	k.CAFile = filepath.Join(k.Dir, "ca.crt")
	if err := os.WriteFile(k.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}), 0o644); err != nil {
		return err
	}
	keystore := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.der})...)
	return os.WriteFile(filepath.Join(k.Dir, "keystore.pem"), keystore, 0o600)
}

// PIDs returns the process id of every running node, for measuring the
// brokers' CPU time.
func (k *RealKafka) PIDs() []int {
	var pids []int
	for _, n := range k.nodes {
		n.mu.Lock()
		if n.cmd != nil && n.cmd.Process != nil {
			pids = append(pids, n.cmd.Process.Pid)
		}
		n.mu.Unlock()
	}
	return pids
}
