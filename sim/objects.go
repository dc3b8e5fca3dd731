package sim

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/load"
)

// The agent reads its inputs from a folder of its own (Dir/inputs), one
// file per object, so that `apply` and `delete` change exactly one object
// the way kubectl would, and the user's folder is never written.

// object is one Kubernetes object to store in the inputs folder.
type object struct {
	kind, namespace, name string
	obj                   runtime.Object
}

func (o object) file() string {
	name := strings.ToLower(o.kind) + "_" + o.namespace + "_" + o.name + ".yaml"
	if o.namespace == "" {
		name = strings.ToLower(o.kind) + "_" + o.name + ".yaml"
	}
	return name
}

func (o object) String() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

// readObjects reads Kubernetes YAML from files or folders.
func readObjects(paths ...string) (*load.Objects, []object, error) {
	objs, err := load.Paths(paths...)
	if err != nil {
		return nil, nil, err
	}
	var out []object
	for _, n := range objs.Nodes {
		n.APIVersion, n.Kind = "v1", "Node"
		out = append(out, object{"Node", "", n.Name, n})
	}
	for _, n := range objs.Namespaces {
		n.APIVersion, n.Kind = "v1", "Namespace"
		out = append(out, object{"Namespace", "", n.Name, n})
	}
	for _, p := range objs.Pods {
		p.APIVersion, p.Kind = "v1", "Pod"
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		out = append(out, object{"Pod", p.Namespace, p.Name, p})
	}
	for _, np := range objs.Policies {
		np.APIVersion, np.Kind = "networking.k8s.io/v1", "NetworkPolicy"
		if np.Namespace == "" {
			np.Namespace = "default"
		}
		out = append(out, object{"NetworkPolicy", np.Namespace, np.Name, np})
	}
	return objs, out, nil
}

// writeObject stores one object in the inputs folder, atomically (the
// agent follows the folder and must never read half a file).
func writeObject(inputs string, o object) error {
	data, err := yaml.Marshal(o.obj)
	if err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	path := filepath.Join(inputs, o.file())
	tmp := filepath.Join(inputs, "."+o.file()+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("%s: %w", o, err)
	}
	return os.Rename(tmp, path)
}

// removeObject deletes one object from the inputs folder; a missing one is
// fine (delete is idempotent, as with kubectl --ignore-not-found).
func removeObject(inputs string, o object) (bool, error) {
	err := os.Remove(filepath.Join(inputs, o.file()))
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", o, err)
	}
	return true, nil
}

// podPorts lists the TCP and UDP containerPorts a pod serves. SCTP ports
// stay in the spec (policies may name them) but are not served: this
// kernel has no SCTP sockets.
func podPorts(p *corev1.Pod) (tcp, udp []int) {
	seen := map[string]bool{}
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			proto := port.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			key := fmt.Sprintf("%s/%d", proto, port.ContainerPort)
			if seen[key] {
				continue
			}
			seen[key] = true
			switch proto {
			case corev1.ProtocolTCP:
				tcp = append(tcp, int(port.ContainerPort))
			case corev1.ProtocolUDP:
				udp = append(udp, int(port.ContainerPort))
			}
		}
	}
	return tcp, udp
}

// The simulated pods are the Pods bound to the sim's node; Pods of other
// nodes stay in the inputs as policy peers only. A hostNetwork pod is a
// process of the node: a kubelet runs no CNI for it, so it stays an input
// too (it has the node's address).
func isLocal(p *corev1.Pod, node string) bool {
	return p.Spec.NodeName == node && !p.Spec.HostNetwork
}
