package replication

import "net"

// takeOver reads the replication socket through a pollConn.
func takeOver(c net.Conn) (net.Conn, error) { return newPollConn(c) }
