package tcprepair

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// A Lock keeps packets of carried connections from being processed, as CRIU's "network lock":
// on the old kernel from before the dump (or it would go on acknowledging data the dump no
// longer holds, and that data would be lost without a trace), on the new one until each
// socket is rebuilt (or it would answer the peer's retransmissions with a reset). It is an
// nftables table of its own with chains at the raw priority of prerouting and output, so it
// acts before conntrack and before any rule of the appliance's.
type Lock struct {
	conn  *nftables.Conn
	table *nftables.Table
	in    *nftables.Chain
	out   *nftables.Chain
}

// Flow is one TCP connection, as this end sees it.
type Flow struct {
	Local  netip.AddrPort `json:"local"`
	Remote netip.AddrPort `json:"remote"`
}

func (f Flow) String() string { return f.Local.String() + "↔" + f.Remote.String() }

// NewLock creates the (empty) lock table, replacing one of the same name left by an earlier
// attempt. It needs the nf_tables module.
func NewLock(name string) (*Lock, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	l := &Lock{conn: c, table: &nftables.Table{Family: nftables.TableFamilyINet, Name: name}}
	// Deleting a table that is not there fails the whole batch: add it first (adding an
	// existing table is not an error), then delete, then create it anew.
	c.AddTable(l.table)
	c.DelTable(l.table)
	c.AddTable(l.table)
	drop := nftables.ChainPolicyAccept
	l.in = c.AddChain(&nftables.Chain{Name: "in", Table: l.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &drop})
	l.out = c.AddChain(&nftables.Chain{Name: "out", Table: l.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &drop})
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("nftables: create table inet %s: %w (is the nf_tables module loaded?)", name, err)
	}
	return l, nil
}

// DropFlows drops the flows' incoming packets and, when outgoing is set, their outgoing ones.
func (l *Lock) DropFlows(flows []Flow, outgoing bool) error {
	for _, f := range flows {
		l.conn.AddRule(&nftables.Rule{Table: l.table, Chain: l.in, Exprs: append(match(f.Remote, f.Local), drop())})
		if outgoing {
			l.conn.AddRule(&nftables.Rule{Table: l.table, Chain: l.out, Exprs: append(match(f.Local, f.Remote), drop())})
		}
	}
	if err := l.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: lock %d flows: %w", len(flows), err)
	}
	return nil
}

// DropSYNs drops connection requests (SYN without ACK) to the local ports: the client
// retransmits them, and the next kernel, with the service there, accepts them. Without it a
// handshake could complete in a backlog that dies with this kernel.
func (l *Lock) DropSYNs(ports []uint16) error {
	for _, p := range ports {
		syn := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		}
		l.conn.AddRule(&nftables.Rule{Table: l.table, Chain: l.in,
			Exprs: append(append(match(netip.AddrPort{}, netip.AddrPortFrom(netip.Addr{}, p)), syn...), drop())})
	}
	if err := l.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: drop SYNs to ports %v: %w", ports, err)
	}
	return nil
}

// Release deletes the lock table: the flows' packets flow again.
func (l *Lock) Release() error {
	l.conn.DelTable(l.table)
	if err := l.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", l.table.Name, err)
	}
	return nil
}

// match is "tcp from src to dst"; an invalid address or a zero port matches any.
func match(src, dst netip.AddrPort) []expr.Any {
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	ip := src.Addr()
	if !ip.IsValid() {
		ip = dst.Addr()
	}
	if ip.IsValid() {
		proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
		if !ip.Is4() {
			proto, off, n = unix.NFPROTO_IPV6, 8, 16
		}
		e = append(e, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
		for i, a := range []netip.Addr{src.Addr(), dst.Addr()} {
			if a.IsValid() {
				e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off + uint32(i)*n, Len: n},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()})
			}
		}
	}
	for i, p := range []uint16{src.Port(), dst.Port()} {
		if p != 0 {
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: uint32(i) * 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, p)})
		}
	}
	return e
}

func drop() expr.Any { return &expr.Verdict{Kind: expr.VerdictDrop} }
