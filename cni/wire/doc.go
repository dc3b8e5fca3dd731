// Package wire is the contract between the terway CNI plugin (a short-lived
// binary the container runtime executes) and the terway agent (the node's
// long-running reconciler). The plugin never touches the network itself: it
// turns one CNI invocation into one request to the agent and prints the answer.
//
// # Transport
//
// HTTP/1.1 with JSON bodies over a unix socket, by default
// DefaultSocketPath, whose directory is mode 0700 so only root reaches the
// agent. One request per connection (the plugin runs once per command), so
// there is no connection state to get wrong. It can be driven by hand:
//
//	curl --unix-socket /var/run/terway/terway.sock \
//	  -d '{"cniVersion":"1.1.0","netconf":{"cniVersion":"1.1.0","name":"terway","type":"terway"}}' \
//	  http://terway/v1/cni/status
//
// # Endpoints
//
//	POST /v1/cni/add     body Request  →  Response{result} or Response{error}
//	POST /v1/cni/del     body Request  →  Response{} or Response{error}
//	POST /v1/cni/check   body Request  →  Response{} or Response{error}
//	POST /v1/cni/gc      body Request  →  Response{} or Response{error}
//	POST /v1/cni/status  body Request  →  Response{} or Response{error}
//
// The command is named both by the path (so logs and metrics can tell the
// calls apart without reading bodies) and by Request.Command; when both are
// set they must agree. The "/v1" prefix versions the protocol: the plugin on
// a node and the agent are upgraded at different moments (the DaemonSet
// copies the binary when its pod starts), so an incompatible change gets a
// new prefix and both are served for a while.
//
// # Answers
//
// The body of every answer the agent produces is a Response: a CNI result for
// a successful ADD, an empty object for any other success, or a CNI error
// (code, msg, details) exactly as the runtime should see it. The HTTP status
// mirrors the outcome for people and proxies (200 success, 400 bad input,
// 404 unknown container, 503 try later / not available, 500 anything else);
// the client trusts the body, not the status.
//
// # Versions
//
// The agent does every conversion between CNI spec versions, so that the
// plugin, started once per call, needs neither the CNI library nor its
// start-up cost (this package does not import it). An ADD answer carries
// the result twice: Result in CNI 1.1.0 (ResultVersion) and Output in the
// version of the request, which the plugin prints. A request carries the
// prevResult of CHECK and DEL as the runtime wrote it; the agent's decoder
// (cni/server) converts it to 1.1.0 before a handler sees it, so handlers
// deal with one result type only.
package wire
