package sim_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/internal/devicemanager"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/sim"
)

// VPC mode with cloud configuration: the real terwayd and terway on a
// simulated node, the real SDK against the emulator, and a kubelet
// stand-in on the device plugin socket. The node advertises the instance
// type's ENI quota less the primary ENI (ecs.emu.xlarge: 4 - 1 = 3); a pod
// requesting aliyun/eni gets a whole ENI as eth0 with the ENI's primary
// IP, while a plain pod keeps its podCIDR address and no shared ENI is
// ever made; DEL gives the ENI back to the cloud.
func TestVPCExclusiveENI(t *testing.T) {
	nstest.RequireRoot(t)
	dpDir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dpDir)
	st := upCloud(t, "vpcx", `apiVersion: v1
kind: Node
metadata: {name: vpc-node}
spec: {podCIDR: 198.18.4.0/24}
status: {addresses: [{type: InternalIP, address: 198.19.0.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: own}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}], resources: {limits: {aliyun/eni: "1"}}}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: plain}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]
`, sim.Options{Mode: "vpc", Cloud: true, DevicePluginDir: dpDir})

	k.Registration(t)
	k.ListOf(t, "3 healthy devices (4 ENIs less the primary)", devicemanager.Count(3, pluginapi.Healthy))

	d := dump(t, st)
	mine := ours(d)
	if len(mine) != 1 || mine[0].Tags[eni.TagExclusive] != "true" || mine[0].Status != "InUse" {
		t.Fatalf("ENIs of ours after up: %+v, want one exclusive ENI, InUse", mine)
	}
	x := mine[0]
	own, plain := st.Pod("app/own"), st.Pod("app/plain")
	if own.IP != x.PrimaryIP {
		t.Fatalf("pod app/own has IP %s, want ENI %s's primary IP %s", own.IP, x.ID, x.PrimaryIP)
	}
	if !netip.MustParsePrefix("198.18.4.0/24").Contains(netip.MustParseAddr(plain.IP)) {
		t.Fatalf("pod app/plain has IP %s, want one of the podCIDR 198.18.4.0/24", plain.IP)
	}

	// Read back in the pod: eth0 is the ENI (its MAC) with its primary IP
	// in the vswitch's prefix, and the default route leads to the vswitch
	// gateway over it.
	var links []struct {
		Name     string `json:"ifname"`
		Address  string `json:"address"`
		AddrInfo []struct {
			Family, Local string
			Prefixlen     int
		} `json:"addr_info"`
	}
	out := nstest.Run(t, own.Netns, "ip", "-j", "addr", "show", "dev", "eth0")
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j addr show dev eth0 in app/own: %v: %s", err, out)
	}
	if !strings.EqualFold(links[0].Address, x.MAC) {
		t.Fatalf("app/own's eth0 has MAC %s, want ENI %s's %s", links[0].Address, x.ID, x.MAC)
	}
	var got []string
	for _, a := range links[0].AddrInfo {
		if a.Family == "inet" {
			got = append(got, a.Local+"/"+strconv.Itoa(a.Prefixlen))
		}
	}
	if len(got) != 1 || got[0] != x.PrimaryIP+"/20" {
		t.Fatalf("app/own's eth0 addresses %v, want [%s/20] (the ENI's primary IP in vswitch 198.18.64.0/20)", got, x.PrimaryIP)
	}
	var routes []struct{ Dst, Gateway, Dev string }
	out = nstest.Run(t, own.Netns, "ip", "-j", "route", "show", "default")
	if err := json.Unmarshal([]byte(out), &routes); err != nil || len(routes) != 1 || routes[0].Gateway != "198.18.64.1" || routes[0].Dev != "eth0" {
		t.Fatalf("app/own's default route: %v: %s, want via 198.18.64.1 dev eth0", err, out)
	}
	// The vpc reaches the pod straight on its ENI.
	if !traffic.Probe(st.VPCNetns, "tcp", own.IP+":80", 2*time.Second) {
		t.Fatal("the vpc cannot reach the exclusive-ENI pod")
	}

	// terwayd killed and restarted: the ENI stays the pod's (the store's
	// holding is restored before anything is released), nothing to redo.
	agent, err := st.Agent()
	if err != nil {
		t.Fatal(err)
	}
	kill(t, agent.PID)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := st.WaitAgentRestarted(ctx, agent.PID, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, plan, err := st.AgentGet(ctx, "/plan")
		if err == nil && code == 200 && strings.TrimSpace(plan) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the restart, /plan: %d %v\n%s", code, err, plan)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if e, ok := dump(t, st).ENI(x.ID); !ok || e.Status != "InUse" {
		t.Fatalf("after the restart, ENI %s is %+v (found %v), want InUse", x.ID, e, ok)
	}
	if out := nstest.Run(t, own.Netns, "ip", "-o", "link", "show", "dev", "eth0"); !strings.Contains(out, x.MAC) {
		t.Fatalf("after the restart, app/own's eth0 is not ENI %s: %s", x.MAC, out)
	}

	// DEL moves the ENI back to the node, and the cloud gets it back:
	// detached and deleted, nothing of ours left.
	var log strings.Builder
	f := filepath.Join(t.TempDir(), "own.yaml")
	os.WriteFile(f, []byte("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: own}\n"), 0o600)
	if err := sim.Delete(context.Background(), st.Name, &log, f); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		d = dump(t, st)
		if len(ours(d)) == 0 && len(instanceENIs(d)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after app/own's DEL: ENIs of ours %+v, attached to the instance %v", ours(d), instanceENIs(d))
		}
		time.Sleep(300 * time.Millisecond)
	}
	// The plain pod kept its address and network throughout.
	if !traffic.Probe(st.NodeNetns, "tcp", plain.IP+":80", 2*time.Second) {
		t.Fatal("the node cannot reach app/plain after app/own's DEL")
	}
	t.Logf("API calls: %v", d.Calls)
}

// instanceENIs lists the ENIs attached to the sim's instance.
func instanceENIs(d *emulator.Dump) []string {
	if len(d.Instances) == 0 {
		return nil
	}
	return d.Instances[0].ENIs
}

// ENI multi-IP mode with one of the 3 secondary ENIs kept for multi-IP
// pods (reservedENIsForMultiIP: 1): the node advertises 2 aliyun/eni;
// multi-IP pods fill the one reserved ENI (10 IPs) and the 11th is refused
// with an error naming the pod and the reservation, rather than taking a
// slot promised to exclusive pods; 2 exclusive pods (the advertised count)
// get their ENIs, and a 3rd is refused naming the pod, aliyun/eni and why.
func TestENIReservationHonoured(t *testing.T) {
	nstest.RequireRoot(t)
	dpDir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dpDir)
	one := 1
	st := upCloud(t, "resv", eniCluster(10, 0), sim.Options{Mode: "eni-multi-ip", ReservedENIsForMultiIP: &one, DevicePluginDir: dpDir})
	k.Registration(t)
	k.ListOf(t, "2 healthy devices (4 ENIs less the primary and the one reserved)", devicemanager.Count(2, pluginapi.Healthy))
	d := dump(t, st)
	if enis := checkPodsOnENIs(t, st, d); len(ours(d)) != 1 || len(enis) != 10 {
		t.Fatalf("10 multi-IP pods on %d ENIs of ours, want the 1 reserved", len(ours(d)))
	}

	apply := func(docs ...string) error {
		f := filepath.Join(t.TempDir(), "pods.yaml")
		os.WriteFile(f, []byte(strings.Join(docs, "---\n")), 0o600)
		var out strings.Builder
		return sim.Apply(context.Background(), st.Name, &out, f)
	}
	pod := func(name string, exclusive bool) string {
		limits := ""
		if exclusive {
			limits = `, resources: {limits: {aliyun/eni: "1"}}`
		}
		return "apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: " + name + "}\nspec:\n  containers: [{name: c, image: i, ports: [{containerPort: 80}]" + limits + "}]\n"
	}
	err := apply(pod("p10", false))
	if err == nil || !strings.Contains(err.Error(), "app/p10") || !strings.Contains(err.Error(), "reservedENIsForMultiIP 1") {
		t.Fatalf("11th multi-IP pod: %v, want an error naming app/p10 and reservedENIsForMultiIP", err)
	}
	t.Logf("11th multi-IP pod: %v", err)
	if err := apply(pod("x1", true), pod("x2", true)); err != nil {
		t.Fatalf("2 exclusive pods (the advertised count): %v", err)
	}
	err = apply(pod("x3", true))
	for _, want := range []string{"app/x3", "aliyun/eni", "1 kept for multi-IP pods (reservedENIsForMultiIP)", "2 are for exclusive ENIs and 2 of them are taken"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("3rd exclusive pod: %v, want an error saying %q", err, want)
		}
	}
	t.Logf("3rd exclusive pod: %v", err)
	st = reload(t, st)
	d = dump(t, st)
	exclusive := 0
	for _, e := range ours(d) {
		if e.Tags[eni.TagExclusive] == "true" {
			exclusive++
		}
	}
	if len(ours(d)) != 3 || exclusive != 2 {
		t.Fatalf("ENIs of ours: %d (%d exclusive), want 1 shared and 2 exclusive: %+v", len(ours(d)), exclusive, ours(d))
	}
}
