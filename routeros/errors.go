package routeros

import (
	"errors"
	"fmt"
	"strings"
)

// The kinds of failure a caller can act on; test with errors.Is.
var (
	ErrNotFound        = errors.New("not found on the RDS")
	ErrAlreadyExists   = errors.New("already exists on the RDS")
	ErrNoSpace         = errors.New("not enough space on the RDS")
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrTransport: the RDS could not be reached or the connection broke; the command may
	// or may not have run. Retrying later is the remedy.
	ErrTransport = errors.New("RDS unreachable")
)

// Kind classifies a CommandError.
type Kind int

const (
	KindOther Kind = iota
	KindNotFound
	KindAlreadyExists
	KindNoSpace
	KindInvalidArgument
	KindTransport
)

var kindNames = [...]string{"other", "not-found", "already-exists", "no-space", "invalid-argument", "transport"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

func (k Kind) sentinel() error {
	switch k {
	case KindNotFound:
		return ErrNotFound
	case KindAlreadyExists:
		return ErrAlreadyExists
	case KindNoSpace:
		return ErrNoSpace
	case KindInvalidArgument:
		return ErrInvalidArgument
	case KindTransport:
		return ErrTransport
	}
	return nil
}

// CommandError is a command the RDS refused or could not run.
type CommandError struct {
	Op      string // the typed operation, e.g. "CreateDisk"
	Kind    Kind
	Command string // the RouterOS command line (it never carries secrets)
	Output  string // what RouterOS printed (stdout and stderr), trimmed
	Exit    int    // exit status; -1 when none was received
	Err     error  // the underlying transport error, if any
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "routeros %s: ", e.Op)
	switch {
	case e.Kind == KindTransport && e.Err != nil:
		fmt.Fprintf(&b, "%v (RDS unreachable; check the address, SSH port and network, it is retried with backoff)", e.Err)
	case e.Output != "":
		b.WriteString(firstLine(e.Output))
	case e.Exit > 0:
		fmt.Fprintf(&b, "exit status %d without output", e.Exit)
	default:
		b.WriteString(e.Kind.String())
	}
	if e.Command != "" {
		fmt.Fprintf(&b, " [command: %s]", e.Command)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) (etc.) true for a CommandError of that kind.
func (e *CommandError) Is(target error) bool {
	s := e.Kind.sentinel()
	return s != nil && s == target
}

func (e *CommandError) Unwrap() error { return e.Err }

// errorPatterns are the RouterOS error texts, in the order they are tried, lower-case. A line
// of output that starts with one of them (after `failure: ` where noted) is an error,
// whichever stream it came on and whatever the exit status.
var errorPatterns = []struct {
	prefix string
	kind   Kind
}{
	{"no such item", KindNotFound},
	{"bad command name", KindInvalidArgument},
	{"syntax error", KindInvalidArgument},
	{"expected end of command", KindInvalidArgument},
	{"expected command name", KindInvalidArgument},
	{"invalid value for argument", KindInvalidArgument},
	{"input does not match any value of", KindInvalidArgument},
	{"value of ", KindInvalidArgument}, // "value of size out of range …"
	{"ambiguous value of", KindInvalidArgument},
	{"missing value", KindInvalidArgument},
	{"not enough space", KindNoSpace},
	{"no space left", KindNoSpace},
	{"failure:", KindOther}, // refined by failureKinds
}

// failureKinds refine `failure: …` by what the text says.
var failureKinds = []struct {
	contains string
	kind     Kind
}{
	{"already exists", KindAlreadyExists},
	{"already have", KindAlreadyExists},
	{"not enough space", KindNoSpace},
	{"no space", KindNoSpace},
	{"disk full", KindNoSpace},
	{"disk is full", KindNoSpace},
	{"no such", KindNotFound},
	{"not found", KindNotFound},
	{"does not exist", KindNotFound},
	{"invalid", KindInvalidArgument},
}

// classifyOutput finds a RouterOS error in a command's output. Listings never start a line
// with these words (items start with an index, comments with `;;;`), so a match is an error.
func classifyOutput(out string) (Kind, string, bool) {
	for len(out) > 0 {
		line := out
		if i := strings.IndexByte(out, '\n'); i >= 0 {
			line, out = out[:i], out[i+1:]
		} else {
			out = ""
		}
		l := strings.ToLower(strings.TrimSpace(line))
		for _, p := range errorPatterns {
			if !strings.HasPrefix(l, p.prefix) {
				continue
			}
			k := p.kind
			if p.prefix == "failure:" {
				for _, f := range failureKinds {
					if strings.Contains(l, f.contains) {
						k = f.kind
						break
					}
				}
			}
			return k, strings.TrimSpace(line), true
		}
	}
	return KindOther, "", false
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
