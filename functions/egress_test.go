package functions

import (
	"errors"
	"net/netip"
	"testing"
)

func TestEgressPolicy(t *testing.T) {
	def, err := NewEgressPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := NewEgressPolicy([]string{"10.0.0.0/8"}, []string{"169.254.10.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		policy EgressPolicy
		addr   string
		want   bool
	}{
		{"AWS/GCP/Azure metadata", def, "169.254.169.254", false},
		{"metadata as an IPv4-mapped IPv6 address", def, "::ffff:169.254.169.254", false},
		{"AWS metadata over IPv6", def, "fd00:ec2::254", false},
		{"Alibaba metadata", def, "100.100.100.200", false},
		{"IPv6 link-local", def, "fe80::1", false},
		{"the unspecified address", def, "0.0.0.0", false},
		{"a pod", def, "10.244.1.7", true},
		{"loopback (the lab, a sidecar)", def, "127.0.0.1", true},
		{"a public address", def, "203.0.113.9", true},
		{"an added deny", allowed, "10.1.2.3", false},
		{"an allowed link-local range", allowed, "169.254.10.5", true},
		{"metadata stays denied outside the allowed range", allowed, "169.254.169.254", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.policy.Allows(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Allows(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
	if err := def.Control("tcp", "169.254.169.254:80", nil); !errors.Is(err, ErrEgressDenied) || !errors.Is(err, ErrRejected) {
		t.Errorf("Control(metadata): got %v, want ErrEgressDenied, a rejection", err)
	}
	if err := def.Control("tcp", "10.0.0.1:80", nil); err != nil {
		t.Errorf("Control(pod): got %v, want nil", err)
	}
	if _, err := NewEgressPolicy([]string{"not-a-cidr"}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad rule: got %v, want ErrInvalid", err)
	}
}
