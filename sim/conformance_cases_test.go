package sim_test

import "fmt"

// conformanceCases lists one case per NetworkPolicy feature. ip maps
// "ns/pod" to the pod's address, for ipBlock cases (addresses are handed
// out at ADD time); the expected matrices never depend on it.
func conformanceCases(ip map[string]string) []policyCase {
	return []policyCase{
		{name: "deny-all-ingress-then-allow-all", steps: []step{{
			what:  "default deny ingress in x",
			apply: policy("x", "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  X  X  .  .  .  .  .  .
x/b   X  .  X  .  .  .  .  .  .
x/c   X  X  .  .  .  .  .  .  .
y/a   X  X  X  .  .  .  .  .  .
y/b   X  X  X  .  .  .  .  .  .
y/c   X  X  X  .  .  .  .  .  .
z/a   X  X  X  .  .  .  .  .  .
z/b   X  X  X  .  .  .  .  .  .
z/c   X  X  X  .  .  .  .  .  .
`},
		}, {
			what:   "a second policy allowing all ingress in x: the union allows everything",
			apply:  policy("x", "allow-ingress", "  podSelector: {}\n  ingress: [{}]"),
			expect: expect{"all": allReachable},
		}}},

		{name: "deny-all-egress-then-allow-all", steps: []step{{
			what:  "default deny egress in x",
			apply: policy("x", "deny-egress", "  podSelector: {}\n  policyTypes: [Egress]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  X  X  X  X  X  X  X  X
x/b   X  .  X  X  X  X  X  X  X
x/c   X  X  .  X  X  X  X  X  X
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}, {
			what:   "allow all egress in x",
			apply:  policy("x", "allow-egress", "  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{}]"),
			expect: expect{"all": allReachable},
		}}},

		{name: "pod-selector-match-labels", steps: []step{{
			what:  "x/a accepts only pod b of its namespace",
			apply: policy("x", "a-from-b", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "match-expressions-and-policy-updates", steps: []step{{
			what: "In: pods b and c of every namespace",
			apply: policy("x", "a-expr", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}, {
			what: "the same policy changed to NotIn [b]",
			apply: policy("x", "a-expr", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [b]}]}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}, {
			what: "DoesNotExist pod: every pod has the label, so nobody",
			apply: policy("x", "a-expr", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}}]}]"),
			expect: expect{"all": xaIsolated},
		}, {
			what: "Exists pod: everybody",
			apply: policy("x", "a-expr", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchExpressions: [{key: pod, operator: Exists}]}}]}]"),
			expect: expect{"all": allReachable},
		}}},

		{name: "namespace-selector", steps: []step{{
			what:  "x/a accepts namespace y",
			apply: policy("x", "a-from-y", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "namespace-and-pod-selector-in-one-peer", steps: []step{{
			what: "x/a accepts pod b of namespace y only (AND)",
			apply: policy("x", "a-from-yb", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "several-peers-and-rules", steps: []step{{
			what: "x/a accepts namespace y OR pod c of its namespace (two peers)",
			apply: policy("x", "a-or", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: c}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}, {
			what: "two rules: namespace y on any port, pod c on TCP 81 only",
			apply: policy("x", "a-or", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress:\n  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]\n  - from: [{podSelector: {matchLabels: {pod: c}}}]\n    ports: [{port: 81}]"),
			expect: expect{"tcp/81": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`, "all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "ip-block-with-except", steps: []step{{
			what: "x/a accepts the pod range except y/b's address",
			apply: policy("x", "a-ipblock", fmt.Sprintf("  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{ipBlock: {cidr: 198.18.0.0/15, except: [%s/32]}}]}]", ip["y/b"])),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}, {
			what: "changed to z/c's address alone",
			apply: policy("x", "a-ipblock", fmt.Sprintf("  podSelector: {matchLabels: {pod: a}}\n"+
				"  ingress: [{from: [{ipBlock: {cidr: %s/32}}]}]", ip["z/c"])),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "port-by-number", steps: []step{{
			what:   "x/a accepts everybody on TCP 80 only",
			apply:  policy("x", "a-80", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80}]}]"),
			expect: expect{"tcp/80": allReachable, "all": xaIsolated},
		}}},

		{name: "named-port-ingress", steps: []step{{
			what:   "x/a accepts everybody on its port serve-81-udp",
			apply:  policy("x", "a-named", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]"),
			expect: expect{"udp/81": allReachable, "all": xaIsolated},
		}}},

		{name: "named-port-egress", steps: []step{{
			what:  "x/a may send only to its peers' port serve-80-tcp",
			apply: policy("x", "a-egress-named", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: serve-80-tcp}]}]"),
			expect: expect{"tcp/80": allReachable, "all": `
     xa xb xc ya yb yc za zb zc
x/a   .  X  X  X  X  X  X  X  X
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "end-port-and-protocols", steps: []step{{
			what:   "x/a accepts TCP 80-81 (endPort)",
			apply:  policy("x", "a-range", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80, endPort: 81, protocol: TCP}]}]"),
			expect: expect{"tcp/80": allReachable, "tcp/81": allReachable, "all": xaIsolated},
		}, {
			what:   "changed to UDP 80-81",
			apply:  policy("x", "a-range", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80, endPort: 81, protocol: UDP}]}]"),
			expect: expect{"udp/80": allReachable, "udp/81": allReachable, "all": xaIsolated},
		}, {
			what:   "changed to SCTP 80: nothing over TCP or UDP",
			apply:  policy("x", "a-range", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80, protocol: SCTP}]}]"),
			expect: expect{"all": xaIsolated},
		}}},

		{name: "implicit-and-explicit-policy-types", steps: []step{{
			what: "egress rules without policyTypes: Ingress is implied too, so x/a is isolated both ways",
			apply: policy("x", "a-types", "  podSelector: {matchLabels: {pod: a}}\n"+
				"  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  X  X  .  .  .  X  X  X
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}, {
			what: "explicit policyTypes [Egress]: ingress open again",
			apply: policy("x", "a-types", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n"+
				"  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  X  X  .  .  .  X  X  X
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "union-of-policies", steps: []step{{
			what: "x/a accepts pod b of x (one policy) and namespace z (another)",
			apply: policy("x", "a-from-b", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]") +
				policy("x", "a-from-z", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}, {
			what:   "one of the two deleted",
			delete: policy("x", "a-from-z", "  podSelector: {}"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "pod-relabelled", undo: podYAML("x", "c", "c"), steps: []step{{
			what:  "x/a accepts pod b of its namespace",
			apply: policy("x", "a-from-b", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}, {
			what:  "x/c relabelled pod=b: now accepted too",
			apply: podYAML("x", "c", "b"),
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`},
		}}},

		{name: "namespace-relabelled", undo: "apiVersion: v1\nkind: Namespace\nmetadata: {name: z, labels: {ns: z, kubernetes.io/metadata.name: z}}\n", steps: []step{{
			what:   "x/a accepts namespaces labelled team=blue: none yet",
			apply:  policy("x", "a-from-blue", "  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]"),
			expect: expect{"all": xaIsolated},
		}, {
			what:  "namespace z labelled team=blue",
			apply: "apiVersion: v1\nkind: Namespace\nmetadata: {name: z, labels: {ns: z, team: blue, kubernetes.io/metadata.name: z}}\n",
			expect: expect{"all": `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`},
		}}},
	}
}
