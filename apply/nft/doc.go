// Package nft converges the one nftables table this project owns, table inet
// terway (spec.NFTable), in a network namespace: observe the table, diff it
// against the document, print the plan, apply it in ONE atomic transaction
// (a large recreated set is filled beforehand, in short transactions, under
// a name no rule uses: stage.go).
//
// The API is Reconciler: Plan / PlanFull return []op.Op (one line per
// changed table, set, map, element or chain, and a last op standing for the
// transaction); executing any op of a plan commits the whole plan once.
// Sync plans and executes in one call. See Reconciler for partial and full
// syncs, which follow kube-proxy's nftables mode: partial syncs diff against
// an in-memory record of what was last written, full syncs re-read the
// kernel, and any failure makes the next sync full.
//
// Ownership (DESIGN.md §4): every request names table inet terway. Set and
// rule dumps are filtered by the kernel; the chain dump is not (it walks
// every table of the family), so chains are read one by one by name and the
// table's use count tells whether one escaped us. No other table is ever
// listed, parsed, flushed or written.
//
// The pipeline, one file each:
//
//	model.go     the comparable form of a table, and the document canonicalised into it
//	reuse.go     reuse of the last canonical sets and chains, as far as they did not change
//	values.go    key values per nft type: parse, print as nft prints, wire bytes
//	compile.go   IR rule → google/nftables expressions (nft's own bytecode)
//	encode.go    transaction messages: table, chains, sets, chunked elements
//	decode.go    kernel dumps → sets, elements, chains, rule expressions
//	decompile.go expressions → IR rule, recognising only what we write
//	observe.go   read our table (and only ours) from the kernel
//	diff.go      have vs want → plan lines and phase-ordered messages
//	replace.go   when a large interval set is recreated instead of edited
//	stage.go     a large recreated set filled outside the transaction, in short ones
//	scoped.go    a CNI plan's part of the table: its pods' objects and elements
//	reconciler.go records, partial/full syncs, staleness, commit
//	recordindex.go a record's address indexes for scoped plans
//	checkahead.go the periodic full sync's kernel read, done before a caller's lock
//	verify.go    reading back what a transaction wrote
//	wire.go      the NETLINK_NETFILTER socket: dumps, gets, the batch
//	connpool.go  a namespace's sockets, kept open between syncs
//
// Expressions are google/nftables expr values and use its marshalling; the
// messages around them are our own (see wire.go for why): nftables.Conn
// v0.3.0 cannot carry chain comments, cannot say which message of a batch
// failed, and breaks at scale unless its callers size buffers and chunk
// element lists (measured on the project machine: EMSGSIZE for a batch of
// 1,000+ rules at default buffers; 1,808 of 10,000 elements installed when
// sent in one list, as the list's 16-bit attribute length wraps). Here element lists are chunked
// (≤ 500 elements, ≤ 48 KiB per message), the socket buffers are sized to
// the batch, and after every commit the sets and chains it wrote are read
// back and compared; a difference is an error naming the set or chain.
package nft
