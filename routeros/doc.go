// Package routeros is rds-csi's control plane: typed operations on a MikroTik ROSE Data
// Server (RDS) over SSH with the RouterOS CLI, and a parser for what RouterOS prints. It
// knows nothing of CSI; nothing else in the driver speaks RouterOS.
//
// The commands are exactly those of docs/routeros-cli.md (the contract with the simulator
// in routeros/sim); the hardware facts behind them are in reference/routeros-rds.md.
//
// # Connection
//
// A Client keeps one SSH connection per RDS (key auth, host key checked against known_hosts
// unless InsecureSkipHostKey is set), dialled on first use and again after it breaks; after a
// failed dial, calls fail fast with ErrTransport until a doubling backoff has passed. Each
// command runs on its own exec session; at most Config.MaxSessions sessions are open at once
// (an RDS stalled with 19), further callers wait in FIFO order. A slot is held until the RDS
// has closed the session, also for a caller that gave up, so the bound holds on the RDS's
// side too. Sessions the RDS refuses (its own limit) are retried until the caller's context
// ends.
//
// Every call runs under the caller's context. When it ends, the call returns at once with
// an error wrapping ctx.Err(); the session is closed, and if the RDS does not close it within
// a few seconds the connection is taken for wedged and replaced. Liveness (Ping) opens and
// closes a session: RouterOS does not answer keepalive@openssh.com.
//
// # Errors
//
// RouterOS errors are recognised by their text, on stdout or stderr and whatever the exit
// status, and classified; test with errors.Is against ErrNotFound, ErrAlreadyExists,
// ErrNoSpace, ErrInvalidArgument (also returned, before anything is sent, for a value that
// fails validation) and ErrTransport (connection failed or broke: the command may or may not
// have run). Command failures are *CommandError values carrying the kind, the command line
// (which never holds secrets) and RouterOS's output.
//
// # Values
//
// Every value sent is first checked against an allow-list (ValidateSlot, ValidatePath,
// ValidateNQN) and then quoted with RouterOS escaping, so nothing from a request can reach
// `[ ]`, `$`, `;` or a newline. Sizes are exact: rounded up to a whole MiB and sent in the
// largest binary unit dividing them (FormatSize). What the RDS reports is read back after
// every change.
//
// # Parsing
//
// ParseDetail reads any `print detail` listing, however RouterOS wrapped it; its doc comment
// and joinSeparator's state the rule for reading a line break back and the one ambiguity
// left (an unquoted value cut exactly before text shaped like `key=`, which RouterOS does
// not print). Values come back unquoted, unescaped and with digit groups joined.
package routeros
