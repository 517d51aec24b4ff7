package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Netns is a network namespace joined to this host by a veth pair: a
// PostgreSQL started in it (PostgresOptions.Netns) has its own network
// stack and is reached over a link, as from another machine, instead of
// over loopback. The link's addresses come from 198.18.0.0/15, the block
// set aside for benchmarking network devices (RFC 2544), so they never
// clash with a real network. Creating one needs root and iproute2 (ip) and
// util-linux (nsenter).
type Netns struct {
	Name     string
	HostAddr string // this host's end of the link
	PeerAddr string // the namespace's end
	hostIf   string
}

// StartNetns creates a namespace, numbered n (0-255) to keep its
// interface names and addresses apart from other namespaces'.
func StartNetns(n int) (*Netns, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("a network namespace needs ip (Debian package iproute2): %w", err)
	}
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, n)
	ns := &Netns{
		Name:     "outboxrelay" + id,
		HostAddr: fmt.Sprintf("198.18.%d.1", n),
		PeerAddr: fmt.Sprintf("198.18.%d.2", n),
		hostIf:   "obr" + id + "h",
	}
	peerIf := "obr" + id + "p"
	steps := [][]string{
		{"netns", "add", ns.Name},
		{"link", "add", ns.hostIf, "type", "veth", "peer", "name", peerIf},
		{"link", "set", peerIf, "netns", ns.Name},
		{"addr", "add", ns.HostAddr + "/30", "dev", ns.hostIf},
		{"link", "set", ns.hostIf, "up"},
		{"-n", ns.Name, "addr", "add", ns.PeerAddr + "/30", "dev", peerIf},
		{"-n", ns.Name, "link", "set", peerIf, "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			ns.Close()
			return nil, err
		}
	}
	return ns, nil
}

func ip(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Close removes the link and the namespace (stop what runs in it first).
func (n *Netns) Close() error {
	err := ip("link", "del", n.hostIf)
	if nsErr := ip("netns", "del", n.Name); err == nil {
		err = nsErr
	}
	return err
}

// command runs name with args inside the namespace, as uid and gid.
func (n *Netns) command(uid, gid uint32, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=/run/netns/" + n.Name, "-S", fmt.Sprint(uid), "-G", fmt.Sprint(gid), "--", name}, args...)
	return exec.Command("nsenter", full...)
}
