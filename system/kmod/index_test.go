package kmod

import (
	"reflect"
	"strings"
	"testing"
)

var testIndex = &Index{
	Release: "6.1.0-test",
	Modules: map[string]Module{
		"virtio":       {Path: "kernel/virtio.ko"},
		"virtio_ring":  {Path: "kernel/virtio_ring.ko"},
		"virtio_pci":   {Path: "kernel/virtio_pci.ko", Depends: []string{"virtio_ring", "virtio"}, Aliases: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}},
		"virtio_net":   {Path: "kernel/virtio_net.ko", Depends: []string{"virtio_ring", "virtio", "net_failover"}, Aliases: []string{"virtio:d00000001v*"}},
		"net_failover": {Path: "kernel/net_failover.ko", Depends: []string{"failover"}},
		"failover":     {Path: "kernel/failover.ko"},
		"crc32c_intel": {Path: "kernel/crc32c-intel.ko", Aliases: []string{"crypto-crc32c", "cpu:type:x86,ven*fam*mod*:feature:*0094*"}},
		"loop_a":       {Path: "a.ko", Depends: []string{"loop_b"}},
		"loop_b":       {Path: "b.ko", Depends: []string{"loop_a"}},
		"needs_gone":   {Path: "n.ko", Depends: []string{"gone"}},
		"uses_builtin": {Path: "u.ko", Depends: []string{"ext4"}},
		"vfat":         {Path: "vfat.ko", Pre: []string{"absent"}, Post: []string{"nls_cp437"}},
		"nls_cp437":    {Path: "nls_cp437.ko"},
	},
	Builtin: []string{"ext4", "unix"},
}

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  []string
		err   string
	}{
		{[]string{"virtio-net"}, []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net"}, ""},
		{[]string{"virtio_net", "virtio_pci"}, []string{"virtio_ring", "virtio", "failover", "net_failover", "virtio_net", "virtio_pci"}, ""},
		{[]string{"ext4"}, nil, ""},
		{[]string{"uses_builtin"}, []string{"uses_builtin"}, ""},
		{[]string{"vfat"}, []string{"vfat", "nls_cp437"}, ""},
		{[]string{"nosuch"}, nil, "module nosuch is not in the module set"},
		{[]string{"needs_gone"}, nil, "module gone (needed by needs_gone)"},
		{[]string{"loop_a"}, nil, "dependency loop"},
	} {
		got, err := testIndex.Order(tc.names...)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Order(%v) error = %v, want %q", tc.names, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Order(%v) = %v, %v; want %v", tc.names, got, err, tc.want)
		}
	}
}

func TestResolveAndMatch(t *testing.T) {
	for _, tc := range []struct {
		what string
		want []string
	}{
		{"virtio_net", []string{"virtio_net"}},
		{"virtio-net", []string{"virtio_net"}},
		{"crypto-crc32c", []string{"crc32c_intel"}},
		{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}},
		{"pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", nil},
		{"ext4", nil},
		{"fs-nosuch", nil},
	} {
		if got := testIndex.Resolve(tc.what); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Resolve(%q) = %v, want %v", tc.what, got, tc.want)
		}
	}
}

func TestBuses(t *testing.T) {
	ix := &Index{Modules: map[string]Module{"a": {Aliases: []string{"pci:v1*", "virtio:d1*"}}, "b": {Aliases: []string{"fs-x"}}}}
	if got, all := ix.Buses(nil); all || !reflect.DeepEqual(got, []string{"fs-x", "pci", "virtio"}) {
		t.Errorf("Buses = %v, %v", got, all)
	}
	if got, all := ix.Buses(func(m string) bool { return m == "a" }); all || !reflect.DeepEqual(got, []string{"fs-x"}) {
		t.Errorf("Buses with a loaded = %v, %v, want only fs-x", got, all)
	}
	// Every driver loaded: nothing to scan (not "scan every bus").
	if got, all := ix.Buses(func(string) bool { return true }); all || len(got) != 0 {
		t.Errorf("Buses with everything loaded = %v, %v, want none", got, all)
	}
	ix = &Index{Modules: map[string]Module{"button": {Aliases: []string{"acpi*:LNXPWRBN:*"}}}}
	if got, all := ix.Buses(nil); all || !reflect.DeepEqual(got, []string{"acpi*"}) {
		t.Errorf("Buses = %v, %v, want [acpi*]", got, all)
	}
	if got := ix.Match("acpi:LNXPWRBN:"); !reflect.DeepEqual(got, []string{"button"}) {
		t.Errorf("Match(acpi:LNXPWRBN:) = %v", got)
	}
	ix = &Index{Modules: map[string]Module{"a": {Aliases: []string{"*:v1*"}}}}
	if _, all := ix.Buses(nil); !all {
		t.Errorf("a wildcard bus must scan every bus")
	}
}

func TestParseModinfo(t *testing.T) {
	data := []byte("license=GPL\x00alias=virtio:d00000001v*\x00depends=virtio_ring,virtio,net-failover\x00" +
		"alias=net-pf-99\x00softdep=pre: crc32c post: nls-utf8\x00retpoline=Y\x00name=virtio_net\x00vermagic=6.1.0 SMP\x00\x00")
	got := ParseModinfo(data)
	want := Modinfo{Name: "virtio_net", Depends: []string{"virtio_ring", "virtio", "net_failover"},
		Aliases: []string{"virtio:d00000001v*", "net-pf-99"}, Pre: []string{"crc32c"}, Post: []string{"nls_utf8"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseModinfo = %+v, want %+v", got, want)
	}
	if got := ParseModinfo([]byte("depends=\x00name=x\x00")); len(got.Depends) != 0 {
		t.Errorf("empty depends= gave %v", got.Depends)
	}
}
