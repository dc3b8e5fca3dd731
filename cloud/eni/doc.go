// Package eni is the node's ENI reconciler: it keeps the secondary ENIs and
// secondary IPs of one ECS instance converged to what the node needs, through
// the Alibaba Cloud SDK (services/ecs, services/vpc), against the cloud or
// the emulator alike (the endpoint is configuration).
//
// It holds an in-memory view of the ENIs it owns (tagged at creation with
// our ownership tags and the instance id) and of which IP serves which
// owner, so that handing a pod an IP from the warm pool costs no API call.
// A pool of idle IPs is kept between MinIdle and MaxIdle; below the minimum
// it assigns IPs in batches or creates ENIs (with a ClientToken), above the
// maximum it unassigns IPs and detaches and deletes ENIs left empty. Plans
// are spec.ENINeeds, the document's eni section: Converge executes one from
// render as well as one the reconciler made itself.
//
// Failure modes it is built for: throttling and transient errors (retried
// with backoff, and a shared pause on throttling); responses lost after the
// change was made (ClientTokens on create and assign, "already done" codes
// on attach, detach, delete and unassign, and re-describing our tagged ENIs
// to find ENIs whose creation answer was lost); an exhausted vswitch
// (skipped for a while, another configured one is tried); a restart (the
// agent's persisted holdings are restored before anything is released).
//
// It never touches an ENI without our tags, nor the primary ENI, and never
// unassigns an IP that is held.
package eni
