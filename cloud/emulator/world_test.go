package emulator

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadWorld(t *testing.T) {
	dir := t.TempDir()
	js, err := json.Marshal(DefaultWorld())
	must(t, err)
	jsPath := filepath.Join(dir, "world.json")
	must(t, os.WriteFile(jsPath, js, 0o644))
	w, err := LoadWorld(jsPath)
	must(t, err)
	if w.Instances[0].ID != DefaultWorld().Instances[0].ID || len(w.InstanceTypes) != len(DefaultWorld().InstanceTypes) {
		t.Errorf("JSON round trip: %+v", w)
	}

	yamlPath := filepath.Join(dir, "world.yaml")
	must(t, os.WriteFile(yamlPath, []byte(`
regionId: cn-beijing
zoneIds: [cn-beijing-a]
vpc: {id: vpc-1, cidr: 198.18.0.0/16}
vswitches:
- {id: vsw-1, zoneId: cn-beijing-a, cidr: 198.18.1.0/24, available: 5}
instanceTypes:
- {id: t1, eniQuantity: 2, eniPrivateIpAddressQuantity: 3}
instances:
- {id: i-1, instanceType: t1, zoneId: cn-beijing-a, vswitchId: vsw-1, primaryIp: 198.18.1.10}
accessKeys: [{id: ak, secret: sk}]
securityGroupId: sg-1
`), 0o644))
	w, err = LoadWorld(yamlPath)
	must(t, err)
	e, err := New(w)
	must(t, err)
	defer e.Close()
	d := e.Dump()
	if d.Instances[0].PrimaryIP != "198.18.1.10" || d.VSwitches[0].Available != 5 || d.Instances[0].Status != "Running" {
		t.Errorf("YAML world: %+v", d)
	}
}

func TestWorldErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		edit func(w *World)
		want string
	}{
		{func(w *World) { w.RegionID = "" }, "regionId"},
		{func(w *World) { w.VPC.CIDR = "198.18.0.1/15" }, "vpc.cidr"},
		{func(w *World) { w.VSwitches[1].CIDR = "198.18.64.0/24" }, "vswitches[1].cidr"},
		{func(w *World) { w.VSwitches[0].CIDR = "10.0.0.0/24" }, "vswitches[0].cidr"},
		{func(w *World) { w.VSwitches[0].ZoneID = "cn-hangzhou-z" }, "vswitches[0].zoneId"},
		{func(w *World) { w.InstanceTypes[0].ENIQuantity = 0 }, "instanceTypes[0].eniQuantity"},
		{func(w *World) { w.Instances[0].InstanceType = "ecs.nope" }, "instances[0].instanceType"},
		{func(w *World) { w.Instances[0].VSwitchID = DefaultWorld().VSwitches[1].ID }, "instances[0].zoneId"},
		{func(w *World) { w.Instances[0].PrimaryIP = "198.18.64.1" }, "instances[0].primaryIp"},
		{func(w *World) { w.Instances[0].Status = "Sleeping" }, "instances[0].status"},
		{func(w *World) { w.AccessKeys = nil }, "accessKeys"},
		{func(w *World) { w.AccessKeys[0].ID = "STS.x" }, "accessKeys[0].id"},
	} {
		w := DefaultWorld()
		tc.edit(w)
		_, err := New(w)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	path := filepath.Join(t.TempDir(), "bad.yaml")
	must(t, os.WriteFile(path, []byte("regionId: x\nvswitchez: []\n"), 0o644))
	if _, err := LoadWorld(path); err == nil || !strings.Contains(err.Error(), "vswitchez") {
		t.Errorf("unknown field: %v", err)
	}
}

func TestPool(t *testing.T) {
	p := newPool(netip.MustParsePrefix("198.18.1.0/29")) // .0 network, .1 gateway, .7 broadcast
	if p.available() != 5 {
		t.Fatalf("a /29 has 5 usable addresses, got %d", p.available())
	}
	got, ok := p.alloc("a", 5)
	if !ok || got[0].String() != "198.18.1.2" || got[4].String() != "198.18.1.6" {
		t.Fatalf("alloc 5: %v %v", got, ok)
	}
	if _, ok := p.alloc("a", 1); ok {
		t.Fatal("alloc from a full pool succeeded")
	}
	p.release(got[1])
	again, ok := p.alloc("b", 1)
	if !ok || again[0] != got[1] {
		t.Errorf("after release: got %v %v, want %s", again, ok, got[1])
	}
	p.release(got[0], got[2])
	p.setAvailable(1)
	if p.available() != 1 {
		t.Errorf("setAvailable(1): %d", p.available())
	}
	if _, _, ok := p.take("c", []netip.Addr{got[0], got[2]}); ok {
		t.Error("took 2 addresses with 1 available")
	}
	if bad, taken, ok := p.take("c", []netip.Addr{got[3]}); ok || !taken || bad != got[3] {
		t.Errorf("took an address in use: %v %v %v", bad, taken, ok)
	}
	p.setAvailable(100)
	if p.available() != 2 {
		t.Errorf("setAvailable is clamped to the free addresses: %d", p.available())
	}
}
