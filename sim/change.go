package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// Apply creates or changes the objects in the files as kubectl apply would:
// each object replaces its previous version in the agent's inputs; a new Pod
// on the sim's node is attached (namespace, CNI ADD, server). A Pod that
// already runs keeps its namespace and address: labels and annotations
// change live, as on a real node.
func Apply(ctx context.Context, name string, out io.Writer, paths ...string) error {
	st, list, unlock, err := open(name, paths...)
	if err != nil {
		return err
	}
	defer unlock()
	var fresh []*corev1.Pod
	for _, o := range list {
		if pod, ok := o.obj.(*corev1.Pod); ok {
			if pod.Spec.NodeName == "" {
				pod.Spec.NodeName = st.Node
			}
			if isLocal(pod, st.Node) && st.Pod(o.namespace+"/"+o.name) == nil {
				fresh = append(fresh, pod)
			}
		}
		if err := writeObject(st.inputs(), o); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s configured\n", o)
	}
	pods, attachErr := st.attachAll(ctx, fresh, 4)
	st.Pods = append(st.Pods, pods...)
	st.sortPods()
	if err := st.save(); err != nil {
		return err
	}
	for _, p := range pods {
		fmt.Fprintf(out, "pod %s ready: %s\n", p.Key(), p.IP)
	}
	return attachErr
}

// Delete removes the objects named in the files, as kubectl delete would;
// a deleted local Pod is detached (CNI DEL, server ended, namespace gone).
// Objects that do not exist are skipped.
func Delete(ctx context.Context, name string, out io.Writer, paths ...string) error {
	st, list, unlock, err := open(name, paths...)
	if err != nil {
		return err
	}
	defer unlock()
	var errs []error
	for _, o := range list {
		existed, err := removeObject(st.inputs(), o)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if o.kind == "Pod" {
			if p := st.Pod(o.namespace + "/" + o.name); p != nil {
				if err := st.detach(ctx, p); err != nil {
					errs = append(errs, err)
					continue
				}
				st.removePod(p)
				existed = true
			}
		}
		if existed {
			fmt.Fprintf(out, "%s deleted\n", o)
		} else {
			fmt.Fprintf(out, "%s not found\n", o)
		}
	}
	if err := st.save(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// open locks the running sim and reads the objects in the files.
func open(name string, paths ...string) (*State, []object, func(), error) {
	if _, err := Load(name); err != nil {
		return nil, nil, nil, err
	}
	_, list, err := readObjects(paths...)
	if err != nil {
		return nil, nil, nil, err
	}
	unlock, err := lock(Dir(name))
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := Load(name) // again, under the lock
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return st, list, unlock, nil
}

func (st *State) removePod(p *Pod) {
	for i, q := range st.Pods {
		if q == p {
			st.Pods = append(st.Pods[:i], st.Pods[i+1:]...)
			return
		}
	}
}

func (st *State) sortPods() {
	sort.Slice(st.Pods, func(i, j int) bool { return st.Pods[i].Key() < st.Pods[j].Key() })
}
