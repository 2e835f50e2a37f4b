package functions

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// ErrEgressDenied: a user object (a webhook URL, a metricsServer, a MetricTemplate or
// AlertProvider address, a registry host) named an address Siskin may not call. It wraps
// ErrRejected: retrying cannot help.
var ErrEgressDenied = fmt.Errorf("%w: egress denied", ErrRejected)

// DefaultEgressDenied are the addresses Siskin never calls unless allowed: link-local ranges,
// where every cloud's instance metadata service answers (with credentials), and the metadata
// addresses outside them. Anyone who may write a Canary could otherwise make Siskin fetch them
// and read the answers back in Events.
var DefaultEgressDenied = []string{
	"169.254.0.0/16",     // IPv4 link-local: AWS, GCP, Azure, OpenStack metadata at .169.254
	"fe80::/10",          // IPv6 link-local
	"fd00:ec2::254/128",  // AWS metadata over IPv6
	"100.100.100.200/32", // Alibaba Cloud metadata
	"0.0.0.0/8",          // "this host"
	"::/128",             // the unspecified address
	"192.0.0.192/32",     // Oracle Cloud metadata (legacy)
}

// EgressPolicy decides which addresses Siskin's outbound HTTP may reach: an allowed prefix
// wins over a denied one. It is checked when a connection is dialled, after DNS, so a name
// that resolves to a denied address is refused too.
type EgressPolicy struct {
	deny, allow []netip.Prefix
}

// NewEgressPolicy denies DefaultEgressDenied plus deny, except allow (CIDRs).
func NewEgressPolicy(deny, allow []string) (EgressPolicy, error) {
	var p EgressPolicy
	var errs []error
	parse := func(list []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range list {
			pfx, err := netip.ParsePrefix(s)
			if err != nil {
				addr, aerr := netip.ParseAddr(s)
				if aerr != nil {
					errs = append(errs, fmt.Errorf("%w: egress rule %q is not a CIDR or an address", ErrInvalid, s))
					continue
				}
				pfx = netip.PrefixFrom(addr, addr.BitLen())
			}
			out = append(out, pfx.Masked())
		}
		return out
	}
	p.deny = parse(append(append([]string(nil), DefaultEgressDenied...), deny...))
	p.allow = parse(allow)
	return p, errors.Join(errs...)
}

// Allows reports whether addr may be called.
func (p EgressPolicy) Allows(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, a := range p.allow {
		if a.Contains(addr) {
			return true
		}
	}
	for _, d := range p.deny {
		if d.Contains(addr) {
			return false
		}
	}
	return true
}

// Control is a net.Dialer Control function that refuses denied addresses.
func (p EgressPolicy) Control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial %s: %v", ErrEgressDenied, address, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: dial %s: %v", ErrEgressDenied, address, err)
	}
	if !p.Allows(addr) {
		return fmt.Errorf("%w: %s is a link-local or metadata address (allow it with --egress-allow)", ErrEgressDenied, addr)
	}
	return nil
}
